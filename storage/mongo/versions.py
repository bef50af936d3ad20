"""The MongoDB store's patient versions: every change is an insert first, then an update.

`MongoVersions` is a part that `MongoStore` (storage/mongo/store.py) holds; it works through
the store's `Database`. Documents:

    patientVersions  {_id: "<patient id>/<version>", patientId, ownerId, version, updatedAt,
                      fields, reports}
                     or, once the patient is deleted, a tombstone without its data:
                     {_id, patientId, ownerId, version, updatedAt, deleted: true}
                     (the delete's own version is `pending: true` until the delete is done)

A patient's history is the log of its versions; the `patients` document is the
newest of them plus what queries need (the "head"). A change is made in two steps:

1. **Claim** the next version: insert its document under the unique _id
   "<patient>/<version + 1>". Of any number of writers that read version N, exactly
   one inserts "<patient>/<N + 1>"; every other insert fails on the duplicate key.
   This insert *is* the compare-and-set behind If-Match: the check and the write are
   one atomic step, never a read followed by a write.
2. **Apply** it: `$set` the head to that version's state if the head is still older
   (`version: {$lt: N + 1}`).

NOTE: why not one `update_one({_id, version: N}, …)`, which MongoDB itself runs
atomically? Because a MongoDB-compatible server need not: FerretDB 1.x runs a filtered
update as a read and a later write (see storage/mongo/accounts.py), and sixteen
writers naming one version could all "win". An insert under a unique _id is the one
atomic step every such server keeps. On such a server a slow apply of version N + 1
can even land after version N + 2's; so every writer, once its own version is
applied, applies any newer one it finds, and the head is back at the newest before
that writer answers (a reader may see the older one for that moment).

A writer that stopped between the steps (a crash, a lost connection) leaves a claimed
version that is not applied yet. Whoever next fails to claim that number applies it
for them ("rolls it forward"): a version's document holds the whole state the head
should show, so applying it twice is harmless. Until then readers see the version
before it, as they would while the writer was still at work; `list_versions` and
`get_version` are only ever asked about versions up to the head's. An upload's
version found unapplied at start-up is applied by the report sweep (storage/mongo/store.py).

A delete claims a version too, so a conditional delete and a conditional update can
never both succeed. It deletes the head, then turns every version into a tombstone:
the patient's data goes, the version numbers stay taken, so no write that read the
patient before the delete can claim a number and leave a version of a deleted
patient behind. Whoever meets a delete's claim finishes that delete (it is idempotent)
and is told the patient is gone; deletes a crash cut off (still `pending`) are
finished when the store next opens. An owner's erasure removes the tombstones.
"""

from pymongo.errors import DuplicateKeyError, PyMongoError

from storage.base import name_keys, utc_timestamp
from storage.errors import NotFound, StoreError, Unavailable, VersionMismatch
from storage.mongo.accounts import as_object_id

# A writer that loses the race for a version reads the new one and tries again (unless
# it named a version, when it is told at once). Each retry means another writer
# succeeded, so this many in a row only happens under a storm of writes to one patient.
WRITE_ATTEMPTS = 50
MIGRATION = "patient-versions"  # the schemaMigrations document once old patients have versions


class ClaimedNotApplied(Unavailable):
    """The change's version was claimed but applying it failed: it is in the log, and
    the next write to the patient applies it. The client is told 503 all the same,
    since it cannot know when that will be; an upload keeps its file."""


def version_key(patient_key, version: int) -> str:
    return f"{patient_key}/{version}"


