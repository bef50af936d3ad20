"""The SQLite store's audit trail: an append-only `audit` table and each chain's head.

`SQLiteAuditLog` is a part that `SQLiteStore` (storage/sqlite/store.py) holds; it works
through the store's `Database`. No statement here updates or deletes an event, except the retention
purge. The events are described in storage/base.py, the hash chain they form in
storage/hash_chain.py.
"""

from operator import itemgetter

from storage.base import PUBLIC_FIELDS, STORED_FIELDS
from storage.hash_chain import GENESIS

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id             TEXT PRIMARY KEY,
    recorded       TEXT NOT NULL,
    action         TEXT NOT NULL,
    outcome        INTEGER NOT NULL,
    user_id        TEXT,
    session_id     TEXT,
    client_address TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT,
    patient_id     TEXT,
    hash           TEXT NOT NULL,
    owner_id       TEXT,
    chain          TEXT NOT NULL,
    sequence       INTEGER NOT NULL,
    UNIQUE (chain, sequence)
);
-- Who may read an event: the user who acted, and the owner of the patient acted on.
-- Each index serves one half of list_audit's query, newest first.
-- NOTE: no index on patient_id. A patient's events are found by scanning its owner's,
-- newest first: slower for an owner with many patients, but every index costs each
-- event a write, and one keyed by patient is written all over the B-tree (measured
-- here with 500 patients: it doubled the cost of appending an event, 27 → 57 µs).
CREATE INDEX IF NOT EXISTS audit_by_user ON audit (user_id, id);
CREATE INDEX IF NOT EXISTS audit_by_owner ON audit (owner_id, id);
DROP INDEX IF EXISTS audit_by_patient;

-- Where each chain starts (after the retention purge) and how far it is known to reach.
CREATE TABLE IF NOT EXISTS audit_chains (
    chain          TEXT PRIMARY KEY,
    first_sequence INTEGER NOT NULL,
    previous_hash  TEXT NOT NULL,
    last_sequence  INTEGER NOT NULL,
    last_hash      TEXT NOT NULL
);
"""

# Field name in an event → column name in the table, in STORED_FIELDS order.
COLUMNS = {"id": "id", "recorded": "recorded", "action": "action", "outcome": "outcome",
           "userId": "user_id", "sessionId": "session_id", "clientAddress": "client_address", "requestId": "request_id",
           "resourceType": "resource_type", "resourceId": "resource_id", "patientId": "patient_id",
           "hash": "hash", "ownerId": "owner_id", "chain": "chain", "sequence": "sequence"}
assert tuple(COLUMNS) == STORED_FIELDS
PUBLIC_COLUMNS = ", ".join(COLUMNS[name] for name in PUBLIC_FIELDS)
STORED_COLUMNS = ", ".join(COLUMNS.values())
STORED_ROW = itemgetter(*STORED_FIELDS)  # an event → the tuple of its column values


class SQLiteAuditLog:
    def __init__(self, database):
        self.database = database

    def append_audit(self, chain, events):
        rows = [STORED_ROW(event) for event in events]
        last = events[-1]

        def append(db):
            # ON CONFLICT (id) DO NOTHING: a batch retried after an unclear failure is
            # stored once (any other constraint still fails loudly).
            db.executemany(f"INSERT INTO audit ({STORED_COLUMNS}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                           "ON CONFLICT (id) DO NOTHING", rows)
            db.execute("INSERT INTO audit_chains VALUES (?, 1, ?, ?, ?) ON CONFLICT (chain) DO UPDATE "
                       "SET last_sequence = excluded.last_sequence, last_hash = excluded.last_hash "
                       "WHERE excluded.last_sequence > last_sequence",
                       (chain, GENESIS, last["sequence"], last["hash"]))

        # NOTE: a unit in the same group commits as the patient writes (storage/sqlite/writer.py):
        # under load the audit's batch shares their sync instead of paying for its own.
        self.database.write(append)

    def list_audit(self, viewer_id, *, limit, before=None, patient_id=None, action=None):
        conditions, parameters = [], []
        for condition, value in (("id < ?", before), ("patient_id = ?", patient_id), ("action = ?", action)):
            if value is not None:
                conditions.append(condition)
                parameters.append(value)
        where = "".join(f" AND {condition}" for condition in conditions)
        # NOTE: "user_id = ? OR owner_id = ?" would make SQLite collect and sort every
        # match. Two scans, each in id order on its own index and stopped at `limit`,
        # merged, give the newest `limit` of either kind at the cost of 2 × limit rows.
        query = (f"SELECT {PUBLIC_COLUMNS} FROM audit WHERE id IN ("
                 f"SELECT id FROM (SELECT id FROM audit WHERE user_id = ?{where} ORDER BY id DESC LIMIT ?) UNION "
                 f"SELECT id FROM (SELECT id FROM audit WHERE owner_id = ?{where} ORDER BY id DESC LIMIT ?)) "
                 "ORDER BY id DESC LIMIT ?")
        with self.database.read() as db:
            rows = db.execute(query, (viewer_id, *parameters, limit, viewer_id, *parameters, limit, limit))
            return [dict(zip(PUBLIC_FIELDS, row)) for row in rows]

    def audit_chains(self):
        with self.database.read() as db:
            rows = db.execute("SELECT chain, first_sequence, previous_hash, last_sequence, last_hash "
                              "FROM audit_chains").fetchall()
        return [dict(zip(("chain", "firstSequence", "previousHash", "lastSequence", "lastHash"), row))
                for row in rows]

    def audit_chain_ids(self):
        with self.database.read() as db:
            return {row[0] for row in db.execute("SELECT DISTINCT chain FROM audit")}

    def audit_events(self, chain):
        after = 0
        while True:  # a page at a time: a long chain is never all in memory
            with self.database.read() as db:
                rows = db.execute(f"SELECT {STORED_COLUMNS} FROM audit WHERE chain = ? AND sequence > ? "
                                  "ORDER BY sequence LIMIT 1000", (chain, after)).fetchall()
            if not rows:
                return
            for row in rows:
                yield dict(zip(STORED_FIELDS, row))
            after = rows[-1][-1]

    def purge_audit(self, recorded_before):
        for head in self.audit_chains():
            with self.database.read() as db:
                oldest = db.execute("SELECT recorded FROM audit WHERE chain = ? ORDER BY sequence LIMIT 1",
                                    (head["chain"],)).fetchone()
            if oldest is None or oldest[0] >= recorded_before:
                continue  # nothing old enough: found without reading the whole chain
            def purge(db, head=head):
                # Forward from the chain's start (events are in time order), so the work
                # is the old events', not the whole chain's.
                first_kept = db.execute("SELECT sequence FROM audit WHERE chain = ? AND recorded >= ? "
                                        "ORDER BY sequence LIMIT 1", (head["chain"], recorded_before)).fetchone()
                last_purged = db.execute(
                    "SELECT sequence, hash FROM audit WHERE chain = ? AND sequence < ? ORDER BY sequence DESC LIMIT 1",
                    (head["chain"], first_kept[0] if first_kept else head["lastSequence"] + 1)).fetchone()
                if last_purged is None:
                    return  # another process purged them first
                # The chain now starts after the purged events: verify-audit begins there.
                db.execute("UPDATE audit_chains SET first_sequence = ?, previous_hash = ? WHERE chain = ?",
                           (last_purged[0] + 1, last_purged[1], head["chain"]))
                db.execute("DELETE FROM audit WHERE chain = ? AND sequence <= ?", (head["chain"], last_purged[0]))

            self.database.write(purge)
