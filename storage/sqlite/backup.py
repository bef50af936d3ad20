"""The embedded store's side of backup and restore (the format: storage/backup.py).

**Snapshot.** SQLite's online backup API (`Connection.backup`) copies the database,
page by page, into a scratch file inside the backup being written, in one step: the
copy is the database as of one commit, and in write-ahead-log mode the writer never
waits for it. Everything the backup lists is then read from that copy, so however long
the report files take to copy the live database keeps no old snapshot open. A report
deleted after the copy was taken has lost its file by the time the backup reaches it:
the backup then leaves that report out (storage/backup.py).

**Restore.** The report files go in first, each synced and renamed into
`reports/<id>` as an upload's are; then every row, in one transaction run by the
store's writer: a restore that fails commits nothing, and removes the files it placed.
"""

import hashlib
import json
import os
import secrets
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import system
from storage.backup import BackupError, BackupReader, ReportGone, Snapshot, bytes_missing, user_record
from storage.base import name_keys
from storage.sqlite.audit_log import COLUMNS as AUDIT_COLUMNS
from storage.sqlite.audit_log import STORED_COLUMNS, STORED_ROW
from storage.sqlite.reports import REPORT_COLUMNS, REPORT_FIELDS

SNAPSHOT_FILE = "snapshot.sqlite3"
CHUNK_SIZE = 1024 * 1024
HEAD_FIELDS = ("chain", "firstSequence", "previousHash", "lastSequence", "lastHash")


@contextmanager
def snapshot(store, scratch: Path):
    """A `Snapshot` of `store` read from a copy made in `scratch` (removed afterwards)."""
    copy_path = scratch / SNAPSHOT_FILE
    copy = sqlite3.connect(copy_path, isolation_level=None)
    try:
        with store.database.read() as live:
            live.backup(copy)  # all pages in one step: the database as of one commit
        copy.execute("PRAGMA journal_mode = DELETE")  # a copy only read: no -wal and -shm files beside it
        yield SQLiteSnapshot(copy, store.reports, now=store.database.clock())
    finally:
        copy.close()
        copy_path.unlink(missing_ok=True)


class SQLiteSnapshot(Snapshot):
    def __init__(self, db: sqlite3.Connection, reports, *, now: float):
        self._db = db
        self._reports = reports  # the live store's: where the bytes are (files, or an object store)
        self._now = now

    def users(self):
        for user_id, username, password_hash, created_at in self._db.execute(
                "SELECT id, username, password_hash, created_at FROM users WHERE erasing = 0 ORDER BY id"):
            yield user_record(user_id, username, bytes(password_hash), created_at)

    def sessions(self):
        rows = self._db.execute("SELECT sessions.id, user_id, sessions.created_at, last_used_at, expires_at, "
                                "refresh_hash FROM sessions JOIN users ON users.id = user_id AND erasing = 0 "
                                "WHERE expires_at > ? ORDER BY sessions.id", (self._now,))
        for session_id, user_id, created_at, last_used_at, expires_at, refresh_hash in rows:
            spent = [row[0] for row in self._db.execute(
                "SELECT hash FROM refresh_tokens WHERE session_id = ? AND hash != ? ORDER BY hash",
                (session_id, refresh_hash))]
            yield {"id": session_id, "userId": user_id, "createdAt": created_at, "lastUsedAt": last_used_at,
                   "expiresAt": expires_at, "refreshHash": refresh_hash, "spentRefreshHashes": spent}

    def patients(self):
        rows = self._db.execute("SELECT id, owner_id, fields, version, created_at, updated_at FROM patients "
                                "WHERE owner_id IN (SELECT id FROM users WHERE erasing = 0) ORDER BY id")
        for patient_id, owner_id, fields, version, created_at, updated_at in rows:
            versions = [{"version": number, "fields": json.loads(text), "updatedAt": at} for number, text, at in
                        self._db.execute("SELECT version, fields, updated_at FROM patient_versions "
                                         "WHERE patient_id = ? ORDER BY version", (patient_id,))]
            reports = [dict(zip(REPORT_FIELDS, row)) for row in self._db.execute(
                f"SELECT {REPORT_COLUMNS} FROM reports WHERE patient_id = ? ORDER BY id", (patient_id,))]
            yield {"id": patient_id, "ownerId": owner_id, "fields": json.loads(fields), "version": version,
                   "createdAt": created_at, "updatedAt": updated_at, "versions": versions, "reports": reports}

    def audit_chains(self):
        rows = self._db.execute("SELECT chain, first_sequence, previous_hash, last_sequence, last_hash "
                                "FROM audit_chains ORDER BY chain")
        return [dict(zip(HEAD_FIELDS, row)) for row in rows]

    def audit_events(self):
        names = tuple(AUDIT_COLUMNS)
        for row in self._db.execute(f"SELECT {STORED_COLUMNS} FROM audit ORDER BY chain, sequence"):
            yield dict(zip(names, row))

    def report_bytes(self, report_id):
        try:
            if self._reports.objects is not None:
                yield from self._reports.objects.read(report_id)
                return
            try:
                # Once open, the bytes stay readable even if a delete unlinks the file now.
                file = open(self._reports.path_of(report_id), "rb")
            except FileNotFoundError:
                raise ReportGone(report_id) from None
            with file:
                while chunk := file.read(CHUNK_SIZE):
                    yield chunk
        except ReportGone:
            if self._reports.report_patient(report_id) is not None:  # its row is still there: not deleted
                raise bytes_missing(report_id) from None
            raise