class MongoVersions:
    """The versions protocol on `database` (whose `delete_file` removes a deleted
    patient's report files)."""

    def __init__(self, database):
        self.database = database

    def create_indexes(self) -> None:
        versions = self.database.patient_versions
        versions.create_index([("patientId", 1), ("version", 1)], name="versions_by_patient")
        versions.create_index("ownerId", name="versions_by_owner")  # an erasure removes the tombstones
        versions.create_index("pending", name="versions_pending")   # deletes to finish at start-up

    def write_version(self, patient_id: str, expected_version: int | None, change) -> tuple[dict, dict]:
        """Claim and apply the patient's next version; `change(head)` says what it holds:
        {"fields", "reports"}, or {"deleted": True, "pending": True}. Returns (the
        version, the head it was made from)."""
        key = as_object_id(patient_id)
        for _ in range(WRITE_ATTEMPTS):
            head = self.database.patients.find_one({"_id": key})
            if head is None:
                raise NotFound("no patient with this id")
            if expected_version is not None and head["version"] != expected_version:
                raise VersionMismatch("the patient has changed since the version the write named")
            version = head["version"] + 1
            record = {"_id": version_key(key, version), "patientId": key, "ownerId": head["ownerId"],
                      "version": version, "updatedAt": self.database.now(), **change(head)}
            try:
                self.database.patient_versions.insert_one(record)  # step 1, the claim
            except DuplicateKeyError:
                self._roll_forward(key, version)  # taken: make sure the head shows it, then look again
                continue
            try:
                self._apply_version(record)  # step 2
            except (PyMongoError, Unavailable) as exc:
                raise ClaimedNotApplied("the change is recorded but not yet applied") from exc
            self._catch_up(key, version)
            return record, head
        raise Unavailable("the patient is being changed too often to write now")

    def _apply_version(self, record: dict) -> None:
        """Make the head show this version, if it does not yet; NotFound if the head is
        gone (this version then belongs to nothing, and goes)."""
        key = record["patientId"]
        if record.get("deleted"):
            self._finish_delete(record)
            return
        first_key, last_key = name_keys(record["fields"])
        updated = self.database.patients.update_one({"_id": key, "version": {"$lt": record["version"]}}, {"$set": {
            "fields": record["fields"], "firstNameKey": first_key, "lastNameKey": last_key,
            "reports": record["reports"], "version": record["version"], "updatedAt": record["updatedAt"]}})
        if updated.matched_count == 0 and self.database.patients.find_one({"_id": key}, {"_id": 1}) is None:
            self.database.patient_versions.delete_one({"_id": record["_id"], "deleted": {"$ne": True}})
            raise NotFound("no patient with this id")

    def _catch_up(self, key, version: int) -> None:
        """After a writer's own version is applied: apply any newer one already claimed
        (see the NOTE above). Best effort — the writer's change is made either way."""
        try:
            for newer in range(version + 1, version + 1 + WRITE_ATTEMPTS):
                record = self.database.patient_versions.find_one({"_id": version_key(key, newer)})
                if record is None or record.get("deleted"):
                    return
                self._apply_version(record)
        except (PyMongoError, StoreError):
            pass

    def _finish_delete(self, record: dict) -> None:
        """The head, then the patient's data in every version, then the files; safe to
        repeat, by the deleter or by anyone who meets its claim."""
        key = record["patientId"]
        head = self.database.patients.find_one_and_delete({"_id": key, "version": {"$lt": record["version"]}})
        # After the head: a crash between the two leaves versions with data, and a
        # `pending` delete that the next start finishes.
        self.database.patient_versions.update_many({"patientId": key, "deleted": {"$ne": True}},
                                                   {"$set": {"deleted": True}, "$unset": {"fields": "", "reports": ""}})
        for report in head["reports"] if head else ():
            self.database.delete_file(report["id"])
        self.database.patient_versions.update_one({"_id": record["_id"]}, {"$unset": {"pending": ""}})

    def _roll_forward(self, key, version: int) -> None:
        """Apply a version someone else claimed; NotFound if it is a delete (finished here)."""
        record = self.database.patient_versions.find_one({"_id": version_key(key, version)})
        if record is None:
            return  # its claimant took it back: the patient was gone
        self._apply_version(record)  # NotFound: the patient is gone; the caller is told so
        if record.get("deleted"):
            raise NotFound("no patient with this id")

    def record_first_version(self, document: dict) -> None:
        self.database.patient_versions.insert_one({
            "_id": version_key(document["_id"], 1), "patientId": document["_id"], "ownerId": document["ownerId"],
            "version": 1, "updatedAt": document["updatedAt"], "fields": document["fields"],
            "reports": document["reports"]})

    def list_versions(self, patient_id, *, below, limit):
        with self.database.errors_translated():
            older = {"patientId": as_object_id(patient_id), "version": {"$lt": below}}
            found = self.database.patient_versions.find(older, {"version": 1, "updatedAt": 1})
            documents = found.sort("version", -1).limit(limit)
            return [{"version": document["version"], "updatedAt": document["updatedAt"]} for document in documents]

    def get_version(self, patient_id, version):
        with self.database.errors_translated():
            document = self.database.patient_versions.find_one({"_id": version_key(as_object_id(patient_id), version)})
        if document is None or document.get("deleted"):
            raise NotFound("this patient has no such version")
        return {"version": version, **document["fields"], "updatedAt": document["updatedAt"]}

    def apply_claimed_version_listing(self, report_id: str) -> bool:
        """For the start-up sweep, about a file no patient names: if a version claimed but
        never applied lists it (an upload cut off between its two steps), apply that
        version now, as the next write to the patient would, and say so: the file stays."""
        for record in self.database.patient_versions.find({"reports.id": report_id, "deleted": {"$ne": True}}):
            head = self.database.patients.find_one({"_id": record["patientId"]}, {"version": 1})
            if head is not None and head["version"] < record["version"]:
                try:
                    self._apply_version(record)
                except NotFound:
                    return False
                return True
        return False

    def finish_versions(self) -> None:
        """At start-up: give patients stored before versions existed their version 1
        (once per database), and finish deletes a crash cut off half-way."""
        if self.database.migrations.find_one({"_id": MIGRATION}) is None:
            for document in self.database.patients.find({"version": {"$exists": False}}):
                try:
                    self.record_first_version(document)
                except DuplicateKeyError:
                    pass  # another process starting at the same time got here first
                self.database.patients.update_one({"_id": document["_id"], "version": {"$exists": False}},
                                                  {"$set": {"version": 1}})
            try:
                self.database.migrations.insert_one({"_id": MIGRATION})
            except DuplicateKeyError:
                pass
        # NOTE: only deletes older than a minute, so one another process is making right
        # now is left to it (finishing it too would be harmless, only wasted).
        stale = {"pending": True, "updatedAt": {"$lt": utc_timestamp(self.database.clock() - 60)}}
        for record in list(self.database.patient_versions.find(stale)):
            self._finish_delete(record)
