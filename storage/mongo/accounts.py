"""The MongoDB store's account half: sessions, refresh tokens, failed logins, and account erasure.

`MongoAccounts` is a part that `MongoStore` (storage/mongo/store.py) holds; it works through its
collections, clock and error translation. Documents:

    sessions            {_id, userId, username, userCreatedAt, createdAt, lastUsedAt,
                         expiresAt (a date: a TTL index deletes the session then)}
    refreshTokens       {_id: the SHA-256 of a refresh token issued, sessionId, userId, expiresAt}
    spentRefreshTokens  {_id: the SHA-256 of a refresh token already used, expiresAt}
    loginFailures       {key: a hash of the username, at: seconds since the epoch, expiresAt}

NOTE: MongoDB applies each update to a document atomically, but a compatible server
need not: FerretDB 1.x runs a filtered update as a read and a later write, so two
updates of one document can lose one another, and a compare-and-set on a field can
have several winners. So nothing here depends on an update's isolation:

- ending a session deletes its document (an update racing with it finds nothing to
  write back, and cannot bring an ended session back to life);
- a refresh never rewrites the session: a refresh token's life is kept in the two
  insert-only collections, and "use this token once" is an insert under a unique
  _id, the one atomic step every such server keeps;
- the only update, lastUsedAt once a minute, is harmless if lost;
- failed logins are a log, one inserted document per failure, not a counter: two
  failures at the same moment on two workers are both counted (handlers/backoff.py).

An erasure first makes the account unusable, then deletes what it owned document by
document; the store finishes an erasure a crash interrupted when it next opens.
"""

from datetime import datetime, timezone

import pymongo
from bson import ObjectId
from pymongo.errors import DuplicateKeyError, OperationFailure

from storage.base import utc_timestamp
from storage.errors import NotFound
from storage.ids import is_object_id, new_id

# Expired sessions are also deleted by us, and erasures a failure interrupted are
# finished, at start-up and then at most this often (seconds): see MongoAccounts.housekeeping.
HOUSEKEEPING_INTERVAL = 3600
NOT_IMPLEMENTED = 238  # the server error code for a feature it lacks


def as_object_id(text: str) -> ObjectId:
    """An id string as an ObjectId; one that is not an id names no record (NotFound)."""
    if not is_object_id(text):
        raise NotFound("no record has this id")
    return ObjectId(text)


