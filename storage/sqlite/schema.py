"""The SQLite store's tables, and the changes that bring an older database up to date.

`create_schema` runs when the store opens: every `CREATE … IF NOT EXISTS` (a new
database gets the tables, an existing one keeps its own), then each change a database
made by an earlier version needs. Each change checks first whether it is needed, so
running them on every start costs a few PRAGMA reads. The tables of the account half
and of the audit trail are declared beside the code that uses them
(storage/sqlite/accounts.py, storage/sqlite/audit_log.py).
"""

import sqlite3

from storage.sqlite.accounts import SCHEMA as ACCOUNTS_SCHEMA
from storage.sqlite.audit_log import SCHEMA as AUDIT_SCHEMA

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
    version        INTEGER NOT NULL,
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
    sha1         TEXT,           -- base64, for FHIR; NULL only until a start-up computes it
    description  TEXT,
    uploaded_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_by_patient ON reports (patient_id, id);

-- Every version of a patient's fields, the current one included; deleted with the patient.
CREATE TABLE IF NOT EXISTS patient_versions (
    patient_id TEXT NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    version    INTEGER NOT NULL,
    fields     TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (patient_id, version)
) WITHOUT ROWID;
"""


def create_schema(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)
    db.executescript(ACCOUNTS_SCHEMA)
    db.executescript(AUDIT_SCHEMA)
    _add_column_if_missing(db, "users", "erasing", "INTEGER NOT NULL DEFAULT 0")
    _add_patient_versions(db)
    _add_column_if_missing(db, "reports", "sha1", "TEXT")
    _add_column_if_missing(db, "audit", "session_id", "TEXT")


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


def _add_patient_versions(db: sqlite3.Connection) -> None:
    """A database made before patients had versions: each patient becomes version 1,
    and that version is its first history row. One transaction: all of it or none."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if "version" not in {row[1] for row in db.execute("PRAGMA table_info(patients)")}:
            db.execute("ALTER TABLE patients ADD COLUMN version INTEGER NOT NULL DEFAULT 1")
            db.execute("INSERT INTO patient_versions (patient_id, version, fields, updated_at) "
                       "SELECT id, version, fields, updated_at FROM patients")
        db.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise
