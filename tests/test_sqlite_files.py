"""The SQLite store's report files on disk: named by id, swept at start-up, never orphaned."""

import pytest

from storage.errors import NotFound
from storage.sqlite import SQLiteStore
from tests.test_store_contract import PATIENT, write_report


def files_in(directory) -> set[str]:
    return {path.name for path in directory.iterdir() if path.is_file()}


def test_report_bytes_are_stored_under_the_report_id(tmp_path):
    store = SQLiteStore(tmp_path)
    patient = store.create_patient(store.create_user("u", b"h")["id"], PATIENT)
    report = write_report(store, patient["id"])
    assert files_in(store.reports_dir) == {report["id"]} and files_in(store.temp_dir) == set()


def test_start_up_sweeps_temp_files_and_files_no_row_names(tmp_path):
    store = SQLiteStore(tmp_path)
    patient = store.create_patient(store.create_user("u", b"h")["id"], PATIENT)
    report = write_report(store, patient["id"])
    store.close()
    # What a crash can leave: a half-written temp file, and a file renamed into place
    # whose row was never committed.
    (store.temp_dir / "interrupted.part").write_bytes(b"%PDF-half")
    (store.reports_dir / "0123456789abcdef01234567").write_bytes(b"%PDF-orphan")
    reopened = SQLiteStore(tmp_path)
    assert files_in(reopened.reports_dir) == {report["id"]}
    assert files_in(reopened.temp_dir) == set()
    assert reopened.get_patient(patient["id"])["reports"] == [report]


def test_an_aborted_upload_leaves_no_file(tmp_path):
    store = SQLiteStore(tmp_path)
    with store.report_writer() as writer:
        writer.write(b"%PDF-never committed")
    assert files_in(store.reports_dir) == set() and files_in(store.temp_dir) == set()


def test_a_commit_to_a_deleted_patient_removes_the_renamed_file(tmp_path):
    store = SQLiteStore(tmp_path)
    patient = store.create_patient(store.create_user("u", b"h")["id"], PATIENT)
    store.delete_patient(patient["id"])
    with pytest.raises(NotFound):
        write_report(store, patient["id"])
    assert files_in(store.reports_dir) == set() and files_in(store.temp_dir) == set()


def test_deleting_a_patient_removes_its_files_after_the_commit(tmp_path):
    store = SQLiteStore(tmp_path)
    owner = store.create_user("u", b"h")
    patient, other = store.create_patient(owner["id"], PATIENT), store.create_patient(owner["id"], PATIENT)
    for _ in range(3):
        write_report(store, patient["id"])
    kept = write_report(store, other["id"])
    store.delete_patient(patient["id"])
    assert files_in(store.reports_dir) == {kept["id"]}
