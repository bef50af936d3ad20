"""The SQLite store's report files: upload, read (from any offset), delete, sweep.

Report bytes live in files, `DATA_DIR/reports/<report id>`, named by a generated id
and never by anything a client sent. An upload is written to `reports/tmp/`, fsynced,
renamed into place, and only then is its row committed: a crash at any point leaves
either nothing or a file that no row names, and the start-up sweep removes both
temp files and such orphans. A row never names a file that is not there (where a
directory cannot be synced, a crash may lose the rename but not the row: the sweep
then finishes the rename).

`SQLiteReports` is a part that `SQLiteStore` (storage/sqlite/store.py) holds; it works
through the store's `Database` (reads, the writer, the clock) and the store's
`new_version`: adding or deleting a report is a new version of the patient, since a
patient lists its reports.
"""

import logging
import os
from contextlib import closing
import tempfile
from pathlib import Path

import system
from storage.base import ReportChunks, ReportWriter, base64_sha1
from storage.errors import NotFound, StoreError, Unavailable
from storage.ids import new_id

REPORT_COLUMNS = "id, filename, content_type, size, sha256, sha1, description, uploaded_at"
REPORT_FIELDS = ("id", "filename", "contentType", "size", "sha256", "sha1", "description", "uploadedAt")

log = logging.getLogger("meditrack.store")


# A leftover must be at least this old (seconds) before a start-up sweep removes it.
SWEEP_MIN_AGE = 600


