"""The MongoDB store: the same `Store` interface on pymongo, report bytes in GridFS.

For users who outgrow one machine: a replica set or a sharded cluster behind one
`MONGODB_URI`. pymongo is imported only here, so the embedded mode never needs it.

Documents:
    users     {_id, username, usernameKey (lower-cased, unique), passwordHash, createdAt,
               erasing (true while the account is being erased)}
    patients  {_id, ownerId, fields: {<PatientInput fields>}, firstNameKey, lastNameKey,
               reports: [Report], version, createdAt, updatedAt}
    reports.files / reports.chunks   GridFS, one file per report, _id = the report's id;
                     its `metadata.sha1` is the bytes' base64 SHA-1 (FHIR's Attachment.hash)
    patientVersions   every version of every patient: see storage/mongo/versions.py

A patient's reports are embedded in its document, so reading a patient is one
look-up. Every change to a patient — its fields replaced, a report added or removed,
the patient deleted — is a new version, claimed by an insert and then applied
(storage/mongo/versions.py): that is how two writes never lose one another, on
MongoDB and on servers that only resemble it (where a reader can, for a moment, see
the version before the newest: see the NOTE there). How an upload and a delete keep a
patient's reports and their GridFS files in step is told in storage/mongo/reports.py.

The collections and error translation are in storage/mongo/database.py, report files
in storage/mongo/reports.py, sessions and account erasure in storage/mongo/accounts.py,
the audit trail in storage/mongo/audit_log.py.

What a MongoDB-compatible server may lack, and what the store does instead (checked on
FerretDB 1.24 over PostgreSQL and over SQLite: bench/isolation.py, docs/testing.md):

- **Multi-document transactions**: none are used. Every change that spans documents is
  ordered so that a crash between its steps leaves something the next writer or the
  next start-up finishes (the versions protocol, an upload's file before its metadata,
  an erasure's account made unusable first), which is just as correct on MongoDB.
- **Isolated updates**: nothing depends on one (see storage/mongo/accounts.py).
- **TTL indexes**: where refused, the store's own hourly purge deletes what they would.
- **Index use**: the indexes made in `_create_indexes` are the ones MongoDB needs for
  every query the store runs. FerretDB 1.24 over PostgreSQL creates each as a B-tree
  but filters with JSON containment (`@>`), which a B-tree cannot answer, so there every
  find scans its collection; MongoDB uses the indexes.
"""

import re
import time

import pymongo
from bson import ObjectId

from storage.base import Store, name_keys
from storage.errors import NotFound
from storage.ids import is_object_id, new_id
from storage.mongo import backup
from storage.s3.reports import ObjectReports
from storage.mongo.accounts import MongoAccounts, as_object_id
from storage.mongo.audit_log import MongoAuditLog
from storage.mongo.database import Database
from storage.mongo.reports import MongoReports
from storage.mongo.versions import MongoVersions

# How long an unreachable server may take before a request gives up with a 503: a few
# seconds, never a hang (pymongo's default server selection wait is 30 s).
TIMEOUT_MS = 3000


