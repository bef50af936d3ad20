"""The embedded store: SQLite through the standard library's `sqlite3`, zero set-up.

One file, `DATA_DIR/meditrack.sqlite3`, in write-ahead-log mode so readers never
wait for a writer. Patients keep their PatientInput fields as one JSON document
(the same shape the MongoDB store keeps), beside the columns that queries need:
the owner, the id, and case-folded names for search.
"""

import json
import queue
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from storage.base import Store, name_keys, utc_timestamp
from storage.errors import Conflict, NotFound, Unavailable
from storage.ids import new_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    password_hash BLOB NOT NULL,
    created_at    TEXT NOT NULL
);
-- Usernames are unique ignoring case: 'Alice' and 'alice' are one account.
-- (lower() folds ASCII only, which is all a username may contain.)
CREATE UNIQUE INDEX IF NOT EXISTS users_by_username ON users (lower(username));

CREATE TABLE IF NOT EXISTS patients (
    id             TEXT PRIMARY KEY,
    owner_id       TEXT NOT NULL REFERENCES users (id),
    first_name_key TEXT NOT NULL,
    last_name_key  TEXT NOT NULL,
    fields         TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
-- Serves an owner's listing in id order: the cursor query below is one index range scan.
CREATE INDEX IF NOT EXISTS patients_by_owner ON patients (owner_id, id);
"""

PATIENT_COLUMNS = "id, owner_id, fields, created_at, updated_at"


class SQLiteStore(Store):
    name = "sqlite"

    def __init__(self, data_dir: Path, *, clock=time.time):
        data_dir.mkdir(parents=True, exist_ok=True)
        self._path = data_dir / "meditrack.sqlite3"
        self._clock = clock
        # NOTE: a pool of connections, each used by one thread at a time. A sqlite3
        # connection must not be shared by two threads at once, and opening one per
        # request would cost more than the query.
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        with self._connection() as db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no hidden BEGINs; transactions are explicit below.
        # timeout: wait up to 10 s for another writer instead of failing at once.
        db = sqlite3.connect(self._path, timeout=10, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        # NOTE: FULL makes every commit durable before we answer 201, even across a
        # power cut; NORMAL would be faster but could lose the last commits.
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    @contextmanager
    def _connection(self):
        """Borrow a connection; translate sqlite3's errors into the store's own."""
        try:
            db = self._idle.get_nowait()
        except queue.Empty:
            try:
                db = self._connect()
            except sqlite3.Error as exc:
                raise Unavailable("the database file cannot be opened") from exc
        try:
            yield db
        except sqlite3.IntegrityError as exc:
            raise Conflict("a record with this key already exists") from exc
        except sqlite3.Error as exc:
            raise Unavailable("the database cannot complete the request") from exc
        finally:
            if db.in_transaction:
                db.rollback()
            self._idle.put(db)

    @contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE takes the write lock up front, so the steps inside never
        fail half-way for want of it; leaving the block commits, an error rolls back."""
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")

    def _now(self) -> str:
        return utc_timestamp(self._clock())

    # -- users ---------------------------------------------------------------
    def create_user(self, username, password_hash):
        user = {"id": new_id(self._clock), "username": username, "createdAt": self._now()}
        with self._connection() as db:
            db.execute("INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?)",
                       (user["id"], username, password_hash, user["createdAt"]))
        return user

    def find_user(self, username):
        with self._connection() as db:
            row = db.execute("SELECT id, username, created_at, password_hash FROM users "
                             "WHERE lower(username) = lower(?)", (username,)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "username": row[1], "createdAt": row[2], "passwordHash": bytes(row[3])}

    def get_user(self, user_id):
        with self._connection() as db:
            row = db.execute("SELECT id, username, created_at FROM users WHERE id = ?", (user_id,)).fetchone()
        return None if row is None else {"id": row[0], "username": row[1], "createdAt": row[2]}

    # -- patients --------------------------------------------------------------
    def create_patient(self, owner_id, fields):
        patient_id, now = new_id(self._clock), self._now()
        with self._connection() as db:
            db.execute(f"INSERT INTO patients ({PATIENT_COLUMNS}, first_name_key, last_name_key) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (patient_id, owner_id, json.dumps(fields), now, now, *name_keys(fields)))
        return self._patient_document(patient_id, owner_id, fields, now, now)

    def get_patient(self, patient_id):
        with self._connection() as db:
            row = db.execute(f"SELECT {PATIENT_COLUMNS} FROM patients WHERE id = ?", (patient_id,)).fetchone()
        if row is None:
            raise NotFound("no patient with this id")
        return self._patient_from_row(row)

    def list_patients(self, owner_id, *, limit, after=None, name_contains=None):
        sql = f"SELECT {PATIENT_COLUMNS} FROM patients WHERE owner_id = ? AND id > ?"
        args = [owner_id, after or ""]
        if name_contains:
            # instr() compares literally: unlike LIKE, '%' and '_' in a search are
            # just characters, so user input can never act as a pattern.
            sql += " AND (instr(first_name_key, ?) > 0 OR instr(last_name_key, ?) > 0)"
            args += [name_contains, name_contains]
        sql += " ORDER BY id LIMIT ?"
        with self._connection() as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
        return [self._patient_from_row(row) for row in rows]

    def replace_patient(self, patient_id, fields):
        now = self._now()
        with self._transaction() as db:
            updated = db.execute("UPDATE patients SET fields = ?, first_name_key = ?, last_name_key = ?, "
                                 "updated_at = ? WHERE id = ?",
                                 (json.dumps(fields), *name_keys(fields), now, patient_id))
            if updated.rowcount == 0:
                raise NotFound("no patient with this id")
            row = db.execute(f"SELECT {PATIENT_COLUMNS} FROM patients WHERE id = ?", (patient_id,)).fetchone()
        return self._patient_from_row(row)

    def delete_patient(self, patient_id):
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM patients WHERE id = ?", (patient_id,))
            if deleted.rowcount == 0:
                raise NotFound("no patient with this id")

    def _patient_from_row(self, row) -> dict:
        patient_id, owner_id, fields, created_at, updated_at = row
        return self._patient_document(patient_id, owner_id, json.loads(fields), created_at, updated_at)

    @staticmethod
    def _patient_document(patient_id, owner_id, fields, created_at, updated_at) -> dict:
        return {"id": patient_id, "ownerId": owner_id, **fields, "reports": [],
                "createdAt": created_at, "updatedAt": updated_at}

    # -- lifecycle ---------------------------------------------------------------
    def ping(self):
        with self._connection() as db:
            db.execute("SELECT 1").fetchone()

    def close(self):
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
