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
the version before the newest: see the NOTE there). An upload writes its GridFS file first
and then adds the metadata to the patient; if that fails the file is deleted (unless
the version naming it was claimed: it will be applied). A crash in between leaves a
file no patient names, which the start-up sweep removes once it is old enough that it
cannot be an upload still in flight (or, if an unapplied version names it, keeps, and
applies that version).

Sessions and account erasure are in storage/mongo/accounts.py, the audit trail in
storage/mongo/audit_log.py.

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
from contextlib import closing, contextmanager
from datetime import datetime, timedelta, timezone

import gridfs
import pymongo
from bson import ObjectId
from pymongo.errors import DuplicateKeyError, PyMongoError

from storage.base import ReportChunks, ReportWriter, Store, base64_sha1, name_keys, utc_timestamp
from storage.errors import Conflict, NotFound, Unavailable
from storage.ids import is_object_id, new_id
from storage.mongo.accounts import MongoAccounts, as_object_id
from storage.mongo.audit_log import MongoAuditLog
from storage.mongo.versions import ClaimedNotApplied, MongoVersions

# How long an unreachable server may take before a request gives up with a 503: a few
# seconds, never a hang (pymongo's default server selection wait is 30 s).
TIMEOUT_MS = 3000
# GridFS files that no patient names are swept at start-up only when at least this old,
# so an upload that another MediTrack process is writing right now is left alone.
SWEEP_MIN_AGE = timedelta(minutes=10)


class Database:
    """What every part of the MongoDB store works through, and nothing else: the
    database's collections, the GridFS bucket, the clock, and `errors_translated()`.

    `MongoStore` makes one and hands it to each part it is built from (accounts, the
    versions protocol, the audit log), so no part reaches into another's attributes."""

    def __init__(self, client, clock):
        database = client.get_default_database(default="meditrack")
        self.users = database["users"]
        self.sessions = database["sessions"]
        self.refresh_tokens = database["refreshTokens"]
        self.spent_tokens = database["spentRefreshTokens"]
        self.login_failures = database["loginFailures"]
        self.patients = database["patients"]
        self.patient_versions = database["patientVersions"]
        self.migrations = database["schemaMigrations"]
        self.audit = database["audit"]
        self.audit_chains = database["auditChains"]
        self.files = gridfs.GridFSBucket(database, bucket_name="reports")
        self.file_documents = database["reports.files"]
        self.chunk_documents = database["reports.chunks"]
        self.clock = clock

    @contextmanager
    def errors_translated(self):
        """pymongo's exceptions become the store's own: handlers never see a driver."""
        try:
            yield
        except DuplicateKeyError as exc:
            raise Conflict("a record with this key already exists") from exc
        except PyMongoError as exc:  # unreachable, timed out, not primary, ...
            raise Unavailable("the database cannot complete the request") from exc

    def now(self) -> str:
        return utc_timestamp(self.clock())