class MongoAccounts:
    """Sessions, refresh tokens, failed logins and erasure on `database`. An erasure deletes
    the account's patients one by one with the store's `delete_patient` (their history
    and report files go with them)."""

    def __init__(self, database, *, delete_patient):
        self.database = database
        self._delete_patient = delete_patient
        self._next_housekeeping = 0.0

    def create_indexes(self) -> None:
        # A user's sessions, to list or end them all.
        self.database.sessions.create_index([("userId", 1), ("createdAt", -1)], name="sessions_by_user")
        # A username's latest failures, newest first.
        self.database.login_failures.create_index([("key", 1), ("at", -1)], name="loginFailures_by_key")
        # The server deletes a session, the hashes of its refresh tokens, and a failed
        # login, once it has expired (a TTL index); every query also checks the expiry,
        # so nothing depends on when that happens.
        for collection in self._expiring_collections():
            try:
                collection.create_index("expiresAt", expireAfterSeconds=0, name=f"{collection.name}_expire")
            except OperationFailure as exc:
                # A MongoDB-compatible server without TTL indexes (FerretDB 1.x answers
                # NotImplemented): then only our own purge (housekeeping) deletes them.
                if exc.code != NOT_IMPLEMENTED:
                    raise
                collection.create_index("expiresAt", name=f"{collection.name}_by_expiry")

    def _expiring_collections(self) -> tuple:
        database = self.database
        return database.sessions, database.refresh_tokens, database.spent_tokens, database.login_failures

    # -- sessions ----------------------------------------------------------------
    def _moment(self, seconds: float | None = None) -> datetime:
        """A BSON date (what a TTL index reads): now, or `seconds` since the epoch."""
        return datetime.fromtimestamp(self.database.clock() if seconds is None else seconds, timezone.utc)

    def _live(self, **criteria) -> dict:
        """The filter for live sessions (ended ones are deleted), plus `criteria`."""
        return {**criteria, "expiresAt": {"$gt": self._moment()}}

    def create_session(self, user_id, refresh_hash, expires_at, *, password_hash):
        user, now = as_object_id(user_id), self.database.now()
        session_id = new_id(self.database.clock)
        current = {"_id": user, "erasing": {"$ne": True}, "passwordHash": password_hash}
        with self.database.errors_translated():
            owner = self.database.users.find_one(current, {"username": 1, "createdAt": 1})
            if owner is None:
                return None
            # NOTE: the user's public fields are copied into the session (a username
            # never changes), so authenticating a request reads this one document.
            session = {"_id": ObjectId(session_id), "userId": user, "username": owner["username"],
                       "userCreatedAt": owner["createdAt"], "createdAt": now, "lastUsedAt": now,
                       "expiresAt": self._moment(expires_at)}
            self.database.sessions.insert_one(session)
            self.database.refresh_tokens.insert_one({"_id": refresh_hash, "sessionId": session["_id"], "userId": user,
                                                     "expiresAt": session["expiresAt"]})
            # Checked again after the insert: an erasure or a password change that began
            # meanwhile has ended the user's sessions already, and would miss this one.
            if self.database.users.find_one(current, {"_id": 1}) is None:
                self.database.sessions.delete_one({"_id": session["_id"]})
                return None
            self.housekeeping()
        return self._session_from_document(session)

    def housekeeping(self) -> None:
        """At start-up, then at most once per HOUSEKEEPING_INTERVAL (when a session
        starts): delete expired sessions and token hashes (the whole job on a server
        without TTL indexes, a sweep behind the TTL monitor on one with them), and finish
        any erasure a failure left half done."""
        if self.database.clock() < self._next_housekeeping:
            return
        self._next_housekeeping = self.database.clock() + HOUSEKEEPING_INTERVAL
        for collection in self._expiring_collections():
            collection.delete_many({"expiresAt": {"$lte": self._moment()}})
        for user in self.database.users.find({"erasing": True}, {"_id": 1}):
            self._finish_erasure(user["_id"])

    def session_user(self, session_id, user_id):
        if not (is_object_id(session_id) and is_object_id(user_id)):
            return None
        with self.database.errors_translated():
            document = self.database.sessions.find_one(self._live(_id=ObjectId(session_id), userId=ObjectId(user_id)))
        if document is None:
            return None
        return {"id": user_id, "username": document["username"], "createdAt": document["userCreatedAt"],
                "sessionLastUsedAt": document["lastUsedAt"]}

    def touch_session(self, session_id):
        with self.database.errors_translated():
            self.database.sessions.update_one({"_id": as_object_id(session_id)},
                                              {"$set": {"lastUsedAt": self.database.now()}})

    def rotate_refresh(self, session_id, old_hash, new_hash):
        if not is_object_id(session_id):
            return None
        session_key = ObjectId(session_id)
        with self.database.errors_translated():
            session = self.database.sessions.find_one(self._live(_id=session_key))
            issued = self.database.refresh_tokens.find_one({"_id": old_hash, "sessionId": session_key})
            if session is None or issued is None:
                return None  # ended, expired or unknown session; a token it never had
            try:
                # The compare-and-set: of any number of refreshes racing with this token,
                # exactly one inserts its hash here; the others, and any later use, fail.
                self.database.spent_tokens.insert_one({"_id": old_hash, "expiresAt": session["expiresAt"]})
            except DuplicateKeyError:
                return None
            self.database.refresh_tokens.insert_one({"_id": new_hash, "sessionId": session_key,
                                                     "userId": session["userId"], "expiresAt": session["expiresAt"]})
        return self._session_from_document(session)

    def refresh_token_issuer(self, session_id, refresh_hash):
        if not is_object_id(session_id):
            return None
        with self.database.errors_translated():
            issued = self.database.refresh_tokens.find_one({"_id": refresh_hash, "sessionId": ObjectId(session_id)},
                                                           {"userId": 1})
        return None if issued is None else str(issued["userId"])

    def end_session(self, session_id, user_id=None):
        if not is_object_id(session_id) or (user_id is not None and not is_object_id(user_id)):
            return False
        criteria = {"_id": ObjectId(session_id)}
        if user_id is not None:
            criteria["userId"] = ObjectId(user_id)
        with self.database.errors_translated():
            return self.database.sessions.delete_one(self._live(**criteria)).deleted_count == 1

    def end_sessions(self, user_id, *, keep=None):
        criteria = {"userId": as_object_id(user_id)}
        if keep is not None and is_object_id(keep):
            criteria["_id"] = {"$ne": ObjectId(keep)}
        with self.database.errors_translated():
            self.database.sessions.delete_many(criteria)

    def list_sessions(self, user_id):
        with self.database.errors_translated():
            documents = self.database.sessions.find(self._live(userId=as_object_id(user_id))).sort(
                [("createdAt", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)])
            return [self._session_from_document(document) for document in documents]

    @staticmethod
    def _session_from_document(document) -> dict:
        return {"id": str(document["_id"]), "userId": str(document["userId"]), "createdAt": document["createdAt"],
                "lastUsedAt": document["lastUsedAt"], "expiresAt": utc_timestamp(document["expiresAt"].timestamp())}

    # -- failed logins -------------------------------------------------------------
    def record_login_failure(self, key, at, expires_at):
        with self.database.errors_translated():
            self.database.login_failures.insert_one({"key": key, "at": at, "expiresAt": self._moment(expires_at)})

    def login_failures(self, key, limit):
        with self.database.errors_translated():
            found = self.database.login_failures.find({"key": key, "expiresAt": {"$gt": self._moment()}},
                                                      {"at": 1, "_id": 0})
            return [document["at"] for document in found.sort("at", -1).limit(limit)]

    def forget_login_failures(self, key):
        with self.database.errors_translated():
            self.database.login_failures.delete_many({"key": key})

    # -- erasure -------------------------------------------------------------------
    def erase_user(self, user_id):
        user = as_object_id(user_id)
        with self.database.errors_translated():
            # Step 1: no login (find_user skips an erasing user), then no session.
            self.database.users.update_one({"_id": user}, {"$set": {"erasing": True}})
            self.database.sessions.delete_many({"userId": user})
            self.database.refresh_tokens.delete_many({"userId": user})
            # Step 2, document by document (MongoDB has no transaction across them here):
            # a crash part-way leaves step 1 done, and the next start finishes the rest.
            self._finish_erasure(user)

    def _finish_erasure(self, user: ObjectId) -> None:
        # A request authenticated just before step 1 may still add a patient (its own
        # check in create_patient comes after the insert), so this goes round until none
        # is left.
        while patient_ids := self.database.patients.distinct("_id", {"ownerId": user}):
            for patient_id in patient_ids:
                try:
                    self._delete_patient(str(patient_id))  # the patient, its history, then its GridFS files
                except NotFound:
                    pass  # deleted meanwhile (a delete left half done is finished on the way)
        # The deleted patients' tombstones (storage/mongo/versions.py), and any version a
        # write that stopped half-way claimed meanwhile.
        self.database.patient_versions.delete_many({"ownerId": user})
        # Again at the end: a login that began before step 1 may have added a session.
        self.database.sessions.delete_many({"userId": user})
        self.database.refresh_tokens.delete_many({"userId": user})
        self.database.users.delete_one({"_id": user})
