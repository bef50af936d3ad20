"""The embedded store: SQLite through the standard library's `sqlite3`, zero set-up.

One file, `DATA_DIR/meditrack.sqlite3`, in write-ahead-log mode so readers never
wait for a writer. Patients keep their PatientInput fields as one JSON document
(the same shape the MongoDB store keeps), beside the columns that queries need:
the owner, the id, case-folded names for search, and the version.

Reads use a pool of connections and never wait for a write (WAL). Every write is a
function handed to the one writer thread (`Database.write`, storage/sqlite/database.py
and storage/sqlite/writer.py), which runs the writes waiting in line in one
transaction, each in a savepoint of its own, and syncs them to disk with one commit:
group commit.

`patient_versions` is the patient's history: one row per version, the current one
included, written in the same unit as the change that made it. A conditional write is
one `UPDATE … WHERE id = ? AND version = ?`, run by the one writer: of any number of
writers naming one version exactly one changes a row; the others change nothing and
are told so.

The tables, and the changes that bring a database made by an earlier version up to
date, are in storage/sqlite/schema.py; report files in storage/sqlite/reports.py,
sessions and account erasure in storage/sqlite/accounts.py, the audit trail in
storage/sqlite/audit_log.py.
"""

import json
import time
from pathlib import Path

from storage.base import Store, name_keys
from storage.errors import NotFound, VersionMismatch
from storage.ids import new_id
from storage.s3.reports import ObjectReports
from storage.sqlite import backup
from storage.sqlite.accounts import SQLiteAccounts
from storage.sqlite.audit_log import SQLiteAuditLog
from storage.sqlite.database import Database
from storage.sqlite.reports import REPORT_COLUMNS, REPORT_FIELDS, SQLiteReports

PATIENT_COLUMNS = "id, owner_id, fields, version, created_at, updated_at"
# A patient with its reports in one query: the correlated subquery folds the patient's
# report rows, in id order, into one JSON array (SQLite's JSON1 functions), so a read
# is a single round trip however many reports there are.
REPORTS_AS_JSON = ("(SELECT json_group_array(json_object(" +
                   ", ".join(f"'{field}', {column}" for field, column in
                             zip(REPORT_FIELDS, REPORT_COLUMNS.split(", "))) +
                   ")) FROM (SELECT * FROM reports WHERE patient_id = patients.id ORDER BY id))")
SELECT_PATIENTS = f"SELECT {PATIENT_COLUMNS}, {REPORTS_AS_JSON} FROM patients"