class MongoStore(Store):
    """The MongoDB store. The users, patients and report files are its own work; the rest
    it hands to the parts it holds, each named where it is called:

    - `database`: the collections, the clock, error translation (`Database`, above);
    - `accounts`: sessions, failed logins, erasure (storage/mongo/accounts.py);
    - `versions`: every change to a patient, claimed then applied (storage/mongo/versions.py);
    - `audit`: the audit trail's collections (storage/mongo/audit_log.py).
    """

    name = "mongodb"

    def __init__(self, uri: str, *, clock=time.time):
        self.uri = uri
        # NOTE: pymongo's client is thread-safe and pools its connections: one client
        # serves every handler thread. Write concern, retryable writes and the replica
        # set come from the URI, where operators expect to set them.
        self._client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=TIMEOUT_MS,
                                           connectTimeoutMS=TIMEOUT_MS, socketTimeoutMS=2 * TIMEOUT_MS,
                                           tz_aware=True)
        self.database = Database(self._client, clock)
        self.accounts = MongoAccounts(self.database, delete_patient=self.delete_patient)
        self.versions = MongoVersions(self.database, delete_file=self._delete_file)
        self.audit = MongoAuditLog(self.database)
        with self.database.errors_translated():
            self._create_indexes()
            self.versions.finish_versions()  # first: the housekeeping's erasures need every patient's version
            self.accounts.housekeeping()
            self._sweep_report_files()
            self._add_missing_sha1()

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
        # document only (_add_missing_sha1): one look-up for all such reports of a page.
        older = [ObjectId(report["id"]) for document in documents for report in document["reports"]
                 if "sha1" not in report]
        hashes = {}
        if older:
            with self.database.errors_translated():
                hashes = {str(file["_id"]): file.get("metadata", {}).get("sha1")
                          for file in self.database.file_documents.find({"_id": {"$in": older}}, {"metadata": 1})}
        return [{"id": str(document["_id"]), "ownerId": str(document["ownerId"]), **document["fields"],
                 "reports": [report if "sha1" in report else {**report, "sha1": hashes.get(report["id"])}
                             for report in document["reports"]],
                 "version": document["version"], "createdAt": document["createdAt"],
                 "updatedAt": document["updatedAt"]}
                for document in documents]

    # -- reports -----------------------------------------------------------------
    def report_writer(self):
        return MongoReportWriter(self.database, attach=self._attach_report)

    def _attach_report(self, patient_id: str, report: dict) -> None:
        # NotFound if the patient was deleted while the upload ran.
        with self.database.errors_translated():
            self.versions.write_version(patient_id, None,
                                        lambda head: {"fields": head["fields"], "reports": [*head["reports"], report]})

    def open_report(self, patient_id, report_id, *, start=0, length=None):
        report_object_id = as_object_id(report_id)
        with self.database.errors_translated():
            document = self.database.patients.find_one({"_id": as_object_id(patient_id), "reports.id": report_id},
                                                       {"reports": 1})
            if document is None:
                raise NotFound("this patient has no report with this id")
            report = next(report for report in document["reports"] if report["id"] == report_id)
            try:
                source = self.database.files.open_download_stream(report_object_id)
            except gridfs.errors.NoFile as exc:
                raise Unavailable("the report's file cannot be read") from exc
        # GridOut.seek only moves its position: the next read asks for the chunks from
        # the one holding `start` on (files_id, n ≥ start // chunkSize).
        return report, ReportChunks(source, start=start, length=length)

    def report_patient(self, report_id):
        with self.database.errors_translated():
            document = self.database.patients.find_one({"reports.id": report_id}, {"_id": 1})  # patients_by_report
        return None if document is None else str(document["_id"])

    def delete_report(self, patient_id, report_id):
        def without_report(head):
            reports = [report for report in head["reports"] if report["id"] != report_id]
            if len(reports) == len(head["reports"]):
                raise NotFound("this patient has no report with this id")
            return {"fields": head["fields"], "reports": reports}

        with self.database.errors_translated():
            self.versions.write_version(patient_id, None, without_report)
            self._delete_file(report_id)

    def _delete_file(self, report_id: str) -> None:
        try:
            self.database.files.delete(ObjectId(report_id))
        except gridfs.errors.NoFile:
            pass  # already gone: deleting is idempotent

    def stored_report_ids(self) -> set[str]:
        with self.database.errors_translated():
            files = {str(file_id) for file_id in self.database.file_documents.distinct("_id")}
            chunks = {str(file_id) for file_id in self.database.chunk_documents.distinct("files_id")}
        return files | chunks

    def _sweep_report_files(self) -> None:
        """Remove GridFS files and chunks that no patient names, once they are older
        than SWEEP_MIN_AGE (a report id starts with its creation time, like any ObjectId),
        but for an upload whose version was claimed and not applied: that one is applied."""
        cutoff = ObjectId.from_datetime(datetime.fromtimestamp(self.database.clock(), timezone.utc) - SWEEP_MIN_AGE)
        for file_id in self.database.file_documents.distinct("_id", {"_id": {"$lt": cutoff}}):
            if (self.database.patients.find_one({"reports.id": str(file_id)}, {"_id": 1}) is None
                    and not self.versions.apply_claimed_version_listing(str(file_id))):
                self._delete_file(str(file_id))
        # Chunks with no files document: an upload cut off before it was closed.
        known = set(self.database.file_documents.distinct("_id"))
        old_chunks = self.database.chunk_documents.distinct("files_id", {"files_id": {"$lt": cutoff}})
        stray = [file_id for file_id in old_chunks if file_id not in known]
        if stray:
            self.database.chunk_documents.delete_many({"files_id": {"$in": stray}})

    def _add_missing_sha1(self) -> None:
        """Reports uploaded before the SHA-1 was kept get it now, read from their bytes,
        and written to their GridFS file document (where each upload also writes it).
        Nothing else ever changes that document, so this races no writer, and the
        patients' own documents, where the versions protocol rules, are left alone: a
        report without its hash there is given the file's when read. A file that cannot
        be read is left without one (its FHIR view then has no hash)."""
        lacking = {"metadata.sha1": {"$exists": False}}
        for file in list(self.database.file_documents.find(lacking, {"_id": 1})):
            try:
                with closing(self.database.files.open_download_stream(file["_id"])) as source:
                    sha1 = base64_sha1(ReportChunks(source))
            except gridfs.errors.GridFSError:
                continue  # no chunks, a chunk missing or the wrong size: the file is damaged
            self.database.file_documents.update_one({"_id": file["_id"], **lacking}, {"$set": {"metadata.sha1": sha1}})

    def patient_owner(self, patient_id):
        if not is_object_id(patient_id):
            return None
        with self.database.errors_translated():
            document = self.database.patients.find_one({"_id": ObjectId(patient_id)}, {"ownerId": 1})
        return None if document is None else str(document["ownerId"])

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

    def refresh_token_issued(self, session_id, refresh_hash):
        return self.accounts.refresh_token_issued(session_id, refresh_hash)

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

    # -- lifecycle ---------------------------------------------------------------
    def ping(self):
        with self.database.errors_translated():
            self._client.admin.command("ping")

    def close(self):
        self._client.close()


