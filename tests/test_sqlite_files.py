"""The SQLite store alone: its report files on disk (named by id, swept at start-up, never
orphaned), and which store error each failed SQL constraint becomes."""

import sqlite3
import time

import pytest

import system
from storage.sqlite import store as sqlite_store
from storage.errors import Conflict, NotFound
from storage.ids import new_id
from storage.sqlite import SQLiteStore
from storage.sqlite.reports import SWEEP_MIN_AGE
from tests.support.records import PATIENT, write_report


def files_in(directory) -> set[str]:
    return {path.name for path in directory.iterdir() if path.is_file()}


def test_report_bytes_are_stored_under_the_report_id(tmp_path):
    store = SQLiteStore(tmp_path)
    patient = store.create_patient(store.create_user("u", b"h")["id"], PATIENT)
    report = write_report(store, patient["id"])
    assert files_in(store.reports.directory) == {report["id"]} and files_in(store.reports.temp_dir) == set()


def test_start_up_sweeps_temp_files_and_files_no_row_names(tmp_path):
    store = SQLiteStore(tmp_path)
    patient = store.create_patient(store.create_user("u", b"h")["id"], PATIENT)
    report = write_report(store, patient["id"])
    store.close()
    # What a crash can leave: a half-written temp file, and a file renamed into place
    # whose row was never committed.
    (store.reports.temp_dir / "interrupted.part").write_bytes(b"%PDF-half")
    (store.reports.directory / "0123456789abcdef01234567").write_bytes(b"%PDF-orphan")
    # Younger than SWEEP_MIN_AGE they may be another process's upload in progress: kept.
    young = SQLiteStore(tmp_path)
    assert files_in(young.reports.directory) == {report["id"], "0123456789abcdef01234567"}
    assert files_in(young.reports.temp_dir) == {"interrupted.part"}
    young.close()
    later = time.time() + SWEEP_MIN_AGE + 1
    reopened = SQLiteStore(tmp_path, clock=lambda: later)
    assert files_in(reopened.reports.directory) == {report["id"]}
    assert files_in(reopened.reports.temp_dir) == set()
    assert reopened.get_patient(patient["id"])["reports"] == [report]


def test_an_aborted_upload_leaves_no_file(tmp_path):
    store = SQLiteStore(tmp_path)
    with store.report_writer() as writer:
        writer.write(b"%PDF-never committed")
    assert files_in(store.reports.directory) == set() and files_in(store.reports.temp_dir) == set()


def test_a_commit_to_a_deleted_patient_removes_the_renamed_file(tmp_path):
    store = SQLiteStore(tmp_path)
    patient = store.create_patient(store.create_user("u", b"h")["id"], PATIENT)
    store.delete_patient(patient["id"])
    with pytest.raises(NotFound):
        write_report(store, patient["id"])
    assert files_in(store.reports.directory) == set() and files_in(store.reports.temp_dir) == set()


def test_deleting_a_patient_removes_its_files_after_the_commit(tmp_path):
    store = SQLiteStore(tmp_path)
    owner = store.create_user("u", b"h")
    patient, other = store.create_patient(owner["id"], PATIENT), store.create_patient(owner["id"], PATIENT)
    for _ in range(3):
        write_report(store, patient["id"])
    kept = write_report(store, other["id"])
    store.delete_patient(patient["id"])
    assert files_in(store.reports.directory) == {kept["id"]}


def refuse_to_remove_open_report_files(monkeypatch, store):
    """Windows refuses to remove a file another thread holds open (a download)."""
    real_unlink = type(store.reports.directory).unlink

    def unlink_like_windows(path, missing_ok=False):
        if path.parent == store.reports.directory:
            raise PermissionError(13, "The process cannot access the file because it is being used", str(path))
        return real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(type(store.reports.directory), "unlink", unlink_like_windows)


