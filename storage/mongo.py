"""The MongoDB store: the same `Store` interface on pymongo, report bytes in GridFS.

For users who outgrow one machine: a replica set or a sharded cluster behind one
`MONGODB_URI`. pymongo is imported only here, so the embedded mode never needs it.

Documents:
    users     {_id, username, usernameKey (lower-cased, unique), passwordHash, createdAt,
               erasing (true while the account is being erased)}
    sessions  {_id, userId, username, userCreatedAt, createdAt, lastUsedAt,
               expiresAt (a date: the TTL index deletes the session then); ending a
               session deletes its document}
    refreshTokens       {_id: the SHA-256 of a refresh token issued, sessionId, userId, expiresAt}
    spentRefreshTokens  {_id: the SHA-256 of a refresh token already used, expiresAt}
    patients  {_id, ownerId, fields: {<PatientInput fields>}, firstNameKey, lastNameKey,
               reports: [Report], createdAt, updatedAt}
    reports.files / reports.chunks   GridFS, one file per report, _id = the report's id

A patient's reports are embedded in its document, so reading a patient is one
look-up; its editable fields sit in one sub-document, so a replace is a single `$set`
that can never race with an upload's `$push` onto `reports`. An upload writes its GridFS file first and then pushes the metadata onto the
patient; if that update fails the file is deleted. A crash in between leaves a file no
patient names, which the start-up sweep removes once it is old enough that it cannot
be an upload still in flight.
"""

import re
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import gridfs
import pymongo
from bson import ObjectId
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from storage.base import ReportChunks, ReportWriter, Store, name_keys, utc_timestamp
from storage.errors import Conflict, NotFound, Unavailable
from storage.ids import is_object_id, new_id

# How long an unreachable server may take before a request gives up with a 503: a few
# seconds, never a hang (pymongo's default server selection wait is 30 s).
TIMEOUT_MS = 3000
# GridFS files that no patient names are swept at start-up only when at least this old,
# so an upload that another MediTrack process is writing right now is left alone.
SWEEP_MIN_AGE = timedelta(minutes=10)
# Expired sessions are also deleted by us, and erasures a failure interrupted are
# finished, at most this often (seconds): see _housekeeping.
HOUSEKEEPING_INTERVAL = 3600
NOT_IMPLEMENTED = 238  # the server error code for a feature it lacks


def _object_id(text: str) -> ObjectId:
    """An id string as an ObjectId; one that is not an id names no record (NotFound)."""
    if not is_object_id(text):
        raise NotFound("no record has this id")
    return ObjectId(text)