def is_empty(store) -> bool:
    with store.database.read() as db:
        return not any(db.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0]
                       for table in ("users", "patients", "audit", "audit_chains"))


def restore(store, reader: BackupReader) -> None:
    """Every record of a checked backup into `store`, which `restore_backup` found empty."""
    objects, placed = store.reports.objects, []
    try:
        for patient in reader.records("patients"):
            for report in patient["reports"]:
                placed.append(report["id"])
                if objects is not None:
                    with open(reader.report_path(report["id"]), "rb") as source:
                        objects.put_file(report["id"], source, report["size"], report["sha256"])
                else:
                    _place_report(store.reports, reader.report_path(report["id"]), report["id"])
        system.sync_directory(store.reports.directory)
        store.database.write(lambda db: _insert_everything(db, reader))
    except BaseException:
        for report_id in placed:
            store.reports.remove_file(report_id)
        raise


def _place_report(reports, source: Path, report_id: str) -> None:
    """Copy a report's bytes where the store keeps them: a temp file, synced, renamed."""
    temp = reports.temp_dir / f"{report_id}.restore"
    with open(source, "rb") as original, open(temp, "wb") as copy:
        while chunk := original.read(CHUNK_SIZE):
            copy.write(chunk)
        copy.flush()
        system.sync_file(copy.fileno())
    os.replace(temp, reports.path_of(report_id))


def _insert_everything(db: sqlite3.Connection, reader: BackupReader) -> None:
    for user in reader.records("users"):
        db.execute("INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?)",
                   (user["id"], user["username"], reader.password_hash(user), user["createdAt"]))
    for session in reader.records("sessions"):
        # A session whose every token was spent (a refresh cut short on MongoDB) gets a
        # current hash no token has: it serves until it expires, and cannot be refreshed.
        current = session["refreshHash"] or hashlib.sha256(secrets.token_bytes(32)).hexdigest()
        inserted = db.execute(
            "INSERT INTO sessions (id, user_id, username, user_created_at, created_at, last_used_at, "
            "refresh_hash, expires_at) SELECT ?, id, username, created_at, ?, ?, ?, ? FROM users WHERE id = ?",
            (session["id"], session["createdAt"], session["lastUsedAt"], current, session["expiresAt"],
             session["userId"]))
        if inserted.rowcount == 0:
            raise BackupError(f"session {session['id']} belongs to user {session['userId']}, who is not in the backup")
        db.executemany("INSERT INTO refresh_tokens (hash, session_id) VALUES (?, ?)",
                       [(token, session["id"]) for token in [current, *session["spentRefreshHashes"]]])
    for patient in reader.records("patients"):
        db.execute("INSERT INTO patients (id, owner_id, first_name_key, last_name_key, fields, version, created_at, "
                   "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (patient["id"], patient["ownerId"], *name_keys(patient["fields"]), json.dumps(patient["fields"]),
                    patient["version"], patient["createdAt"], patient["updatedAt"]))
        db.executemany("INSERT INTO patient_versions (patient_id, version, fields, updated_at) VALUES (?, ?, ?, ?)",
                       [(patient["id"], version["version"], json.dumps(version["fields"]), version["updatedAt"])
                        for version in patient["versions"]])
        db.executemany(f"INSERT INTO reports (patient_id, {REPORT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [(patient["id"], *(report[name] for name in REPORT_FIELDS)) for report in patient["reports"]])
    db.executemany(f"INSERT INTO audit ({STORED_COLUMNS}) VALUES ({', '.join('?' * len(AUDIT_COLUMNS))})",
                   (STORED_ROW(event) for event in reader.records("auditEvents")))
    db.executemany("INSERT INTO audit_chains (chain, first_sequence, previous_hash, last_sequence, last_hash) "
                   "VALUES (?, ?, ?, ?, ?)",
                   [tuple(head[name] for name in HEAD_FIELDS) for head in reader.records("auditChains")])
