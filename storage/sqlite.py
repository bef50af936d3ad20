"""The embedded store: SQLite through the standard library's `sqlite3`, zero set-up.

One file, `DATA_DIR/meditrack.sqlite3`, in write-ahead-log mode so readers never
wait for a writer. Patients keep their PatientInput fields as one JSON document
(the same shape the MongoDB store keeps), beside the columns that queries need:
the owner, the id, and case-folded names for search.

Report bytes live in files, `DATA_DIR/reports/<report id>`, named by a generated id
and never by anything a client sent. An upload is written to `reports/tmp/`, fsynced,
renamed into place, and only then is its row committed: a crash at any point leaves
either nothing or a file that no row names, and the start-up sweep removes both
temp files and such orphans. A row never names a file that is not there.

Sessions live in their own table, keyed by id; a refresh is a compare-and-set on the
stored hash of the refresh token. An account erasure first marks the user (no login,
no session from then on), then deletes its patients one by one, then the user; a start
finishes any erasure a crash interrupted.
"""

import json
import os
import queue
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from storage.base import ReportChunks, ReportWriter, Store, name_keys, utc_timestamp
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

CREATE TABLE IF NOT EXISTS reports (
    id           TEXT PRIMARY KEY,
    patient_id   TEXT NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    description  TEXT,
    uploaded_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_by_patient ON reports (patient_id, id);

-- A session per login. Only the SHA-256 of its current refresh token is kept, so a
-- copy of this file lets no one refresh. The user's public fields are copied in (a
-- username never changes), so authenticating a request reads this one row; expires_at
-- is in seconds since the epoch, the one time every request compares.
CREATE TABLE IF NOT EXISTS sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    username        TEXT NOT NULL,
    user_created_at TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    last_used_at    TEXT NOT NULL,
    refresh_hash    TEXT NOT NULL,
    expires_at      REAL NOT NULL,
    ended_at        TEXT
);
-- A user's sessions (listing them, ending them all), and the purge of expired ones.
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id, created_at);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);

