"""`open_test_store`: a fresh store of either kind, for tests that talk to the Store
interface directly (the store contract, sessions and erasure). The `store` fixture in
tests/conftest.py opens one on a FakeClock that starts at `START`. `user_row_exists`
looks beneath the interface, where a test must see what the interface hides."""

from storage.base import Store
from tests.support.mongodb import fresh_mongodb_uri
from tests.support.objects import S3_ENDPOINT, fresh_bucket

START = 1_700_000_000.0  # 2023-11-14T22:13:20Z: where a store's FakeClock starts


def open_test_store(kind: str, tmp_path, clock) -> Store:
    """Report bytes in a fresh bucket under `make test-s3`, else in the store's own place."""
    objects = fresh_bucket() if S3_ENDPOINT else None
    if kind == "sqlite":
        from storage.sqlite import SQLiteStore
        return SQLiteStore(tmp_path / "data", clock=clock, objects=objects)
    if kind == "mongodb":
        from storage.mongo import MongoStore
        return MongoStore(fresh_mongodb_uri(), clock=clock, objects=objects)
    raise ValueError(f"no test set-up for store {kind!r}")


def user_row_exists(store: Store, user_id: str) -> bool:
    """Whether the user's row is there at all, erasing or not: find_user
    hides a user being erased, so an erasure stopped after its first step would pass it."""
    if store.name == "sqlite":
        with store.database.read() as db:
            return db.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is not None
    from bson import ObjectId
    return store.database.users.count_documents({"_id": ObjectId(user_id)}) > 0


def tamper_with_audit(store: Store, how: str, event: dict) -> None:
    """Change the audit trail the way someone with the database in hand could, beneath
    the interface (which offers no way to): "edit" an event's outcome (one more), "delete" it, or
    "insert" `event` as a new one."""
    if store.name == "sqlite":
        from storage.sqlite.audit_log import COLUMNS
        with store.database.read() as db:
            if how == "edit":
                db.execute("UPDATE audit SET outcome = outcome + 1 WHERE id = ?", (event["id"],))
            elif how == "delete":
                db.execute("DELETE FROM audit WHERE id = ?", (event["id"],))
            else:
                db.execute(f"INSERT INTO audit ({', '.join(COLUMNS.values())}) VALUES "
                           f"({', '.join('?' * len(COLUMNS))})", tuple(event[name] for name in COLUMNS))
        return
    from bson import ObjectId
    if how == "edit":
        store.database.audit.update_one({"_id": ObjectId(event["id"])}, {"$inc": {"outcome": 1}})
    elif how == "delete":
        store.database.audit.delete_one({"_id": ObjectId(event["id"])})
    else:
        store.database.audit.insert_one({"_id": ObjectId(event["id"]), **{k: v for k, v in event.items() if k != "id"}})


def rewrite_audit_event(store: Store, event: dict) -> None:
    """Overwrite a stored event (found by id) with `event`'s fields, hash included."""
    if store.name == "sqlite":
        from storage.sqlite.audit_log import COLUMNS
        with store.database.read() as db:
            db.execute(f"UPDATE audit SET {', '.join(f'{column} = ?' for column in COLUMNS.values())} WHERE id = ?",
                       (*(event[name] for name in COLUMNS), event["id"]))
        return
    from bson import ObjectId
    store.database.audit.update_one({"_id": ObjectId(event["id"])},
                            {"$set": {name: value for name, value in event.items() if name != "id"}})


def renumber_audit_chain(store: Store, chain: str, from_sequence: int) -> None:
    """Shift a chain's events from `from_sequence` on up by one, making room for an insert."""
    if store.name == "sqlite":
        with store.database.read() as db:
            # Two steps, so the unique (chain, sequence) index never sees two at once.
            db.execute("UPDATE audit SET sequence = -sequence - 1 WHERE chain = ? AND sequence >= ?",
                       (chain, from_sequence))
            db.execute("UPDATE audit SET sequence = -sequence WHERE chain = ? AND sequence < 0", (chain,))
        return
    for document in store.database.audit.find({"chain": chain, "sequence": {"$gte": from_sequence}}).sort("sequence", -1):
        store.database.audit.update_one({"_id": document["_id"]}, {"$set": {"sequence": document["sequence"] + 1}})


def stored_version_count(store: Store, patient_id: str) -> int:
    """How many versions of the patient's data are stored at all: what a delete must bring
    to 0. (A MongoDB delete leaves a tombstone, which holds no patient data: not counted.)"""
    if store.name == "sqlite":
        with store.database.read() as db:
            return db.execute("SELECT count(*) FROM patient_versions WHERE patient_id = ?", (patient_id,)).fetchone()[0]
    from bson import ObjectId
    return store.database.patient_versions.count_documents({"patientId": ObjectId(patient_id), "deleted": {"$ne": True}})


def reopen(store: Store, clock) -> Store:
    """The same data opened by a new store, as a restart would: its start-up work runs."""
    store.close()
    if store.name == "sqlite":
        from storage.sqlite import SQLiteStore
        objects = store.reports.objects
        return SQLiteStore(store.reports.directory.parent, clock=clock, objects=objects and objects.objects)
    from storage.mongo import MongoStore
    objects = store.database.objects
    return MongoStore(store.uri, clock=clock, objects=objects and objects.objects)


def forget_report_sha1(store: Store, report_id: str) -> None:
    """Make a report look as it did before reports kept their SHA-1, beneath the interface."""
    if store.name == "sqlite":
        with store.database.read() as db:
            db.execute("UPDATE reports SET sha1 = NULL WHERE id = ?", (report_id,))
        return
    from bson import ObjectId
    for collection in (store.database.patients, store.database.patient_versions):
        for document in list(collection.find({"reports.id": report_id})):
            reports = [{name: value for name, value in report.items() if name != "sha1" or report["id"] != report_id}
                       for report in document["reports"]]
            collection.update_one({"_id": document["_id"]}, {"$set": {"reports": reports}})
    store.database.file_documents.update_one({"_id": ObjectId(report_id)}, {"$unset": {"metadata": ""}})