class MongoStore(Store):
    """The MongoDB store. The users and patients are its own work; the rest it hands to
    the parts it holds, each named where it is called:

    - `database`: the collections, the clock, error translation (storage/mongo/database.py);
    - `accounts`: sessions, failed logins, erasure (storage/mongo/accounts.py);
    - `versions`: every change to a patient, claimed then applied (storage/mongo/versions.py);
    - `reports`: report files in GridFS (storage/mongo/reports.py);
    - `audit`: the audit trail's collections (storage/mongo/audit_log.py).
    """

    name = "mongodb"

    def __init__(self, uri: str, *, clock=time.time, objects=None):
        """`objects`: an ObjectStore (storage/s3/client.py) to keep report bytes in, or None for GridFS."""
        self.uri = uri
        # NOTE: pymongo's client is thread-safe and pools its connections: one client
        # serves every handler thread. Write concern, retryable writes and the replica
        # set come from the URI, where operators expect to set them.
        self._client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=TIMEOUT_MS,
                                           connectTimeoutMS=TIMEOUT_MS, socketTimeoutMS=2 * TIMEOUT_MS,
                                           tz_aware=True)
        self.database = Database(self._client, clock, None if objects is None else ObjectReports(objects, clock=clock))
        self.accounts = MongoAccounts(self.database, delete_patient=self.delete_patient)
        self.versions = MongoVersions(self.database)
        self.reports = MongoReports(self.database, self.versions)
        self.audit = MongoAuditLog(self.database)
        with self.database.errors_translated():
            self._create_indexes()
            self.versions.finish_versions()  # first: the housekeeping's erasures need every patient's version
            self.sweep()
            self.reports.add_missing_sha1()

    def sweep(self):
        with self.database.errors_translated():
            self.accounts.housekeeping()
            self.reports.sweep()

    def _create_indexes(self) -> None:
        # Usernames are unique ignoring case: the lower-cased copy carries the index.
        self.database.users.create_index("usernameKey", unique=True, name="users_by_username")
        self.accounts.create_indexes()
        self.audit.create_indexes()
        self.versions.create_indexes()
        # An owner's listing in id order, and the cursor's {_id: {$gt: ...}} range.
        self.database.patients.create_index([("ownerId", 1), ("_id", 1)], name="patients_by_owner")
        # The sweep's question "does any patient name this file?".
        self.database.patients.create_index("reports.id", name="patients_by_report")
        # The GridFS specification's indexes, made here because we write chunks ourselves.
        self.database.chunk_documents.create_index([("files_id", 1), ("n", 1)], unique=True,
                                                   name="files_id_1_n_1")
        self.database.file_documents.create_index([("filename", 1), ("uploadDate", 1)],
                                                  name="filename_1_uploadDate_1")

    # -- users ---------------------------------------------------------------
    def create_user(self, username, password_hash):
        user_id, now = new_id(self.database.clock), self.database.now()
        with self.database.errors_translated():
            self.database.users.insert_one({"_id": ObjectId(user_id), "username": username,
                                            "usernameKey": username.lower(), "passwordHash": password_hash,
                                            "createdAt": now})
        return {"id": user_id, "username": username, "createdAt": now}

    def find_user(self, username):
        with self.database.errors_translated():
            document = self.database.users.find_one({"usernameKey": username.lower(), "erasing": {"$ne": True}})
        if document is None:
            return None
        return {**self._public_user(document), "passwordHash": bytes(document["passwordHash"])}

    def set_password(self, user_id, password_hash):
        with self.database.errors_translated():
            self.database.users.update_one({"_id": as_object_id(user_id)}, {"$set": {"passwordHash": password_hash}})

    @staticmethod
    def _public_user(document) -> dict:
        return {"id": str(document["_id"]), "username": document["username"], "createdAt": document["createdAt"]}

    # -- patients --------------------------------------------------------------
    def create_patient(self, owner_id, fields):
        patient_id, now = new_id(self.database.clock), self.database.now()
        first_key, last_key = name_keys(fields)
        document = {"_id": as_object_id(patient_id), "ownerId": ObjectId(owner_id), "fields": fields,
                    "firstNameKey": first_key, "lastNameKey": last_key, "reports": [], "version": 1,
                    "createdAt": now, "updatedAt": now}
        with self.database.errors_translated():
            # The patient, then its version 1 (a crash between loses version 1 from its
            # history, never leaves a version whose patient does not exist)...
            self.database.patients.insert_one(document)
            self.versions.record_first_version(document)
            # ...then the owner, checked after both, so an erasure that begins meanwhile
            # either sees this patient (and erases it, history and all) or is seen here
            # (and both are taken back).
            if self.database.users.find_one({"_id": document["ownerId"], "erasing": {"$ne": True}}, {"_id": 1}) is None:
                self.database.patients.delete_one({"_id": document["_id"]})
                self.database.patient_versions.delete_many({"patientId": document["_id"]})
                raise NotFound("no user with this id")
        return self._patient_from_document(document)

    def get_patient(self, patient_id):
        with self.database.errors_translated():
            document = self.database.patients.find_one({"_id": as_object_id(patient_id)})
        if document is None:
            raise NotFound("no patient with this id")
        return self._patient_from_document(document)

    def list_patients(self, owner_id, *, limit, after=None, name_contains=None):
        query = {"ownerId": ObjectId(owner_id)}
        if after:
            query["_id"] = {"$gt": as_object_id(after)}  # a cursor by _id, never skip()
        if name_contains:
            # NOTE: the search text is escaped, so it is matched literally: a user's
            # ".*" or "(" is a character to find, never a pattern to run.
            literal = {"$regex": re.escape(name_contains)}
            query["$or"] = [{"firstNameKey": literal}, {"lastNameKey": literal}]
        with self.database.errors_translated():
            documents = list(self.database.patients.find(query).sort("_id", 1).limit(limit))
        return self._patients_from_documents(documents)

    def count_patients(self, owner_id):
        with self.database.errors_translated():
            return self.database.patients.count_documents({"ownerId": ObjectId(owner_id)})

    def replace_patient(self, patient_id, fields, *, expected_version=None):
        with self.database.errors_translated():
            record, head = self.versions.write_version(patient_id, expected_version,
                                                       lambda head: {"fields": fields, "reports": head["reports"]})
        return self._patient_from_document({**head, **record, "_id": head["_id"]})

    def delete_patient(self, patient_id, *, expected_version=None):
        # The head goes first, then its history, then its files (a crash part-way leaves
        # orphan files for the sweep, never a report that names a missing file).
        with self.database.errors_translated():
            self.versions.write_version(patient_id, expected_version, lambda head: {"deleted": True, "pending": True})

    def _patient_from_document(self, document) -> dict:
        return self._patients_from_documents([document])[0]

    def _patients_from_documents(self, documents: list[dict]) -> list[dict]:
        # A report uploaded before reports kept their SHA-1 has it in its GridFS file
        # document only (MongoReports.add_missing_sha1): one look-up for all such reports of a page.
        older = [report["id"] for document in documents for report in document["reports"] if "sha1" not in report]
        hashes = {}
        if older:
            with self.database.errors_translated():
                hashes = self.reports.kept_sha1s(older)
        return [{"id": str(document["_id"]), "ownerId": str(document["ownerId"]), **document["fields"],
                 "reports": [report if "sha1" in report else {**report, "sha1": hashes.get(report["id"])}
                             for report in document["reports"]],
                 "version": document["version"], "createdAt": document["createdAt"],
                 "updatedAt": document["updatedAt"]}
                for document in documents]

    def patient_owner(self, patient_id):
        if not is_object_id(patient_id):
            return None
        with self.database.errors_translated():
            document = self.database.patients.find_one({"_id": ObjectId(patient_id)}, {"ownerId": 1})
        return None if document is None else str(document["ownerId"])

    # -- report files: storage/mongo/reports.py -----------------------------------
    def report_writer(self):
        return self.reports.report_writer()

    def open_report(self, patient_id, report_id, *, start=0, length=None):
        return self.reports.open_report(patient_id, report_id, start=start, length=length)

    def report_patient(self, report_id):
        return self.reports.report_patient(report_id)

    def delete_report(self, patient_id, report_id):
        self.reports.delete_report(patient_id, report_id)

    def report_storage(self):
        return {"kind": "gridfs"} if self.database.objects is None else self.database.objects.describe()

    def stored_report_ids(self):
        return self.reports.stored_report_ids()

    # -- a patient's history: storage/mongo/versions.py ----------------------------
    def list_versions(self, patient_id, *, below, limit):
        return self.versions.list_versions(patient_id, below=below, limit=limit)

    def get_version(self, patient_id, version):
        return self.versions.get_version(patient_id, version)

    # -- sessions, failed logins, erasure: storage/mongo/accounts.py ----------------
    def create_session(self, user_id, refresh_hash, expires_at, *, password_hash):
        return self.accounts.create_session(user_id, refresh_hash, expires_at, password_hash=password_hash)

    def session_user(self, session_id, user_id):
        return self.accounts.session_user(session_id, user_id)

    def touch_session(self, session_id):
        self.accounts.touch_session(session_id)

    def rotate_refresh(self, session_id, old_hash, new_hash):
        return self.accounts.rotate_refresh(session_id, old_hash, new_hash)

    def refresh_token_issuer(self, session_id, refresh_hash):
        return self.accounts.refresh_token_issuer(session_id, refresh_hash)

    def end_session(self, session_id, user_id=None):
        return self.accounts.end_session(session_id, user_id)

    def end_sessions(self, user_id, *, keep=None):
        self.accounts.end_sessions(user_id, keep=keep)

    def list_sessions(self, user_id):
        return self.accounts.list_sessions(user_id)

    def record_login_failure(self, key, at, expires_at):
        self.accounts.record_login_failure(key, at, expires_at)

    def login_failures(self, key, limit):
        return self.accounts.login_failures(key, limit)

    def forget_login_failures(self, key):
        self.accounts.forget_login_failures(key)

    def erase_user(self, user_id):
        self.accounts.erase_user(user_id)

    # -- the audit trail: storage/mongo/audit_log.py ---------------------------------
    def append_audit(self, chain, events):
        self.audit.append_audit(chain, events)

    def list_audit(self, viewer_id, *, limit, before=None, patient_id=None, action=None):
        return self.audit.list_audit(viewer_id, limit=limit, before=before, patient_id=patient_id, action=action)

    def audit_chains(self):
        return self.audit.audit_chains()

    def audit_chain_ids(self):
        return self.audit.audit_chain_ids()

    def audit_events(self, chain):
        return self.audit.audit_events(chain)

    def purge_audit(self, recorded_before):
        self.audit.purge_audit(recorded_before)

    # -- backup and restore: storage/mongo/backup.py ------------------------------
    def snapshot(self, scratch):
        return backup.snapshot(self, scratch)

    def is_empty(self):
        return backup.is_empty(self)

    def restore(self, reader):
        backup.restore(self, reader)

    # -- lifecycle ---------------------------------------------------------------
    def ping(self):
        with self.database.errors_translated():
            self._client.admin.command("ping")

    def close(self):
        self._client.close()
