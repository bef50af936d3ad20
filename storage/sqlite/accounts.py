"""The SQLite store's account half: sessions, refresh tokens, failed logins, and account erasure.

`SQLiteAccounts` is a part that `SQLiteStore` (storage/sqlite/store.py) holds; it works
through the store's `Database` (connections to read with, the writer, the clock). Three tables:

- `sessions`: one row per login, alive until it expires or is ended (deleted). It
  carries the user's public fields, so authenticating a request reads one row.
- `refresh_tokens`: the SHA-256 of every refresh token a session handed out. The row
  in `sessions` names the current one; a refresh is a compare-and-set on it.
- `login_failures`: the time of each failed login, by a hash of the username: the log
  the login back-off (handlers/backoff.py) works out its lock from, shared by every worker.

An erasure first makes the account unusable, then deletes what it owned piece by
piece; the store finishes an erasure a crash interrupted when it next opens.
"""

from storage.base import utc_timestamp
from storage.errors import NotFound
from storage.ids import new_id

SCHEMA = """
-- A session per login. The user's public fields are copied in (a username never
-- changes), so authenticating a request reads this one row; expires_at is in seconds
-- since the epoch, the one time every request compares. Ending a session deletes it.
CREATE TABLE IF NOT EXISTS sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    username        TEXT NOT NULL,
    user_created_at TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    last_used_at    TEXT NOT NULL,
    refresh_hash    TEXT NOT NULL,
    expires_at      REAL NOT NULL
);
-- A user's sessions (listing them, ending them all), and the purge of expired ones.
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id, created_at);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);

-- Every refresh token a session has handed out, by its SHA-256 only (a copy of this
-- file lets no one refresh), spent or current: a token presented a second time is told
-- apart from one that was never ours.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    hash       TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS refresh_tokens_by_session ON refresh_tokens (session_id);

-- One row per failed login (handlers/backoff.py reads a key's latest few), deleted once
-- expires_at has passed, or all of a key's at a successful login. Times are seconds
-- since the epoch.
CREATE TABLE IF NOT EXISTS login_failures (
    key        TEXT NOT NULL,
    at         REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_by_key ON login_failures (key, at);
CREATE INDEX IF NOT EXISTS login_failures_by_expiry ON login_failures (expires_at);
"""

# Expired sessions are deleted, and erasures a failure interrupted are finished, at
# start-up and then at most this often (seconds): see SQLiteAccounts.housekeeping.
HOUSEKEEPING_INTERVAL = 3600

SESSION_COLUMNS = "id, user_id, created_at, last_used_at, expires_at"
SESSION_FIELDS = ("id", "userId", "createdAt", "lastUsedAt", "expiresAt")