class MongoStore(Store):
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
        self._patients = database["patients"]
        self._files = gridfs.GridFSBucket(database, bucket_name="reports")
        self._file_documents = database["reports.files"]
        self._chunk_documents = database["reports.chunks"]
        with self._errors_translated():
            self._create_indexes()
            self._housekeeping()
            self._sweep_report_files()

    def _create_indexes(self) -> None:
        # Usernames are unique ignoring case: the lower-cased copy carries the index.
        self._users.create_index("usernameKey", unique=True, name="users_by_username")
        # A user's sessions, to list or end them all.
        self._sessions.create_index([("userId", 1), ("createdAt", -1)], name="sessions_by_user")
        # The server deletes a session, and the hashes of its refresh tokens, once it has
        # expired (a TTL index); every query also checks the expiry, so nothing depends
        # on when that happens.
        for collection in (self._sessions, self._refresh_tokens, self._spent_tokens):
            try:
                collection.create_index("expiresAt", expireAfterSeconds=0, name=f"{collection.name}_expire")
            except OperationFailure as exc:
                # A MongoDB-compatible server without TTL indexes (FerretDB 1.x answers
                # NotImplemented): then only our own purge (_housekeeping) deletes them.
                if exc.code != NOT_IMPLEMENTED:
                    raise
                collection.create_index("expiresAt", name=f"{collection.name}_by_expiry")
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

    def get_user(self, user_id):
        if not is_object_id(user_id):
            return None
        with self._errors_translated():
            document = self._users.find_one({"_id": ObjectId(user_id), "erasing": {"$ne": True}},
                                            {"passwordHash": 0})
        return None if document is None else self._public_user(document)

    def set_password(self, user_id, password_hash):
        with self._errors_translated():
            self._users.update_one({"_id": _object_id(user_id)}, {"$set": {"passwordHash": password_hash}})

    def erase_user(self, user_id):
        user = _object_id(user_id)
        with self._errors_translated():
            # Step 1: no login (find_user skips an erasing user), then no session.
            self._users.update_one({"_id": user}, {"$set": {"erasing": True}})
            self._sessions.delete_many({"userId": user})
            self._refresh_tokens.delete_many({"userId": user})
            # Step 2, document by document (MongoDB has no transaction across them here):
            # a crash part-way leaves step 1 done, and the next start finishes the rest.
            self._finish_erasure(user)

    def _finish_erasure(self, user: ObjectId) -> None:
        # A request authenticated just before step 1 may still add a patient (its own
        # check in create_patient comes after the insert), so this goes round until none
        # is left.
        while patient_ids := self._patients.distinct("_id", {"ownerId": user}):
            for patient_id in patient_ids:
                try:
                    self.delete_patient(str(patient_id))  # the patient, then its GridFS files
                except NotFound:
                    pass  # deleted meanwhile by another request: just as good
        # Again at the end: a login that began before step 1 may have added a session.
        self._sessions.delete_many({"userId": user})
        self._refresh_tokens.delete_many({"userId": user})
        self._users.delete_one({"_id": user})

    def _finish_interrupted_erasures(self) -> None:
        for user in self._users.find({"erasing": True}, {"_id": 1}):
            self._finish_erasure(user["_id"])

    # -- sessions ----------------------------------------------------------------
    # NOTE: MongoDB applies each update to a document atomically, but a compatible server
    # need not: FerretDB 1.x runs a filtered update as a read and a later write, so two
    # updates of one document can lose one another, and a compare-and-set on a field can
    # have several winners. So nothing here depends on an update's isolation:
    # - ending a session deletes its document (an update racing with it finds nothing
    #   to write back, and cannot bring an ended session back to life);
    # - a refresh never rewrites the session: a refresh token's life is kept in
    #   insert-only collections, `refreshTokens` (issued) and `spentRefreshTokens`
    #   (used), and "use this token once" is an insert under a unique _id, the one
    #   atomic step every such server keeps;
    # - the only update, lastUsedAt once a minute, is harmless if lost.

    def _moment(self, seconds: float | None = None) -> datetime:
        """A BSON date (what a TTL index reads): now, or `seconds` since the epoch."""
        return datetime.fromtimestamp(self._clock() if seconds is None else seconds, timezone.utc)

    def _live(self, **criteria) -> dict:
        """The filter for live sessions (ended ones are deleted), plus `criteria`."""
        return {**criteria, "expiresAt": {"$gt": self._moment()}}

    def create_session(self, user_id, refresh_hash, expires_at, *, password_hash):
        user, now = _object_id(user_id), self._now()
        session_id = new_id(self._clock)
        current = {"_id": user, "erasing": {"$ne": True}, "passwordHash": password_hash}
        with self._errors_translated():
            owner = self._users.find_one(current, {"username": 1, "createdAt": 1})
            if owner is None:
                return None
            # NOTE: the user's public fields are copied into the session (a username
            # never changes), so authenticating a request reads this one document.
            session = {"_id": ObjectId(session_id), "userId": user, "username": owner["username"],
                       "userCreatedAt": owner["createdAt"], "createdAt": now, "lastUsedAt": now,
                       "expiresAt": self._moment(expires_at)}
            self._sessions.insert_one(session)
            self._refresh_tokens.insert_one({"_id": refresh_hash, "sessionId": session["_id"], "userId": user,
                                             "expiresAt": session["expiresAt"]})
            # Checked again after the insert: an erasure or a password change that began
            # meanwhile has ended the user's sessions already, and would miss this one.
            if self._users.find_one(current, {"_id": 1}) is None:
                self._sessions.delete_one({"_id": session["_id"]})
                return None
            self._housekeeping()
        return self._session_from_document(session)

    def _housekeeping(self) -> None:
        """At start-up, then at most once per HOUSEKEEPING_INTERVAL (when a session
        starts): delete expired sessions and token hashes (the whole job on a server
        without TTL indexes, a sweep behind the TTL monitor on one with them), and finish
        any erasure a failure left half done."""
        if self._clock() < self._next_housekeeping:
            return
        self._next_housekeeping = self._clock() + HOUSEKEEPING_INTERVAL
        for collection in (self._sessions, self._refresh_tokens, self._spent_tokens):
            collection.delete_many({"expiresAt": {"$lte": self._moment()}})
        self._finish_interrupted_erasures()

    def session_user(self, session_id, user_id):
        if not (is_object_id(session_id) and is_object_id(user_id)):
            return None
        with self._errors_translated():
            document = self._sessions.find_one(self._live(_id=ObjectId(session_id), userId=ObjectId(user_id)))
        if document is None:
            return None
        return {"id": user_id, "username": document["username"], "createdAt": document["userCreatedAt"],
                "sessionLastUsedAt": document["lastUsedAt"]}

    def touch_session(self, session_id):
        with self._errors_translated():
            self._sessions.update_one({"_id": _object_id(session_id)}, {"$set": {"lastUsedAt": self._now()}})

    def rotate_refresh(self, session_id, old_hash, new_hash):
        if not is_object_id(session_id):
            return None
        session_key = ObjectId(session_id)
        with self._errors_translated():
            session = self._sessions.find_one(self._live(_id=session_key))
            issued = self._refresh_tokens.find_one({"_id": old_hash, "sessionId": session_key})
            if session is None or issued is None:
                return None  # ended, expired or unknown session; a token it never had
            try:
                # The compare-and-set: of any number of refreshes racing with this token,
                # exactly one inserts its hash here; the others, and any later use, fail.
                self._spent_tokens.insert_one({"_id": old_hash, "expiresAt": session["expiresAt"]})
            except DuplicateKeyError:
                return None
            self._refresh_tokens.insert_one({"_id": new_hash, "sessionId": session_key, "userId": session["userId"],
                                             "expiresAt": session["expiresAt"]})
        return self._session_from_document(session)

    def refresh_token_issued(self, session_id, refresh_hash):
        if not is_object_id(session_id):
            return False
        with self._errors_translated():
            return self._refresh_tokens.find_one({"_id": refresh_hash, "sessionId": ObjectId(session_id)},
                                                 {"_id": 1}) is not None

    def end_session(self, session_id, user_id=None):
        if not is_object_id(session_id) or (user_id is not None and not is_object_id(user_id)):
            return False
        criteria = {"_id": ObjectId(session_id)}
        if user_id is not None:
            criteria["userId"] = ObjectId(user_id)
        with self._errors_translated():
            return self._sessions.delete_one(self._live(**criteria)).deleted_count == 1

    def end_sessions(self, user_id, *, keep=None):
        criteria = {"userId": _object_id(user_id)}
        if keep is not None and is_object_id(keep):
            criteria["_id"] = {"$ne": ObjectId(keep)}
        with self._errors_translated():
            self._sessions.delete_many(criteria)

    def list_sessions(self, user_id):
        with self._errors_translated():
            documents = self._sessions.find(self._live(userId=_object_id(user_id))).sort(
                [("createdAt", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)])
            return [self._session_from_document(document) for document in documents]

    @staticmethod
    def _session_from_document(document) -> dict:
        return {"id": str(document["_id"]), "userId": str(document["userId"]), "createdAt": document["createdAt"],
                "lastUsedAt": document["lastUsedAt"], "expiresAt": utc_timestamp(document["expiresAt"].timestamp())}

    @staticmethod
    def _public_user(document) -> dict:
        return {"id": str(document["_id"]), "username": document["username"], "createdAt": document["createdAt"]}

    # -- patients --------------------------------------------------------------
    def create_patient(self, owner_id, fields):
        patient_id, now = new_id(self._clock), self._now()
        first_key, last_key = name_keys(fields)
        document = {"_id": _object_id(patient_id), "ownerId": ObjectId(owner_id), "fields": fields,
                    "firstNameKey": first_key, "lastNameKey": last_key, "reports": [],
                    "createdAt": now, "updatedAt": now}
        with self._errors_translated():
            self._patients.insert_one(document)
            # Checked after the insert, so an erasure that begins meanwhile either sees this
            # patient (and erases it) or is seen here (and the patient is taken back).
            if self._users.find_one({"_id": document["ownerId"], "erasing": {"$ne": True}}, {"_id": 1}) is None:
                self._patients.delete_one({"_id": document["_id"]})
                raise NotFound("no user with this id")
        return self._patient_from_document(document)

    def get_patient(self, patient_id):
        with self._errors_translated():
            document = self._patients.find_one({"_id": _object_id(patient_id)})
        if document is None:
            raise NotFound("no patient with this id")
        return self._patient_from_document(document)

    def list_patients(self, owner_id, *, limit, after=None, name_contains=None):
        query = {"ownerId": ObjectId(owner_id)}
        if after:
            query["_id"] = {"$gt": _object_id(after)}  # a cursor by _id, never skip()
        if name_contains:
            # NOTE: the search text is escaped, so it is matched literally: a user's
            # ".*" or "(" is a character to find, never a pattern to run.
            literal = {"$regex": re.escape(name_contains)}
            query["$or"] = [{"firstNameKey": literal}, {"lastNameKey": literal}]
        with self._errors_translated():
            documents = list(self._patients.find(query).sort("_id", 1).limit(limit))
        return [self._patient_from_document(document) for document in documents]

    def replace_patient(self, patient_id, fields):
        first_key, last_key = name_keys(fields)
        update = {"$set": {"fields": fields, "firstNameKey": first_key, "lastNameKey": last_key,
                           "updatedAt": self._now()}}
        with self._errors_translated():
            document = self._patients.find_one_and_update({"_id": _object_id(patient_id)}, update,
                                                          return_document=pymongo.ReturnDocument.AFTER)
        if document is None:
            raise NotFound("no patient with this id")
        return self._patient_from_document(document)

    def delete_patient(self, patient_id):
        with self._errors_translated():
            document = self._patients.find_one_and_delete({"_id": _object_id(patient_id)})
            if document is None:
                raise NotFound("no patient with this id")
            # After the patient is gone: a crash here leaves orphans for the sweep,
            # never a report that names a missing file.
            for report in document["reports"]:
                self._delete_file(report["id"])

    @staticmethod
    def _patient_from_document(document) -> dict:
        return {"id": str(document["_id"]), "ownerId": str(document["ownerId"]), **document["fields"],
                "reports": document["reports"], "createdAt": document["createdAt"],
                "updatedAt": document["updatedAt"]}

    # -- reports -----------------------------------------------------------------
    def report_writer(self):
        return MongoReportWriter(self)

    def _attach_report(self, patient_id: str, report: dict) -> None:
        with self._errors_translated():
            updated = self._patients.update_one({"_id": _object_id(patient_id)}, {"$push": {"reports": report}})
        if updated.matched_count == 0:
            raise NotFound("no patient with this id")  # deleted while the upload ran

    def open_report(self, patient_id, report_id):
        report_object_id = _object_id(report_id)
        with self._errors_translated():
            document = self._patients.find_one({"_id": _object_id(patient_id), "reports.id": report_id},
                                               {"reports": 1})
            if document is None:
                raise NotFound("this patient has no report with this id")
            report = next(report for report in document["reports"] if report["id"] == report_id)
            try:
                source = self._files.open_download_stream(report_object_id)
            except gridfs.errors.NoFile as exc:
                raise Unavailable("the report's file cannot be read") from exc
        return report, ReportChunks(source)

    def delete_report(self, patient_id, report_id):
        report, chunks = self.open_report(patient_id, report_id)  # NotFound unless it is there
        chunks.close()
        with self._errors_translated():
            # $pull the exact element: MongoDB would also take the condition {"id": ...},
            # but exact equality is what every MongoDB-compatible server understands.
            updated = self._patients.update_one({"_id": _object_id(patient_id)}, {"$pull": {"reports": report}})
            if updated.modified_count == 0:
                raise NotFound("this patient has no report with this id")  # deleted meanwhile
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
        than SWEEP_MIN_AGE (a report id starts with its creation time, like any ObjectId)."""
        cutoff = ObjectId.from_datetime(datetime.fromtimestamp(self._clock(), timezone.utc) - SWEEP_MIN_AGE)
        for file_id in self._file_documents.distinct("_id", {"_id": {"$lt": cutoff}}):
            if self._patients.find_one({"reports.id": str(file_id)}, {"_id": 1}) is None:
                self._delete_file(str(file_id))
        # Chunks with no files document: an upload cut off before it was closed.
        known = set(self._file_documents.distinct("_id"))
        stray = [file_id for file_id in self._chunk_documents.distinct("files_id", {"files_id": {"$lt": cutoff}})
                 if file_id not in known]
        if stray:
            self._chunk_documents.delete_many({"files_id": {"$in": stray}})

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
                "uploadDate": datetime.now(timezone.utc), "filename": self.report_id})
        self._file_written = True
        report = {"id": self.report_id, **metadata, "uploadedAt": self._store._now()}
        self._store._attach_report(patient_id, report)  # if this fails, abort() deletes the file
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