def _modified(path) -> float:
    """When the file was last written (seconds since the epoch); +inf if it has gone."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


class SQLiteReports:
    """Report files in `directory` (uploads in progress in its `tmp/`), their rows through
    `database`; `new_version(db, patient_id, expected_version)` is the store's, run in
    the same write as the row it versions."""

    def __init__(self, database, directory: Path, *, new_version, objects=None):
        self.database = database
        self.directory = directory
        self.temp_dir = directory / "tmp"
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self._new_version = new_version
        # With an object store (storage/s3/reports.py) the bytes live there, not in files.
        self.objects = objects

    def report_writer(self):
        if self.objects is not None:
            return self.objects.writer(self.insert)
        return SQLiteReportWriter(self)

    def path_of(self, report_id: str) -> Path:
        return self.directory / report_id

    def insert(self, patient_id: str, report: dict) -> None:
        # A patient deleted while the upload ran fails the foreign key: NotFound (see
        # store_error in storage/sqlite/database.py). The patient's representation lists its reports, so it moves on
        # to a new version in the same transaction.
        row = (patient_id, *(report[name] for name in REPORT_FIELDS))

        def insert(db):
            db.execute(f"INSERT INTO reports (patient_id, {REPORT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            self._new_version(db, patient_id, None)

        self.database.write(insert)

    def open_report(self, patient_id, report_id, *, start=0, length=None):
        with self.database.read() as db:
            row = db.execute(f"SELECT {REPORT_COLUMNS} FROM reports WHERE id = ? AND patient_id = ?",
                             (report_id, patient_id)).fetchone()
        if row is None:
            raise NotFound("this patient has no report with this id")
        if self.objects is not None:
            return dict(zip(REPORT_FIELDS, row)), self.objects.open(report_id, start=start, length=length)
        try:
            source = open(self.path_of(report_id), "rb")
        except OSError as exc:
            raise Unavailable("the report's file cannot be read") from exc
        return dict(zip(REPORT_FIELDS, row)), ReportChunks(source, start=start, length=length)

    def report_patient(self, report_id):
        with self.database.read() as db:
            row = db.execute("SELECT patient_id FROM reports WHERE id = ?", (report_id,)).fetchone()
        return None if row is None else row[0]

    def delete_report(self, patient_id, report_id):
        def delete(db):
            deleted = db.execute("DELETE FROM reports WHERE id = ? AND patient_id = ?", (report_id, patient_id))
            if deleted.rowcount == 0:
                raise NotFound("this patient has no report with this id")
            self._new_version(db, patient_id, None)

        self.database.write(delete)
        self.remove_file(report_id)

    def remove_file(self, report_id: str) -> None:
        """Remove the bytes of a report whose row is gone (the delete has committed)."""
        if self.objects is not None:
            self.objects.remove(report_id)
        elif not _remove_unless_open(self.path_of(report_id)):
            log.warning("report %s: file in use, left for the sweep", report_id)

    def stored_report_ids(self):
        temp = {_report_id_of_temp(path) for path in self.temp_dir.iterdir()}
        if self.objects is not None:
            return temp | self.objects.ids()
        return temp | {path.name for path in self.directory.iterdir() if path.is_file()}

    def sweep(self) -> None:
        """Remove what an interrupted upload or delete can leave: temp files, and files
        that no report row names, once they are older than SWEEP_MIN_AGE. Runs at
        start-up and then hourly (web/housekeeping.py), in every worker.

        NOTE: the age matters. Another process may be serving the same directory (a
        `--workers` sibling that is being replaced, or a second instance): its upload
        in progress has a temp file, or a file renamed into place whose row is about to
        commit. Young files are left for the next sweep."""
        with self.database.read() as db:
            known = {row[0] for row in db.execute("SELECT id FROM reports")}
        cutoff = self.database.clock() - SWEEP_MIN_AGE
        for leftover in self.temp_dir.iterdir():
            report_id = _report_id_of_temp(leftover)
            if report_id in known and not self.path_of(report_id).exists():
                self._finish_rename(leftover, report_id)
            elif _modified(leftover) < cutoff:
                _remove_unless_open(leftover)
        if self.objects is not None:
            self.objects.sweep(lambda report_id: report_id in known, SWEEP_MIN_AGE)
            return
        for path in self.directory.iterdir():
            if path.is_file() and path.name not in known and _modified(path) < cutoff:
                _remove_unless_open(path)

    def _finish_rename(self, leftover: Path, report_id: str) -> None:
        """A row names this upload, so its bytes were synced before the rename that a
        crash lost (possible where a directory cannot be synced: Windows, system.py).
        Put them where the row expects them."""
        try:
            os.replace(leftover, self.path_of(report_id))
        except FileNotFoundError:
            return  # another worker's sweep moved it first
        system.sync_directory(self.directory)
        log.info("report %s: moved into place after an interrupted upload", report_id)

    def add_missing_sha1(self) -> None:
        """Reports stored before the SHA-1 was kept get it now, read from their bytes:
        once, since a row that has it is never asked again. A file that cannot be read
        keeps NULL (its FHIR view has no hash) rather than stop the server."""
        with self.database.read() as db:
            missing = [row[0] for row in db.execute("SELECT id FROM reports WHERE sha1 IS NULL")]
        for report_id in missing:
            try:
                chunks = (self.objects.open(report_id) if self.objects is not None
                          else ReportChunks(open(self.path_of(report_id), "rb")))
                with closing(chunks):
                    sha1 = base64_sha1(chunks)
            except (OSError, StoreError):
                continue
            self.database.write(lambda db, report_id=report_id, sha1=sha1: db.execute(
                "UPDATE reports SET sha1 = ? WHERE id = ? AND sha1 IS NULL", (sha1, report_id)))


class SQLiteReportWriter(ReportWriter):
    """Bytes go to a temp file; commit = fsync, rename into place, then insert the row."""

    def __init__(self, reports: SQLiteReports):
        self._reports = reports
        self.report_id = new_id(reports.database.clock)
        self._file = tempfile.NamedTemporaryFile(dir=reports.temp_dir, prefix=self.report_id, suffix=".part",
                                                 delete=False)
        self._final_path = None

    def write(self, chunk):
        self._file.write(chunk)

    def commit(self, patient_id, metadata):
        # NOTE: fsync before rename, so that after a crash the name never points at
        # a file whose bytes did not reach the disk; fsync the directory after, so
        # the rename itself is durable.
        self._file.flush()
        system.sync_file(self._file.fileno())
        self._file.close()
        final_path = self._reports.path_of(self.report_id)
        os.replace(self._file.name, final_path)
        self._final_path = final_path
        system.sync_directory(self._reports.directory)
        report = {"id": self.report_id, **metadata, "uploadedAt": self._reports.database.now()}
        self._reports.insert(patient_id, report)
        self._final_path = None  # committed: abort() must leave the file alone now
        return report

    def abort(self):
        self._file.close()
        Path(self._file.name).unlink(missing_ok=True)
        if self._final_path is not None:  # renamed, but the row was not inserted
            self._final_path.unlink(missing_ok=True)
            self._final_path = None


def _report_id_of_temp(path: Path) -> str:
    """A temp file's name starts with its report id (SQLiteReportWriter's prefix)."""
    return path.name[:24]


def _remove_unless_open(path: Path) -> bool:
    """Remove a file; False if it is left because it is open.

    NOTE: Windows refuses to remove a file that is open (a download in progress, or
    another process serving this directory), and a delete that has committed must not
    fail for that. The file stays until a sweep finds that no row names it."""
    try:
        path.unlink(missing_ok=True)
    except PermissionError:
        return False
    return True