class MongoReportWriter(ReportWriter):
    """Writes one GridFS file chunk by chunk, as the GridFS specification lays it out.

    A file is documents in two collections: `reports.chunks` holds {files_id, n, data}
    pieces of CHUNK_SIZE bytes, numbered from 0, and `reports.files` one document with
    the total length, written last. Until that document exists no reader sees the file.

    NOTE: we write the chunks ourselves rather than through pymongo's GridIn because
    GridIn batches up to 32 MB of chunks in memory before inserting them; an upload
    must hold no more than one chunk however large the file is.
    """

    CHUNK_SIZE = 255 * 1024  # the GridFS default: a chunk document stays well under 16 MB

    def __init__(self, database: Database, *, attach):
        self._database = database
        self._attach = attach  # the store's: adds the report to its patient (a new version)
        self.report_id = new_id(database.clock)
        self._file_id = ObjectId(self.report_id)
        self._pending = bytearray()
        self._chunk_number = 0
        self._length = 0
        self._file_written = False
        self._committed = False

    def write(self, chunk):
        self._pending += chunk
        self._length += len(chunk)
        while len(self._pending) >= self.CHUNK_SIZE:
            self._insert_chunk(bytes(self._pending[:self.CHUNK_SIZE]))
            del self._pending[:self.CHUNK_SIZE]

    def _insert_chunk(self, data: bytes) -> None:
        with self._database.errors_translated():
            self._database.chunk_documents.insert_one({"files_id": self._file_id, "n": self._chunk_number,
                                                       "data": data})
        self._chunk_number += 1

    def commit(self, patient_id, metadata):
        if self._pending:
            self._insert_chunk(bytes(self._pending))
            self._pending.clear()
        with self._database.errors_translated():
            self._database.file_documents.insert_one({
                "_id": self._file_id, "length": self._length, "chunkSize": self.CHUNK_SIZE,
                "uploadDate": datetime.now(timezone.utc), "filename": self.report_id,
                # GridFS's place for an application's own data: the spec's `metadata` field.
                "metadata": {"sha1": metadata["sha1"]}})
        self._file_written = True
        report = {"id": self.report_id, **metadata, "uploadedAt": self._database.now()}
        try:
            self._attach(patient_id, report)  # if this fails, abort() deletes the file...
        except ClaimedNotApplied:
            self._committed = True  # ...unless a version naming it is claimed: the next write applies it
            raise
        self._committed = True
        return report

    def abort(self):
        if self._committed:
            return
        try:
            with self._database.errors_translated():
                if self._file_written:
                    self._database.file_documents.delete_one({"_id": self._file_id})
                self._database.chunk_documents.delete_many({"files_id": self._file_id})
        except Unavailable:
            pass  # the database is gone too: the start-up sweep will remove the chunks