class SQLiteAccounts:
    """Sessions, refresh tokens, failed logins and erasure on `database`. An erasure deletes
    the account's patients one by one with the store's `delete_patient` (which removes
    their report files too)."""

    def __init__(self, database, *, delete_patient):
        self.database = database
        self._delete_patient = delete_patient
        self._next_housekeeping = 0.0

    # -- sessions ----------------------------------------------------------------
    def create_session(self, user_id, refresh_hash, expires_at, *, password_hash):
        now, session_id = self.database.now(), new_id(self.database.clock)

        def insert(db) -> bool:
            # NOTE: the user is read in the INSERT itself, so no session starts for a user
            # being erased, or whose password changed after this login checked it (the
            # password change would otherwise miss this session when it ends the others).
            inserted = db.execute(
                "INSERT INTO sessions (id, user_id, username, user_created_at, created_at, last_used_at, "
                "refresh_hash, expires_at) SELECT ?, id, username, created_at, ?, ?, ?, ? FROM users "
                "WHERE id = ? AND erasing = 0 AND password_hash = ?",
                (session_id, now, now, refresh_hash, expires_at, user_id, password_hash))
            if inserted.rowcount == 0:
                return False
            db.execute("INSERT INTO refresh_tokens (hash, session_id) VALUES (?, ?)", (refresh_hash, session_id))
            return True

        if not self.database.write(insert):
            return None
        self.housekeeping()
        return {"id": session_id, "userId": user_id, "createdAt": now, "lastUsedAt": now,
                "expiresAt": utc_timestamp(expires_at)}

    def session_user(self, session_id, user_id):
        # NOTE: one row answers "is the session alive?", and so also "does its user
        # exist?": deleting a user deletes its sessions (a cascade), and an erasure
        # deletes them in its first step. Authentication stays one indexed look-up.
        with self.database.read() as db:
            row = db.execute("SELECT username, user_created_at, last_used_at FROM sessions "
                             "WHERE id = ? AND user_id = ? AND expires_at > ?",
                             (session_id, user_id, self.database.clock())).fetchone()
        if row is None:
            return None
        return {"id": user_id, "username": row[0], "createdAt": row[1], "sessionLastUsedAt": row[2]}

    def touch_session(self, session_id):
        now = self.database.now()
        self.database.write(lambda db: db.execute("UPDATE sessions SET last_used_at = ? WHERE id = ?",
                                                  (now, session_id)))

    def rotate_refresh(self, session_id, old_hash, new_hash):
        now = self.database.clock()

        def rotate(db):
            # NOTE: the old hash is in the WHERE clause: of refreshes racing with one token,
            # the writer runs the first UPDATE that matches and the others find nothing.
            updated = db.execute("UPDATE sessions SET refresh_hash = ? "
                                 "WHERE id = ? AND refresh_hash = ? AND expires_at > ?",
                                 (new_hash, session_id, old_hash, now))
            if updated.rowcount == 0:
                return None
            db.execute("INSERT INTO refresh_tokens (hash, session_id) VALUES (?, ?)", (new_hash, session_id))
            return db.execute(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone()

        row = self.database.write(rotate)
        return None if row is None else _session_from_row(row)

    def refresh_token_issuer(self, session_id, refresh_hash):
        with self.database.read() as db:
            row = db.execute("SELECT sessions.user_id FROM refresh_tokens JOIN sessions ON sessions.id = "
                             "refresh_tokens.session_id WHERE refresh_tokens.hash = ? AND refresh_tokens.session_id = ?",
                             (refresh_hash, session_id)).fetchone()
        return None if row is None else row[0]

    def end_session(self, session_id, user_id=None):
        sql, args = "DELETE FROM sessions WHERE id = ? AND expires_at > ?", [session_id, self.database.clock()]
        if user_id is not None:
            sql += " AND user_id = ?"
            args.append(user_id)
        return self.database.write(lambda db: db.execute(sql, args).rowcount == 1)  # its refresh token hashes cascade

    def end_sessions(self, user_id, *, keep=None):
        self.database.write(lambda db: db.execute("DELETE FROM sessions WHERE user_id = ? AND id != ?",
                                                  (user_id, keep or "")))

    def list_sessions(self, user_id):
        with self.database.read() as db:
            rows = db.execute(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ? AND expires_at > ? "
                              "ORDER BY created_at DESC, id DESC", (user_id, self.database.clock())).fetchall()
        return [_session_from_row(row) for row in rows]

    # -- failed logins -------------------------------------------------------------
    def record_login_failure(self, key, at, expires_at):
        def insert(db):
            db.execute("INSERT INTO login_failures (key, at, expires_at) VALUES (?, ?, ?)", (key, at, expires_at))
            # The expired rows of every key go in the same write: the table stays small.
            db.execute("DELETE FROM login_failures WHERE expires_at <= ?", (at,))

        self.database.write(insert)

    def login_failures(self, key, limit):
        with self.database.read() as db:
            return [row[0] for row in db.execute(
                "SELECT at FROM login_failures WHERE key = ? AND expires_at > ? ORDER BY at DESC LIMIT ?",
                (key, self.database.clock(), limit))]

    def forget_login_failures(self, key):
        self.database.write(lambda db: db.execute("DELETE FROM login_failures WHERE key = ?", (key,)))

    # -- erasure -------------------------------------------------------------------
    def erase_user(self, user_id):
        # Step 1, committed on its own: the account can no longer log in (find_user
        # skips it) or start a session, and its sessions are gone, so no token works.
        def make_unusable(db):
            db.execute("UPDATE users SET erasing = 1 WHERE id = ?", (user_id,))
            db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

        self.database.write(make_unusable)
        # Step 2: a crash part-way leaves step 1 done, and the next start finishes the rest.
        self._finish_erasure(user_id)

    def _finish_erasure(self, user_id: str) -> None:
        # NOTE: patient by patient, each a write of its own (with its files unlinked after
        # it commits, as in any delete): a large account's erasure never makes one huge
        # batch, so other users' writes go on in the batches between. A request
        # authenticated just before step 1 may still add a patient, so this goes round
        # until none is left; after step 1 create_patient refuses the owner.
        while patient_ids := self._patient_ids_of(user_id):
            for patient_id in patient_ids:
                try:
                    self._delete_patient(patient_id)
                except NotFound:
                    pass  # deleted meanwhile: just as good
        self.database.write(lambda db: db.execute("DELETE FROM users WHERE id = ?", (user_id,)))  # its sessions cascade

    def _patient_ids_of(self, owner_id: str) -> list[str]:
        with self.database.read() as db:
            return [row[0] for row in db.execute("SELECT id FROM patients WHERE owner_id = ?", (owner_id,))]

    def housekeeping(self) -> None:
        """At start-up, then at most once per HOUSEKEEPING_INTERVAL (when a session
        starts): delete expired sessions (their refresh token hashes go with them), so
        the table does not grow without bound; and finish any erasure a crash or a
        failure left half done."""
        if self.database.clock() < self._next_housekeeping:
            return
        now = self.database.clock()
        self._next_housekeeping = now + HOUSEKEEPING_INTERVAL
        self.database.write(lambda db: db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,)))
        with self.database.read() as db:
            user_ids = [row[0] for row in db.execute("SELECT id FROM users WHERE erasing = 1")]
        for user_id in user_ids:
            self._finish_erasure(user_id)


def _session_from_row(row) -> dict:
    session = dict(zip(SESSION_FIELDS, row))
    session["expiresAt"] = utc_timestamp(session["expiresAt"])
    return session
