"""The MongoDB store's audit trail: an append-only `audit` collection and each chain's head.

`MongoAuditLog` is a part that `MongoStore` (storage/mongo/store.py) holds; it works
through the store's `Database` (its collections and error translation). Documents:

    audit        {_id: the event's id, <every other field of STORED_FIELDS>}
    auditChains  {_id: the chain's id, firstSequence, previousHash, lastSequence, lastHash}

Events are only inserted (never updated), so nothing here depends on an update's
isolation, which a compatible server may not give (see storage/mongo/accounts.py).
A chain's head is made before its first event; a batch is one `insert_many`, and the
head moves after it. MongoDB has no transaction across the two here, so a crash
between them leaves events past the head: verify-audit accepts those when they chain
on correctly (the head says how far the chain at least reaches; it is what catches the
newest events being deleted).
"""

import pymongo
from bson import ObjectId
from pymongo.errors import BulkWriteError

from storage.base import PUBLIC_FIELDS, STORED_FIELDS
from storage.hash_chain import GENESIS
from storage.errors import Unavailable

DUPLICATE_KEY = 11000
HEAD_FIELDS = ("firstSequence", "previousHash", "lastSequence", "lastHash")
PUBLIC_PROJECTION = {name: 1 for name in PUBLIC_FIELDS if name != "id"}  # _id comes anyway


class MongoAuditLog:
    def __init__(self, database):
        self.database = database

    def create_indexes(self) -> None:
        self.database.audit.create_index([("chain", 1), ("sequence", 1)], unique=True, name="audit_by_chain")
        # Who may read an event: the user who acted, and the owner of the patient acted on.
        self.database.audit.create_index([("userId", 1), ("_id", -1)], name="audit_by_user")
        self.database.audit.create_index([("ownerId", 1), ("_id", -1)], name="audit_by_owner")
        # No index on patientId: as in storage/sqlite/audit_log.py, a patient's events are
        # found among its owner's, so each event costs two index writes, not three.

    def append_audit(self, chain, events):
        documents = [{"_id": ObjectId(event["id"]), **{name: event[name] for name in STORED_FIELDS if name != "id"}}
                     for event in events]
        with self.database.errors_translated():
            if events[0]["sequence"] == 1:
                # The head exists before the first event does, so a crash between the
                # insert and the head's move never leaves a chain that looks inserted.
                self.database.audit_chains.update_one({"_id": chain}, {"$setOnInsert": {
                    "firstSequence": 1, "previousHash": GENESIS, "lastSequence": 0, "lastHash": GENESIS}},
                    upsert=True)
            try:
                # ordered=False: after a failure half-way, a retry inserts the rest and
                # the events already stored only collide on their _id.
                self.database.audit.insert_many(documents, ordered=False)
            except BulkWriteError as exc:
                if (exc.details.get("writeConcernErrors")
                        or any(error["code"] != DUPLICATE_KEY for error in exc.details.get("writeErrors", []))):
                    raise Unavailable("the database did not take the audit events") from exc
            last = events[-1]
            self.database.audit_chains.update_one({"_id": chain}, {"$set": {
                "lastSequence": last["sequence"], "lastHash": last["hash"]}})

    def list_audit(self, viewer_id, *, limit, before=None, patient_id=None, action=None):
        criteria = {"$or": [{"userId": viewer_id}, {"ownerId": viewer_id}]}
        if before is not None:
            criteria["_id"] = {"$lt": ObjectId(before)}
        if patient_id is not None:
            criteria["patientId"] = patient_id
        if action is not None:
            criteria["action"] = action
        with self.database.errors_translated():
            found = self.database.audit.find(criteria, PUBLIC_PROJECTION)
            documents = found.sort("_id", pymongo.DESCENDING).limit(limit)
            return [_event_from_document(document, PUBLIC_FIELDS) for document in documents]

    def audit_chains(self):
        with self.database.errors_translated():
            return [{"chain": document["_id"], **{name: document[name] for name in HEAD_FIELDS}}
                    for document in self.database.audit_chains.find()]

    def audit_chain_ids(self):
        with self.database.errors_translated():
            return set(self.database.audit.distinct("chain"))

    def audit_events(self, chain):
        with self.database.errors_translated():
            for document in self.database.audit.find({"chain": chain}).sort("sequence", pymongo.ASCENDING):
                yield _event_from_document(document, STORED_FIELDS)

    def purge_audit(self, recorded_before):
        with self.database.errors_translated():
            for head in self.audit_chains():
                oldest = self.database.audit.find_one({"chain": head["chain"]}, sort=[("sequence", pymongo.ASCENDING)])
                if oldest is None or oldest["recorded"] >= recorded_before:
                    continue  # nothing old enough: found without reading the whole chain
                # Forward from the chain's start (events are in time order), so the work
                # is the old events', not the whole chain's.
                first_kept = self.database.audit.find_one(
                    {"chain": head["chain"], "recorded": {"$gte": recorded_before}},
                    sort=[("sequence", pymongo.ASCENDING)])
                newest = self.database.audit.find_one(
                    {"chain": head["chain"],
                     "sequence": {"$lt": first_kept["sequence"] if first_kept else head["lastSequence"] + 1}},
                    sort=[("sequence", pymongo.DESCENDING)])
                # The chain's start moves first: a crash before the delete leaves old
                # events that verify-audit skips, never a chain that seems cut. Only
                # forward: a process with an older cut-off must not move it back.
                moved = self.database.audit_chains.update_one(
                    {"_id": head["chain"], "firstSequence": {"$lte": newest["sequence"]}},
                    {"$set": {"firstSequence": newest["sequence"] + 1, "previousHash": newest["hash"]}})
                if moved.matched_count:
                    self.database.audit.delete_many({"chain": head["chain"], "sequence": {"$lte": newest["sequence"]}})


def _event_from_document(document, fields) -> dict:
    return {name: str(document["_id"]) if name == "id" else document.get(name) for name in fields}
