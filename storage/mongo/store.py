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
from storage.mongo.audit_log import MongoAudit
from storage.mongo.versions import ClaimedNotApplied, MongoVersions

# How long an unreachable server may take before a request gives up with a 503: a few
# seconds, never a hang (pymongo's default server selection wait is 30 s).
TIMEOUT_MS = 3000
# GridFS files that no patient names are swept at start-up only when at least this old,
# so an upload that another MediTrack process is writing right now is left alone.
SWEEP_MIN_AGE = timedelta(minutes=10)


class MongoStore(MongoAccounts, MongoAudit, MongoVersions, Store):
    name = "mongodb"

    def __init__(self, uri: str, *, clock=time.time):
        self.uri = uri
        self._clock = clock
        self._next_housekeeping = 0.0
        # NOTE: pymongo's client is thread-safe and pools its connections: one client
        # serves every handler thread. Write concern, retryable writes and the replica
        # set come from the URI, where operators expect to set them.
        self._client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=TIMEOUT_MS,
                                           connectTimeoutMS=TIMEOUT_MS, socketTimeoutMS=2 * TIMEOUT_MS,
                                           tz_aware=True)
        database = self._client.get_default_database(default="meditrack")
        self._users = database["users"]
        self._sessions = database["sessions"]
        self._refresh_tokens = database["refreshTokens"]
        self._spent_tokens = database["spentRefreshTokens"]
        self._login_failures = database["loginFailures"]
        self._patients = database["patients"]
        self._versions = database["patientVersions"]
        self._migrations = database["schemaMigrations"]
        self._audit = database["audit"]
        self._audit_chains = database["auditChains"]
        self._files = gridfs.GridFSBucket(database, bucket_name="reports")
        self._file_documents = database["reports.files"]
        self._chunk_documents = database["reports.chunks"]
        with self._errors_translated():
            self._create_indexes()
            self._finish_versions()  # first: the housekeeping's erasures need every patient's version
            self._housekeeping()
            self._sweep_report_files()
            self._add_missing_sha1()

    def _create_indexes(self) -> None:
        # Usernames are unique ignoring case: the lower-cased copy carries the index.
        self._users.create_index("usernameKey", unique=True, name="users_by_username")
        self._create_account_indexes()
        self._create_audit_indexes()
        self._create_version_indexes()
        # An owner's listing in id order, and the cursor's {_id: {$gt: ...}} range.
        self._patients.create_index([("ownerId", 1), ("_id", 1)], name="patients_by_owner")
        # The sweep's question "does any patient name this file?".
        self._patients.create_index("reports.id", name="patients_by_report")
        # The GridFS specification's indexes, made here because we write chunks ourselves.
        self._chunk_documents.create_index([("files_id", 1), ("n", 1)], unique=True, name="files_id_1_n_1")
        self._file_documents.create_index([("filename", 1), ("uploadDate", 1)], name="filename_1_uploadDate_1")

    @contextmanager
    def _errors_translated(self):
        """pymongo's exceptions become the store's own: handlers never see a driver."""
        try:
            yield
        except DuplicateKeyError as exc:
            raise Conflict("a record with this key already exists") from exc
        except PyMongoError as exc:  # unreachable, timed out, not primary, ...
            raise Unavailable("the database cannot complete the request") from exc

    def _now(self) -> str:
        return utc_timestamp(self._clock())

    # -- users ---------------------------------------------------------------
    def create_user(self, username, password_hash):
        user_id, now = new_id(self._clock), self._now()
        with self._errors_translated():
            self._users.insert_one({"_id": ObjectId(user_id), "username": username,
                                    "usernameKey": username.lower(), "passwordHash": password_hash,
                                    "createdAt": now})
        return {"id": user_id, "username": username, "createdAt": now}

    def find_user(self, username):
        with self._errors_translated():
            document = self._users.find_one({"usernameKey": username.lower(), "erasing": {"$ne": True}})
        if document is None:
            return None
        return {**self._public_user(document), "passwordHash": bytes(document["passwordHash"])}

    def set_password(self, user_id, password_hash):
        with self._errors_translated():
            self._users.update_one({"_id": as_object_id(user_id)}, {"$set": {"passwordHash": password_hash}})

    @staticmethod
    def _public_user(document) -> dict:
        return {"id": str(document["_id"]), "username": document["username"], "createdAt": document["createdAt"]}

    # -- patients --------------------------------------------------------------
    def create_patient(self, owner_id, fields):
        patient_id, now = new_id(self._clock), self._now()
        first_key, last_key = name_keys(fields)
        document = {"_id": as_object_id(patient_id), "ownerId": ObjectId(owner_id), "fields": fields,
                    "firstNameKey": first_key, "lastNameKey": last_key, "reports": [], "version": 1,
                    "createdAt": now, "updatedAt": now}
        with self._errors_translated():
            # The patient, then its version 1 (a crash between loses version 1 from its
            # history, never leaves a version whose patient does not exist)...
            self._patients.insert_one(document)
            self._record_first_version(document)
            # ...then the owner, checked after both, so an erasure that begins meanwhile
            # either sees this patient (and erases it, history and all) or is seen here
            # (and both are taken back).
            if self._users.find_one({"_id": document["ownerId"], "erasing": {"$ne": True}}, {"_id": 1}) is None:
                self._patients.delete_one({"_id": document["_id"]})
                self._versions.delete_many({"patientId": document["_id"]})
                raise NotFound("no user with this id")
        return self._patient_from_document(document)

    def get_patient(self, patient_id):
        with self._errors_translated():
            document = self._patients.find_one({"_id": as_object_id(patient_id)})
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
        with self._errors_translated():
            documents = list(self._patients.find(query).sort("_id", 1).limit(limit))
        return self._patients_from_documents(documents)

    def count_patients(self, owner_id):
        with self._errors_translated():
            return self._patients.count_documents({"ownerId": ObjectId(owner_id)})

    def replace_patient(self, patient_id, fields, *, expected_version=None):
        with self._errors_translated():
            record, head = self._write_version(patient_id, expected_version,
                                               lambda head: {"fields": fields, "reports": head["reports"]})
        return self._patient_from_document({**head, **record, "_id": head["_id"]})

    def delete_patient(self, patient_id, *, expected_version=None):
        # The head goes first, then its history, then its files (a crash part-way leaves
        # orphan files for the sweep, never a report that names a missing file).
        with self._errors_translated():
            self._write_version(patient_id, expected_version, lambda head: {"deleted": True, "pending": True})

    def _patient_from_document(self, document) -> dict:
        return self._patients_from_documents([document])[0]

    def _patients_from_documents(self, documents: list[dict]) -> list[dict]:
        # A report uploaded before reports kept their SHA-1 has it in its GridFS file
        # document only (_add_missing_sha1): one look-up for all such reports of a page.
        older = [ObjectId(report["id"]) for document in documents for report in document["reports"]
                 if "sha1" not in report]
        hashes = {}
        if older:
            with self._errors_translated():
                hashes = {str(file["_id"]): file.get("metadata", {}).get("sha1")
                          for file in self._file_documents.find({"_id": {"$in": older}}, {"metadata": 1})}
        return [{"id": str(document["_id"]), "ownerId": str(document["ownerId"]), **document["fields"],
                 "reports": [report if "sha1" in report else {**report, "sha1": hashes.get(report["id"])}
                             for report in document["reports"]],
                 "version": document["version"], "createdAt": document["createdAt"],
                 "updatedAt": document["updatedAt"]}
                for document in documents]

    # -- reports -----------------------------------------------------------------
    def report_writer(self):
        return MongoReportWriter(self)

    def _attach_report(self, patient_id: str, report: dict) -> None:
        # NotFound if the patient was deleted while the upload ran.
        with self._errors_translated():
            self._write_version(patient_id, None,
                                lambda head: {"fields": head["fields"], "reports": [*head["reports"], report]})

    def open_report(self, patient_id, report_id, *, start=0, length=None):
        report_object_id = as_object_id(report_id)
        with self._errors_translated():
            document = self._patients.find_one({"_id": as_object_id(patient_id), "reports.id": report_id},
                                               {"reports": 1})
            if document is None:
                raise NotFound("this patient has no report with this id")
            report = next(report for report in document["reports"] if report["id"] == report_id)
            try:
                source = self._files.open_download_stream(report_object_id)
            except gridfs.errors.NoFile as exc:
                raise Unavailable("the report's file cannot be read") from exc
        # GridOut.seek only moves its position: the next read asks for the chunks from
        # the one holding `start` on (files_id, n ≥ start // chunkSize).
        return report, ReportChunks(source, start=start, length=length)

    def report_patient(self, report_id):
        with self._errors_translated():
            document = self._patients.find_one({"reports.id": report_id}, {"_id": 1})  # patients_by_report
        return None if document is None else str(document["_id"])

    def delete_report(self, patient_id, report_id):
        def without_report(head):
            reports = [report for report in head["reports"] if report["id"] != report_id]
            if len(reports) == len(head["reports"]):
                raise NotFound("this patient has no report with this id")
            return {"fields": head["fields"], "reports": reports}

        with self._errors_translated():
            self._write_version(patient_id, None, without_report)
            self._delete_file(report_id)

    def _delete_file(self, report_id: str) -> None:
        try:
            self._files.delete(ObjectId(report_id))
        except gridfs.errors.NoFile:
            pass  # already gone: deleting is idempotent

    def stored_report_ids(self) -> set[str]:
        with self._errors_translated():
            files = {str(file_id) for file_id in self._file_documents.distinct("_id")}
            chunks = {str(file_id) for file_id in self._chunk_documents.distinct("files_id")}
        return files | chunks

    def _sweep_report_files(self) -> None:
        """Remove GridFS files and chunks that no patient names, once they are older
        than SWEEP_MIN_AGE (a report id starts with its creation time, like any ObjectId),
        but for an upload whose version was claimed and not applied: that one is applied."""
        cutoff = ObjectId.from_datetime(datetime.fromtimestamp(self._clock(), timezone.utc) - SWEEP_MIN_AGE)
        for file_id in self._file_documents.distinct("_id", {"_id": {"$lt": cutoff}}):
            if (self._patients.find_one({"reports.id": str(file_id)}, {"_id": 1}) is None
                    and not self._apply_claimed_version_listing(str(file_id))):
                self._delete_file(str(file_id))
        # Chunks with no files document: an upload cut off before it was closed.
        known = set(self._file_documents.distinct("_id"))
        stray = [file_id for file_id in self._chunk_documents.distinct("files_id", {"files_id": {"$lt": cutoff}})
                 if file_id not in known]
        if stray:
            self._chunk_documents.delete_many({"files_id": {"$in": stray}})

    def _add_missing_sha1(self) -> None:
        """Reports uploaded before the SHA-1 was kept get it now, read from their bytes,
        and written to their GridFS file document (where each upload also writes it).
        Nothing else ever changes that document, so this races no writer, and the
        patients' own documents, where the versions protocol rules, are left alone: a
        report without its hash there is given the file's when read. A file that cannot
        be read is left without one (its FHIR view then has no hash)."""
        lacking = {"metadata.sha1": {"$exists": False}}
        for file in list(self._file_documents.find(lacking, {"_id": 1})):
            try:
                with closing(self._files.open_download_stream(file["_id"])) as source:
                    sha1 = base64_sha1(ReportChunks(source))
            except gridfs.errors.GridFSError:
                continue  # no chunks, a chunk missing or the wrong size: the file is damaged
            self._file_documents.update_one({"_id": file["_id"], **lacking}, {"$set": {"metadata.sha1": sha1}})

    def patient_owner(self, patient_id):
        if not is_object_id(patient_id):
            return None
        with self._errors_translated():
            document = self._patients.find_one({"_id": ObjectId(patient_id)}, {"ownerId": 1})
        return None if document is None else str(document["ownerId"])

    # -- lifecycle ---------------------------------------------------------------
    def ping(self):
        with self._errors_translated():
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

    def __init__(self, store: MongoStore):
        self._store = store
        self.report_id = new_id(store._clock)
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
        with self._store._errors_translated():
            self._store._chunk_documents.insert_one({"files_id": self._file_id, "n": self._chunk_number,
                                                     "data": data})
        self._chunk_number += 1

    def commit(self, patient_id, metadata):
        if self._pending:
            self._insert_chunk(bytes(self._pending))
            self._pending.clear()
        with self._store._errors_translated():
            self._store._file_documents.insert_one({
                "_id": self._file_id, "length": self._length, "chunkSize": self.CHUNK_SIZE,
                "uploadDate": datetime.now(timezone.utc), "filename": self.report_id,
                # GridFS's place for an application's own data: the spec's `metadata` field.
                "metadata": {"sha1": metadata["sha1"]}})
        self._file_written = True
        report = {"id": self.report_id, **metadata, "uploadedAt": self._store._now()}
        try:
            self._store._attach_report(patient_id, report)  # if this fails, abort() deletes the file...
        except ClaimedNotApplied:
            self._committed = True  # ...unless a version naming it is claimed: the next write applies it
            raise
        self._committed = True
        return report

    def abort(self):
        if self._committed:
            return
        try:
            with self._store._errors_translated():
                if self._file_written:
                    self._store._file_documents.delete_one({"_id": self._file_id})
                self._store._chunk_documents.delete_many({"files_id": self._file_id})
        except Unavailable:
            pass  # the database is gone too: the start-up sweep will remove the chunks