class SQLiteStore(Store):
    """The embedded store. The patients and users are its own work; the rest it hands to
    the parts it holds, each named where it is called:

    - `database`: connections to read with, the writer, the clock (storage/sqlite/database.py);
    - `accounts`: sessions, failed logins, erasure (storage/sqlite/accounts.py);
    - `reports`: report files (storage/sqlite/reports.py);
    - `audit`: the audit trail's table (storage/sqlite/audit_log.py).
    """

    name = "sqlite"

    def __init__(self, data_dir: Path, *, clock=time.time, objects=None):
        """`objects`: an ObjectStore (storage/s3/client.py) to keep report bytes in, or None for files."""
        data_dir.mkdir(parents=True, exist_ok=True)
        self.database = Database(data_dir / "meditrack.sqlite3", clock)
        object_reports = None if objects is None else ObjectReports(objects, clock=clock,
                                                                    spool_dir=data_dir / "reports" / "tmp")
        self.reports = SQLiteReports(self.database, data_dir / "reports", new_version=self._new_version,
                                     objects=object_reports)
        self.accounts = SQLiteAccounts(self.database, delete_patient=self.delete_patient)
        self.audit = SQLiteAuditLog(self.database)
        self.sweep()
        self.reports.add_missing_sha1()

    def sweep(self):
        self.accounts.housekeeping()
        self.reports.sweep()

    # -- users ---------------------------------------------------------------
    def create_user(self, username, password_hash):
        user = {"id": new_id(self.database.clock), "username": username, "createdAt": self.database.now()}
        self.database.write(lambda db: db.execute("INSERT INTO users (id, username, password_hash, created_at) "
                                                  "VALUES (?, ?, ?, ?)", (user["id"], username, password_hash,
                                                                          user["createdAt"])))
        return user

    def find_user(self, username):
        with self.database.read() as db:
            row = db.execute("SELECT id, username, created_at, password_hash FROM users "
                             "WHERE lower(username) = lower(?) AND erasing = 0", (username,)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "username": row[1], "createdAt": row[2], "passwordHash": bytes(row[3])}

    def set_password(self, user_id, password_hash):
        self.database.write(lambda db: db.execute("UPDATE users SET password_hash = ? WHERE id = ?",
                                                  (password_hash, user_id)))

    # -- patients --------------------------------------------------------------
    def create_patient(self, owner_id, fields):
        patient_id, now = new_id(self.database.clock), self.database.now()
        row = (patient_id, json.dumps(fields), now, now, *name_keys(fields), owner_id)

        def insert(db):
            # The owner is read in the INSERT: an account being erased gets no new patient.
            inserted = db.execute(f"INSERT INTO patients ({PATIENT_COLUMNS}, first_name_key, last_name_key) "
                                  "SELECT ?, id, ?, 1, ?, ?, ?, ? FROM users WHERE id = ? AND erasing = 0", row)
            if inserted.rowcount == 0:
                raise NotFound("no user with this id")
            self._record_version(db, patient_id)

        self.database.write(insert)
        return self._patient_document(patient_id, owner_id, fields, [], 1, now, now)

    def get_patient(self, patient_id):
        with self.database.read() as db:
            row = db.execute(f"{SELECT_PATIENTS} WHERE id = ?", (patient_id,)).fetchone()
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
        with self.database.read() as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
            reports = self._reports_of(db, [row[0] for row in rows])
        return [self._patient_document(patient_id, owner, json.loads(fields), reports.get(patient_id, []),
                                       version, created_at, updated_at)
                for patient_id, owner, fields, version, created_at, updated_at in rows]

    @staticmethod
    def _reports_of(db, patient_ids: list[str]) -> dict[str, list[dict]]:
        """The reports of a page of patients, in one query, by patient id.

        NOTE: a page's reports come from one query over the page's ids, not from the
        correlated JSON subquery a single read uses (SELECT_PATIENTS): for 20 patients
        that would run 20 subqueries and build 20 JSON texts for Python to parse again."""
        if not patient_ids:
            return {}
        found: dict[str, list[dict]] = {}
        marks = ", ".join("?" * len(patient_ids))
        for patient_id, *report in db.execute(f"SELECT patient_id, {REPORT_COLUMNS} FROM reports "
                                              f"WHERE patient_id IN ({marks}) ORDER BY patient_id, id", patient_ids):
            found.setdefault(patient_id, []).append(dict(zip(REPORT_FIELDS, report)))
        return found

    def count_patients(self, owner_id):
        with self.database.read() as db:
            return db.execute("SELECT count(*) FROM patients WHERE owner_id = ?", (owner_id,)).fetchone()[0]

    def replace_patient(self, patient_id, fields, *, expected_version=None):
        values = (json.dumps(fields), *name_keys(fields))

        def replace(db):
            self._new_version(db, patient_id, expected_version,
                              "fields = ?, first_name_key = ?, last_name_key = ?,", values)
            return db.execute(f"{SELECT_PATIENTS} WHERE id = ?", (patient_id,)).fetchone()

        return self._patient_from_row(self.database.write(replace))

    def _new_version(self, db, patient_id: str, expected_version: int | None, assignments: str = "",
                     values: tuple = ()) -> None:
        """Inside a write transaction: apply `assignments` to the patient, move it to its
        next version and record that version. The version check is the UPDATE's own
        WHERE clause, so it and the write are one step."""
        updated = db.execute(f"UPDATE patients SET {assignments} version = version + 1, updated_at = ? "
                             "WHERE id = ? AND (? IS NULL OR version = ?)",
                             (*values, self.database.now(), patient_id, expected_version, expected_version))
        if updated.rowcount == 0:
            self._refuse_write(db, patient_id)
        self._record_version(db, patient_id)

    @staticmethod
    def _record_version(db, patient_id: str) -> None:
        db.execute("INSERT INTO patient_versions (patient_id, version, fields, updated_at) "
                   "SELECT id, version, fields, updated_at FROM patients WHERE id = ?", (patient_id,))

    @staticmethod
    def _refuse_write(db, patient_id: str):
        """Why a write that named this patient changed no row: it is gone, or it has
        moved past the version the write expected."""
        if db.execute("SELECT 1 FROM patients WHERE id = ?", (patient_id,)).fetchone() is None:
            raise NotFound("no patient with this id")
        raise VersionMismatch("the patient has changed since the version the write named")

    def delete_patient(self, patient_id, *, expected_version=None):
        def delete(db):
            report_ids = [row[0] for row in db.execute("SELECT id FROM reports WHERE patient_id = ?", (patient_id,))]
            # Its reports and versions go with it (ON DELETE CASCADE).
            deleted = db.execute("DELETE FROM patients WHERE id = ? AND (? IS NULL OR version = ?)",
                                 (patient_id, expected_version, expected_version))
            if deleted.rowcount == 0:
                self._refuse_write(db, patient_id)
            return report_ids

        report_ids = self.database.write(delete)
        # After the commit: a crash before these unlinks leaves orphans for the sweep,
        # never a row without its file.
        for report_id in report_ids:
            self.reports.remove_file(report_id)

    def list_versions(self, patient_id, *, below, limit):
        with self.database.read() as db:
            rows = db.execute("SELECT version, updated_at FROM patient_versions WHERE patient_id = ? "
                              "AND version < ? ORDER BY version DESC LIMIT ?", (patient_id, below, limit)).fetchall()
        return [{"version": version, "updatedAt": updated_at} for version, updated_at in rows]

    def get_version(self, patient_id, version):
        with self.database.read() as db:
            row = db.execute("SELECT fields, updated_at FROM patient_versions WHERE patient_id = ? AND version = ?",
                             (patient_id, version)).fetchone()
        if row is None:
            raise NotFound("this patient has no such version")
        return {"version": version, **json.loads(row[0]), "updatedAt": row[1]}

    def _patient_from_row(self, row) -> dict:
        patient_id, owner_id, fields, version, created_at, updated_at, reports = row
        return self._patient_document(patient_id, owner_id, json.loads(fields), json.loads(reports),
                                      version, created_at, updated_at)

    @staticmethod
    def _patient_document(patient_id, owner_id, fields, reports, version, created_at, updated_at) -> dict:
        return {"id": patient_id, "ownerId": owner_id, **fields, "reports": reports, "version": version,
                "createdAt": created_at, "updatedAt": updated_at}

    # -- sessions, failed logins, erasure: storage/sqlite/accounts.py ---------------
    def create_session(self, user_id, refresh_hash, expires_at, *, password_hash):
        return self.accounts.create_session(user_id, refresh_hash, expires_at, password_hash=password_hash)

    def session_user(self, session_id, user_id):
        return self.accounts.session_user(session_id, user_id)

    def touch_session(self, session_id):
        self.accounts.touch_session(session_id)

    def rotate_refresh(self, session_id, old_hash, new_hash):
        return self.accounts.rotate_refresh(session_id, old_hash, new_hash)

    def refresh_token_issuer(self, session_id, refresh_hash):
        return self.accounts.refresh_token_issuer(session_id, refresh_hash)

    def end_session(self, session_id, user_id=None):
        return self.accounts.end_session(session_id, user_id)

    def end_sessions(self, user_id, *, keep=None):
        self.accounts.end_sessions(user_id, keep=keep)

    def list_sessions(self, user_id):
        return self.accounts.list_sessions(user_id)

    def record_login_failure(self, key, at, expires_at):
        self.accounts.record_login_failure(key, at, expires_at)

    def login_failures(self, key, limit):
        return self.accounts.login_failures(key, limit)

    def forget_login_failures(self, key):
        self.accounts.forget_login_failures(key)

    def erase_user(self, user_id):
        self.accounts.erase_user(user_id)

    # -- report files: storage/sqlite/reports.py --------------------------------------
    def report_writer(self):
        return self.reports.report_writer()

    def open_report(self, patient_id, report_id, *, start=0, length=None):
        return self.reports.open_report(patient_id, report_id, start=start, length=length)

    def report_patient(self, report_id):
        return self.reports.report_patient(report_id)

    def delete_report(self, patient_id, report_id):
        self.reports.delete_report(patient_id, report_id)

    def report_storage(self):
        return {"kind": "files"} if self.reports.objects is None else self.reports.objects.describe()

    def stored_report_ids(self):
        return self.reports.stored_report_ids()

    # -- the audit trail: storage/sqlite/audit_log.py ----------------------------------
    def append_audit(self, chain, events):
        self.audit.append_audit(chain, events)

    def list_audit(self, viewer_id, *, limit, before=None, patient_id=None, action=None):
        return self.audit.list_audit(viewer_id, limit=limit, before=before, patient_id=patient_id, action=action)

    def audit_chains(self):
        return self.audit.audit_chains()

    def audit_chain_ids(self):
        return self.audit.audit_chain_ids()

    def audit_events(self, chain):
        return self.audit.audit_events(chain)

    def purge_audit(self, recorded_before):
        self.audit.purge_audit(recorded_before)

    def patient_owner(self, patient_id):
        with self.database.read() as db:
            row = db.execute("SELECT owner_id FROM patients WHERE id = ?", (patient_id,)).fetchone()
        return row and row[0]

    # -- backup and restore: storage/sqlite/backup.py ------------------------------
    def snapshot(self, scratch):
        return backup.snapshot(self, scratch)

    def is_empty(self):
        return backup.is_empty(self)

    def restore(self, reader):
        backup.restore(self, reader)

    # -- lifecycle ---------------------------------------------------------------
    def ping(self):
        with self.database.read() as db:
            db.execute("SELECT 1").fetchone()

    def close(self):
        self.database.close()
