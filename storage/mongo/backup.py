"""The MongoDB store's side of backup and restore (the format: storage/backup.py).

**Snapshot.** Each collection is read once, in the order users → sessions → patients
(with their versions) → audit chains → audit events, and every record is as it stood
when it was read. So a backup taken while the server writes is not one moment across
collections, and it keeps what would not fit together:

- a session or a patient is kept only if its user was read (a user who signed up
  after the users were read is left out with everything of theirs);
- a patient keeps the versions up to the one its document showed when read, and is
  left out if that version is gone by the time the versions are read (it was deleted);
- a report whose GridFS file is gone when its bytes are copied is left out (deleted);
- each chain's head is read before its events, and the events are read to the end:
  an event appended meanwhile is kept, and chains on from the head as verify-audit expects.

NOTE: why not one snapshot read? MongoDB 5.0+ can read a whole session at one point in
time (`readConcern: snapshot`), but only within its snapshot history window (by default
five minutes, `minSnapshotHistoryWindowInSeconds`), shorter than a large backup's
copy of report files; and FerretDB, the compatible server the tests run, has no
snapshot reads at all. Every acknowledged write made before the backup starts is in
it either way; what this order gives up is a single moment for writes made during it.

**Restore** writes users, sessions, patients (each with its versions and its GridFS
files), then the audit trail, with ordinary inserts: MongoDB has no transaction that
would take them all. A restore that fails part-way says so, and the database must be
dropped before the next attempt (the restore refuses a database that holds data).
"""

from contextlib import contextmanager
from datetime import datetime, timezone

import gridfs
from bson import ObjectId

from storage.backup import BackupError, ReportGone, Snapshot, bytes_missing, user_record
from storage.base import STORED_FIELDS, name_keys
from storage.mongo.audit_log import HEAD_FIELDS
from storage.mongo.reports import MongoReportWriter
from storage.mongo.versions import version_key

BATCH = 1000  # documents per insert_many on restore
CHUNK_SIZE = 1024 * 1024


@contextmanager
def snapshot(store, scratch):
    with store.database.errors_translated():
        yield MongoSnapshot(store.database, store.reports)


class MongoSnapshot(Snapshot):
    def __init__(self, database, reports):
        self._database = database
        self._reports = reports  # its kept_sha1s: a report's SHA-1 where its patient's document lacks one
        self._now = datetime.fromtimestamp(database.clock(), timezone.utc)
        self._users: set = set()  # the ids read: what sessions and patients are kept for

    def users(self):
        for document in self._database.users.find({"erasing": {"$ne": True}}).sort("_id", 1):
            self._users.add(document["_id"])
            yield user_record(str(document["_id"]), document["username"], bytes(document["passwordHash"]),
                              document["createdAt"])

    def sessions(self):
        # NOTE: the spent hashes are held in memory, one set for the whole backup: a
        # session's own tokens are then found without a query each.
        spent = {document["_id"] for document in self._database.spent_tokens.find({}, {"_id": 1})}
        issued = {}
        for token in self._database.refresh_tokens.find({"expiresAt": {"$gt": self._now}}, {"sessionId": 1}):
            issued.setdefault(token["sessionId"], []).append(token["_id"])
        live = {"expiresAt": {"$gt": self._now}}
        for document in self._database.sessions.find(live).sort("_id", 1):
            if document["userId"] not in self._users:
                continue
            tokens = sorted(issued.get(document["_id"], ()))
            current = [token for token in tokens if token not in spent]
            yield {"id": str(document["_id"]), "userId": str(document["userId"]), "createdAt": document["createdAt"],
                   "lastUsedAt": document["lastUsedAt"], "expiresAt": document["expiresAt"].timestamp(),
                   "refreshHash": current[-1] if current else None,
                   "spentRefreshHashes": [token for token in tokens if token in spent]}

    def patients(self):
        # Two cursors in the same order (patient id, then version), walked side by side.
        versions = self._database.patient_versions.find({"deleted": {"$ne": True}}).sort(
            [("patientId", 1), ("version", 1)])
        waiting = next(versions, None)
        for head in self._database.patients.find().sort("_id", 1):
            kept = []
            while waiting is not None and waiting["patientId"] <= head["_id"]:
                if waiting["patientId"] == head["_id"] and waiting["version"] <= head["version"]:
                    kept.append({"version": waiting["version"], "fields": waiting["fields"],
                                 "updatedAt": waiting["updatedAt"]})
                waiting = next(versions, None)
            if head["ownerId"] not in self._users or not kept or kept[-1]["version"] != head["version"]:
                continue
            yield {"id": str(head["_id"]), "ownerId": str(head["ownerId"]), "fields": head["fields"],
                   "version": head["version"], "createdAt": head["createdAt"], "updatedAt": head["updatedAt"],
                   "versions": kept, "reports": self._with_sha1(head["reports"])}

    def _with_sha1(self, reports: list[dict]) -> list[dict]:
        """A report stored before reports had their SHA-1 gets the one kept for it since."""
        lacking = [report["id"] for report in reports if report.get("sha1") is None]
        kept = self._reports.kept_sha1s(lacking) if lacking else {}
        return [report if report.get("sha1") is not None else {**report, "sha1": kept.get(report["id"])}
                for report in reports]

    def audit_chains(self):
        return [{"chain": document["_id"], **{name: document[name] for name in HEAD_FIELDS}}
                for document in self._database.audit_chains.find().sort("_id", 1)]

    def audit_events(self):
        for document in self._database.audit.find().sort([("chain", 1), ("sequence", 1)]):
            yield {name: str(document["_id"]) if name == "id" else document.get(name) for name in STORED_FIELDS}

    def report_bytes(self, report_id):
        try:
            yield from self._gridfs_or_object(report_id)
        except ReportGone:
            if self._database.patients.find_one({"reports.id": report_id}, {"_id": 1}) is not None:
                raise bytes_missing(report_id) from None  # still named: not deleted
            raise

    def _gridfs_or_object(self, report_id):
        if self._database.objects is not None:
            yield from self._database.objects.read(report_id)
            return
        file_id = ObjectId(report_id)
        try:
            source = self._database.files.open_download_stream(file_id)
        except gridfs.errors.NoFile:
            raise ReportGone(report_id) from None
        with source:
            while True:
                try:
                    chunk = source.read(CHUNK_SIZE)
                except gridfs.errors.CorruptGridFile:
                    # Chunks missing part-way: deleted while read (gone), or damaged (not).
                    if self._database.file_documents.find_one({"_id": file_id}, {"_id": 1}) is None:
                        raise ReportGone(report_id) from None
                    raise
                if not chunk:
                    return
                yield chunk