-- Every refresh token a session has handed out (its SHA-256), spent or current: a token
-- presented a second time is told apart from one that was never ours.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    hash       TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS refresh_tokens_by_session ON refresh_tokens (session_id);
"""

# Expired sessions are deleted, and erasures a failure interrupted are finished, at
# start-up and then at most this often (seconds): see _housekeeping.
HOUSEKEEPING_INTERVAL = 3600

PATIENT_COLUMNS = "id, owner_id, fields, created_at, updated_at"
REPORT_COLUMNS = "id, filename, content_type, size, sha256, description, uploaded_at"
REPORT_FIELDS = ("id", "filename", "contentType", "size", "sha256", "description", "uploadedAt")
# A patient with its reports in one query: the correlated subquery folds the patient's
# report rows, in id order, into one JSON array (SQLite's JSON1 functions), so a read
# is a single round trip however many reports there are.
REPORTS_AS_JSON = ("(SELECT json_group_array(json_object(" +
                   ", ".join(f"'{field}', {column}" for field, column in
                             zip(REPORT_FIELDS, REPORT_COLUMNS.split(", "))) +
                   ")) FROM (SELECT * FROM reports WHERE patient_id = patients.id ORDER BY id))")
SELECT_PATIENTS = f"SELECT {PATIENT_COLUMNS}, {REPORTS_AS_JSON} FROM patients"
SESSION_COLUMNS = "id, user_id, created_at, last_used_at, expires_at"
SESSION_FIELDS = ("id", "userId", "createdAt", "lastUsedAt", "expiresAt")


class SQLiteStore(Store):
    name = "sqlite"

    def __init__(self, data_dir: Path, *, clock=time.time):
        self._path = data_dir / "meditrack.sqlite3"
        self.reports_dir = data_dir / "reports"
        self.temp_dir = self.reports_dir / "tmp"
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        # NOTE: a pool of connections, each used by one thread at a time. A sqlite3
        # connection must not be shared by two threads at once, and opening one per
        # request would cost more than the query.
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        with self._connection() as db:
            db.executescript(SCHEMA)
            _add_column_if_missing(db, "users", "erasing", "INTEGER NOT NULL DEFAULT 0")
        self._next_housekeeping = 0.0
        self._housekeeping()
        self._sweep_report_files()

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
            # Which constraint failed is told by SQLite's extended result code, not by
            # its message text, which is meant for people and may change.
            if exc.sqlite_errorname in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
                raise Conflict("a record with this key already exists") from exc
            if exc.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
                # The parent row (a report's patient, a patient's owner) is gone, e.g.
                # deleted while an upload ran; MongoDB's store answers that case alike.
                raise NotFound("the patient or user this record belongs to does not exist") from exc
            # NOTE: any other constraint (NOT NULL, CHECK) fails only on a bug, in this
            # module's SQL or in a caller passing None where the contract wants a value.
            # Unavailable would tell the client to retry and Conflict to change its
            # request; neither would help. Re-raised, it becomes a 500 whose logged
            # traceback names the constraint (SQLite's message names columns, not values).
            raise
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
                             "WHERE lower(username) = lower(?) AND erasing = 0", (username,)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "username": row[1], "createdAt": row[2], "passwordHash": bytes(row[3])}

    def get_user(self, user_id):
        with self._connection() as db:
            row = db.execute("SELECT id, username, created_at FROM users WHERE id = ? AND erasing = 0",
                             (user_id,)).fetchone()
        return None if row is None else {"id": row[0], "username": row[1], "createdAt": row[2]}

    def set_password(self, user_id, password_hash):
        with self._connection() as db:
            db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))

    def erase_user(self, user_id):
        # Step 1, committed on its own: the account can no longer log in (find_user
        # skips it) or start a session, and its sessions are gone, so no token works.
        with self._transaction() as db:
            db.execute("UPDATE users SET erasing = 1 WHERE id = ?", (user_id,))
            db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
        # Step 2: a crash part-way leaves step 1 done, and the next start finishes the rest.
        self._finish_erasure(user_id)

    def _finish_erasure(self, user_id: str) -> None:
        # NOTE: patient by patient, each in a short transaction of its own (with its files
        # unlinked after it commits, as in any delete): a large account's erasure never
        # holds the write lock for long, so other users' writes go on meanwhile. A request
        # authenticated just before step 1 may still add a patient, so this goes round
        # until none is left; after step 1 create_patient refuses the owner.
        while patient_ids := self._patient_ids_of(user_id):
            for patient_id in patient_ids:
                try:
                    self.delete_patient(patient_id)
                except NotFound:
                    pass  # deleted meanwhile: just as good
        with self._connection() as db:
            db.execute("DELETE FROM users WHERE id = ?", (user_id,))  # its sessions cascade

    def _patient_ids_of(self, owner_id: str) -> list[str]:
        with self._connection() as db:
            return [row[0] for row in db.execute("SELECT id FROM patients WHERE owner_id = ?", (owner_id,))]

    def _finish_interrupted_erasures(self) -> None:
        with self._connection() as db:
            user_ids = [row[0] for row in db.execute("SELECT id FROM users WHERE erasing = 1")]
        for user_id in user_ids:
            self._finish_erasure(user_id)

    # -- sessions ----------------------------------------------------------------
    def create_session(self, user_id, refresh_hash, expires_at, *, password_hash):
        now, session_id = self._now(), new_id(self._clock)
        with self._transaction() as db:
            # NOTE: the user is read in the INSERT itself, so no session starts for a user
            # being erased, or whose password changed after this login checked it (the
            # password change would otherwise miss this session when it ends the others).
            inserted = db.execute(
                "INSERT INTO sessions (id, user_id, username, user_created_at, created_at, last_used_at, "
                "refresh_hash, expires_at) SELECT ?, id, username, created_at, ?, ?, ?, ? FROM users "
                "WHERE id = ? AND erasing = 0 AND password_hash = ?",
                (session_id, now, now, refresh_hash, expires_at, user_id, password_hash))
            if inserted.rowcount == 0:
                return None
            db.execute("INSERT INTO refresh_tokens (hash, session_id) VALUES (?, ?)", (refresh_hash, session_id))
        self._housekeeping()
        return {"id": session_id, "userId": user_id, "createdAt": now, "lastUsedAt": now,
                "expiresAt": utc_timestamp(expires_at)}

    def session_user(self, session_id, user_id):
        # NOTE: one row answers "is the session alive?", and so also "does its user
        # exist?": deleting a user deletes its sessions (a cascade), and an erasure
        # deletes them in its first step. Authentication stays one indexed look-up.
        with self._connection() as db:
            row = db.execute("SELECT username, user_created_at, last_used_at FROM sessions "
                             "WHERE id = ? AND user_id = ? AND ended_at IS NULL AND expires_at > ?",
                             (session_id, user_id, self._clock())).fetchone()
        if row is None:
            return None
        return {"id": user_id, "username": row[0], "createdAt": row[1], "sessionLastUsedAt": row[2]}

    def touch_session(self, session_id):
        with self._connection() as db:
            db.execute("UPDATE sessions SET last_used_at = ? WHERE id = ?", (self._now(), session_id))

    def rotate_refresh(self, session_id, old_hash, new_hash):
        now = self._clock()
        with self._transaction() as db:
            # NOTE: the old hash is in the WHERE clause: of refreshes racing with one token,
            # SQLite's write lock lets the first UPDATE match and the others find nothing.
            updated = db.execute("UPDATE sessions SET refresh_hash = ? "
                                 "WHERE id = ? AND refresh_hash = ? AND ended_at IS NULL AND expires_at > ?",
                                 (new_hash, session_id, old_hash, now))
            if updated.rowcount == 0:
                return None
            db.execute("INSERT INTO refresh_tokens (hash, session_id) VALUES (?, ?)", (new_hash, session_id))
            row = db.execute(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return _session_from_row(row)

    def refresh_token_issued(self, session_id, refresh_hash):
        with self._connection() as db:
            return db.execute("SELECT 1 FROM refresh_tokens WHERE hash = ? AND session_id = ?",
                              (refresh_hash, session_id)).fetchone() is not None

    def end_session(self, session_id, user_id=None):
        sql = "UPDATE sessions SET ended_at = ? WHERE id = ? AND ended_at IS NULL AND expires_at > ?"
        args = [self._now(), session_id, self._clock()]
        if user_id is not None:
            sql += " AND user_id = ?"
            args.append(user_id)
        with self._connection() as db:
            return db.execute(sql, args).rowcount == 1

    def end_sessions(self, user_id, *, keep=None):
        with self._connection() as db:
            db.execute("UPDATE sessions SET ended_at = ? WHERE user_id = ? AND ended_at IS NULL AND id != ?",
                       (self._now(), user_id, keep or ""))

    def list_sessions(self, user_id):
        with self._connection() as db:
            rows = db.execute(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ? AND ended_at IS NULL "
                              "AND expires_at > ? ORDER BY created_at DESC, id DESC",
                              (user_id, self._clock())).fetchall()
        return [_session_from_row(row) for row in rows]

    def _housekeeping(self) -> None:
        """At start-up, then at most once per HOUSEKEEPING_INTERVAL (when a session
        starts): delete expired sessions (ended ones too, by then; their refresh token
        hashes go with them), so the table does not grow without bound; and finish any
        erasure a failure left half done."""
        if self._clock() < self._next_housekeeping:
            return
        self._next_housekeeping = self._clock() + HOUSEKEEPING_INTERVAL
        with self._connection() as db:
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (self._clock(),))
        self._finish_interrupted_erasures()

    # -- patients --------------------------------------------------------------
    def create_patient(self, owner_id, fields):
        patient_id, now = new_id(self._clock), self._now()
        with self._connection() as db:
            # The owner is read in the INSERT: an account being erased gets no new patient.
            inserted = db.execute(f"INSERT INTO patients ({PATIENT_COLUMNS}, first_name_key, last_name_key) "
                                  "SELECT ?, id, ?, ?, ?, ?, ? FROM users WHERE id = ? AND erasing = 0",
                                  (patient_id, json.dumps(fields), now, now, *name_keys(fields), owner_id))
            if inserted.rowcount == 0:
                raise NotFound("no user with this id")
        return self._patient_document(patient_id, owner_id, fields, [], now, now)

    def get_patient(self, patient_id):
        with self._connection() as db:
            row = db.execute(f"{SELECT_PATIENTS} WHERE id = ?", (patient_id,)).fetchone()
        if row is None:
            raise NotFound("no patient with this id")
        return self._patient_from_row(row)

    def list_patients(self, owner_id, *, limit, after=None, name_contains=None):
        sql = f"{SELECT_PATIENTS} WHERE owner_id = ? AND id > ?"
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
            row = db.execute(f"{SELECT_PATIENTS} WHERE id = ?", (patient_id,)).fetchone()
        return self._patient_from_row(row)

    def delete_patient(self, patient_id):
        with self._transaction() as db:
            report_ids = [row[0] for row in db.execute("SELECT id FROM reports WHERE patient_id = ?", (patient_id,))]
            deleted = db.execute("DELETE FROM patients WHERE id = ?", (patient_id,))  # reports cascade
            if deleted.rowcount == 0:
                raise NotFound("no patient with this id")
        # After the commit: a crash before these unlinks leaves orphans for the sweep,
        # never a row without its file.
        for report_id in report_ids:
            self._report_path(report_id).unlink(missing_ok=True)

    def _patient_from_row(self, row) -> dict:
        patient_id, owner_id, fields, created_at, updated_at, reports = row
        return self._patient_document(patient_id, owner_id, json.loads(fields), json.loads(reports),
                                      created_at, updated_at)

    @staticmethod
    def _patient_document(patient_id, owner_id, fields, reports, created_at, updated_at) -> dict:
        return {"id": patient_id, "ownerId": owner_id, **fields, "reports": reports,
                "createdAt": created_at, "updatedAt": updated_at}

    # -- reports -----------------------------------------------------------------
    def report_writer(self):
        return SQLiteReportWriter(self)

    def _report_path(self, report_id: str):
        return self.reports_dir / report_id

    def _insert_report(self, patient_id: str, report: dict) -> None:
        # A patient deleted while the upload ran fails the foreign key: NotFound (see
        # _connection). One statement, so SQLite makes it atomic without a BEGIN.
        with self._connection() as db:
            db.execute(f"INSERT INTO reports (patient_id, {REPORT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (patient_id, *(report[name] for name in REPORT_FIELDS)))

    def open_report(self, patient_id, report_id):
        with self._connection() as db:
            row = db.execute(f"SELECT {REPORT_COLUMNS} FROM reports WHERE id = ? AND patient_id = ?",
                             (report_id, patient_id)).fetchone()
        if row is None:
            raise NotFound("this patient has no report with this id")
        try:
            source = open(self._report_path(report_id), "rb")
        except OSError as exc:
            raise Unavailable("the report's file cannot be read") from exc
        return dict(zip(REPORT_FIELDS, row)), ReportChunks(source)

    def delete_report(self, patient_id, report_id):
        with self._transaction() as db:
            deleted = db.execute("DELETE FROM reports WHERE id = ? AND patient_id = ?", (report_id, patient_id))
            if deleted.rowcount == 0:
                raise NotFound("this patient has no report with this id")
        self._report_path(report_id).unlink(missing_ok=True)

    def stored_report_ids(self):
        # A temp file's name starts with its report id (see SQLiteReportWriter).
        temp = {path.name[:24] for path in self.temp_dir.iterdir()}
        return temp | {path.name for path in self.reports_dir.iterdir() if path.is_file()}

    def _sweep_report_files(self) -> None:
        """Remove what an interrupted upload or delete can leave: temp files, and
        files that no report row names. Runs at start-up, before any upload."""
        for leftover in self.temp_dir.iterdir():
            leftover.unlink(missing_ok=True)
        with self._connection() as db:
            known = {row[0] for row in db.execute("SELECT id FROM reports")}
        for path in self.reports_dir.iterdir():
            if path.is_file() and path.name not in known:
                path.unlink(missing_ok=True)

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


class SQLiteReportWriter(ReportWriter):
    """Bytes go to a temp file; commit = fsync, rename into place, then insert the row."""

    def __init__(self, store: SQLiteStore):
        self._store = store
        self.report_id = new_id(store._clock)
        self._file = tempfile.NamedTemporaryFile(dir=store.temp_dir, prefix=self.report_id, suffix=".part",
                                                 delete=False)
        self._final_path = None

    def write(self, chunk):
        self._file.write(chunk)

    def commit(self, patient_id, metadata):
        # NOTE: fsync before rename, so that after a crash the name never points at
        # a file whose bytes did not reach the disk; fsync the directory after, so
        # the rename itself is durable.
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final_path = self._store._report_path(self.report_id)
        os.replace(self._file.name, final_path)
        self._final_path = final_path
        _fsync_directory(self._store.reports_dir)
        report = {"id": self.report_id, **metadata, "uploadedAt": self._store._now()}
        self._store._insert_report(patient_id, report)
        self._final_path = None  # committed: abort() must leave the file alone now
        return report

    def abort(self):
        self._file.close()
        Path(self._file.name).unlink(missing_ok=True)
        if self._final_path is not None:  # renamed, but the row was not inserted
            self._final_path.unlink(missing_ok=True)
            self._final_path = None


def _session_from_row(row) -> dict:
    session = dict(zip(SESSION_FIELDS, row))
    session["expiresAt"] = utc_timestamp(session["expiresAt"])
    return session


def _add_column_if_missing(db: sqlite3.Connection, table: str, column: str, definition: str) -> None:
    """A schema change for a database made by an earlier version (CREATE TABLE IF NOT
    EXISTS leaves an existing table as it was)."""
    if column in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
        return
    try:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    except sqlite3.OperationalError as exc:
        # Two processes starting on the same file at once: the other one added it first.
        if "duplicate column" not in str(exc):
            raise


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