@pytest.mark.parametrize("delete", ["report", "patient"])
def test_a_delete_succeeds_when_the_file_is_in_use_and_the_sweep_removes_it_later(tmp_path, monkeypatch, delete):
    store = SQLiteStore(tmp_path)
    patient = store.create_patient(store.create_user("u", b"h")["id"], PATIENT)
    report = write_report(store, patient["id"])
    with monkeypatch.context() as windows:
        refuse_to_remove_open_report_files(windows, store)
        if delete == "report":
            store.delete_report(patient["id"], report["id"])
            assert store.get_patient(patient["id"])["reports"] == []
        else:
            store.delete_patient(patient["id"])
            with pytest.raises(NotFound):
                store.get_patient(patient["id"])
        assert files_in(store.reports.directory) == {report["id"]}  # in use: left where it is
    store.close()
    later = time.time() + SWEEP_MIN_AGE + 1
    SQLiteStore(tmp_path, clock=lambda: later).close()
    assert files_in(store.reports.directory) == set()


def test_an_upload_whose_rename_a_crash_lost_is_moved_into_place_at_start_up(tmp_path):
    # Where a directory cannot be synced (Windows), a power cut can keep the row, which
    # SQLite synced, and lose the rename before it: the bytes are still under their
    # temporary name. However old, they are the report's, and are put where the row expects.
    store = SQLiteStore(tmp_path)
    patient = store.create_patient(store.create_user("u", b"h")["id"], PATIENT)
    report = write_report(store, patient["id"], b"%PDF-1.7 kept")
    store.close()
    (store.reports.directory / report["id"]).rename(store.reports.temp_dir / f"{report['id']}abc123.part")
    later = time.time() + SWEEP_MIN_AGE + 1
    reopened = SQLiteStore(tmp_path, clock=lambda: later)
    assert files_in(reopened.reports.temp_dir) == set()
    meta, chunks = reopened.open_report(patient["id"], report["id"])
    assert b"".join(chunks) == b"%PDF-1.7 kept"
    chunks.close()
    reopened.close()


def test_on_macos_every_connection_asks_sqlite_for_f_fullfsync(tmp_path, monkeypatch):
    monkeypatch.setattr(system, "FULL_FSYNC", 51)  # as on macOS (system.py)
    store = SQLiteStore(tmp_path)
    with store.database.read() as db:
        assert db.execute("PRAGMA fullfsync").fetchone()[0] == 1
    store.close()
    monkeypatch.setattr(system, "FULL_FSYNC", None)  # Linux and Windows: SQLite's default
    store = SQLiteStore(tmp_path)
    with store.database.read() as db:
        assert db.execute("PRAGMA fullfsync").fetchone()[0] == 0
    store.close()


# --- constraint failures: told apart by SQLite's extended result code ---


def test_a_missing_parent_row_is_not_found_not_a_duplicate_key(tmp_path):
    # patients.owner_id references users: no such user fails the foreign key, which
    # says the parent is gone (NotFound), not that the new row's key is taken (Conflict).
    store, owner_id = SQLiteStore(tmp_path), new_id()
    with pytest.raises(NotFound):
        store.create_patient(owner_id, PATIENT)
    assert store.list_patients(owner_id, limit=10) == []


def test_a_taken_primary_key_is_a_conflict(tmp_path, monkeypatch):
    store = SQLiteStore(tmp_path)
    monkeypatch.setattr(sqlite_store, "new_id", lambda clock: "0123456789abcdef01234567")
    store.create_user("ada", b"h")
    with pytest.raises(Conflict):
        store.create_user("grace", b"h")


def test_a_not_null_violation_is_a_bug_not_a_store_error(tmp_path):
    store = SQLiteStore(tmp_path)
    with pytest.raises(sqlite3.IntegrityError):
        store.create_user("ada", None)
    assert store.find_user("ada") is None


def test_a_database_from_before_versions_gets_version_1_with_its_history(tmp_path):
    """A file made by the previous release (patients had no version column): on opening,
    every patient becomes version 1, and that version is the first of its history."""
    store = SQLiteStore(tmp_path)
    owner = store.create_user("u", b"h")
    patient = store.create_patient(owner["id"], PATIENT)
    store.close()
    with sqlite3.connect(tmp_path / "meditrack.sqlite3") as db:  # back to the old shape
        db.execute("DROP TABLE patient_versions")
        db.execute("ALTER TABLE patients DROP COLUMN version")
    reopened = SQLiteStore(tmp_path)
    assert reopened.get_patient(patient["id"])["version"] == 1
    assert {**reopened.get_version(patient["id"], 1), "version": None} == {
        "version": None, **PATIENT, "updatedAt": patient["updatedAt"]}
    assert reopened.replace_patient(patient["id"], PATIENT, expected_version=1)["version"] == 2