def is_empty(store) -> bool:
    database = store.database
    with database.errors_translated():
        return all(collection.find_one({}, {"_id": 1}) is None
                   for collection in (database.users, database.patients, database.audit, database.audit_chains))


def restore(store, reader) -> None:
    database = store.database
    with database.errors_translated():
        users = {}  # id → (username, createdAt): what each session copies in
        for batch in _batches(reader.records("users")):
            database.users.insert_many([
                {"_id": ObjectId(user["id"]), "username": user["username"], "usernameKey": user["username"].lower(),
                 "passwordHash": reader.password_hash(user), "createdAt": user["createdAt"]} for user in batch])
            users.update((user["id"], (user["username"], user["createdAt"])) for user in batch)
        for session in reader.records("sessions"):
            _insert_session(database, session, users)
        for batch in _batches(reader.records("patients")):
            for patient in batch:
                for report in patient["reports"]:
                    _insert_file(database, reader.report_path(report["id"]), report)
            database.patients.insert_many([_head(patient) for patient in batch])
            database.patient_versions.insert_many([_version(patient, version) for patient in batch
                                                   for version in patient["versions"]])
        for batch in _batches(reader.records("auditEvents")):
            database.audit.insert_many([{"_id": ObjectId(event["id"]), **{name: event[name] for name in STORED_FIELDS
                                                                          if name != "id"}} for event in batch])
        for head in reader.records("auditChains"):
            database.audit_chains.insert_one({"_id": head["chain"], **{name: head[name] for name in HEAD_FIELDS}})


def _batches(records):
    batch = []
    for record in records:
        batch.append(record)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _insert_session(database, session: dict, users: dict) -> None:
    if session["userId"] not in users:
        raise BackupError(f"session {session['id']} belongs to user {session['userId']}, who is not in the backup")
    username, user_created_at = users[session["userId"]]
    key, user = ObjectId(session["id"]), ObjectId(session["userId"])
    expires_at = datetime.fromtimestamp(session["expiresAt"], timezone.utc)
    database.sessions.insert_one({"_id": key, "userId": user, "username": username, "userCreatedAt": user_created_at,
                                  "createdAt": session["createdAt"], "lastUsedAt": session["lastUsedAt"],
                                  "expiresAt": expires_at})
    tokens = [*session["spentRefreshHashes"], *([session["refreshHash"]] if session["refreshHash"] else [])]
    if tokens:
        database.refresh_tokens.insert_many([{"_id": token, "sessionId": key, "userId": user,
                                              "expiresAt": expires_at} for token in tokens])
    if session["spentRefreshHashes"]:
        database.spent_tokens.insert_many([{"_id": token, "expiresAt": expires_at}
                                           for token in session["spentRefreshHashes"]])


def _head(patient: dict) -> dict:
    first_key, last_key = name_keys(patient["fields"])
    return {"_id": ObjectId(patient["id"]), "ownerId": ObjectId(patient["ownerId"]), "fields": patient["fields"],
            "firstNameKey": first_key, "lastNameKey": last_key, "reports": patient["reports"],
            "version": patient["version"], "createdAt": patient["createdAt"], "updatedAt": patient["updatedAt"]}


def _version(patient: dict, version: dict) -> dict:
    """A version document; only the current version lists the reports (the one a roll
    forward could apply: storage/mongo/versions.py). Older ones are read for their fields."""
    key = ObjectId(patient["id"])
    current = version["version"] == patient["version"]
    return {"_id": version_key(key, version["version"]), "patientId": key, "ownerId": ObjectId(patient["ownerId"]),
            "version": version["version"], "updatedAt": version["updatedAt"], "fields": version["fields"],
            "reports": patient["reports"] if current else []}


def _insert_file(database, source, report: dict) -> None:
    """The report's bytes as a GridFS file with the report's id, written as an upload writes
    one (or as its object, in the object store)."""
    if database.objects is not None:
        with open(source, "rb") as file:
            database.objects.put_file(report["id"], file, report["size"], report["sha256"])
        return
    writer = MongoReportWriter(database, attach=lambda patient_id, stored: None, report_id=report["id"])
    with writer, open(source, "rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            writer.write(chunk)
        writer.commit(patient_id=None, metadata={"sha1": report["sha1"]})  # the patient lists it already
