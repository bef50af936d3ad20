"""The MongoDB store alone: what its two-step writes leave when a writer stops half-way
(and who finishes it), delete tombstones, how patients stored before versions get
theirs, and GridFS ranged reads.

Collected only when a MongoDB-compatible server is there (`make test-mongo`).
"""

import threading

import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect, DuplicateKeyError

from storage.errors import NotFound, Unavailable, VersionMismatch
from storage.mongo import MongoStore
from storage.mongo.versions import version_key
from tests.support.mongodb import drop_mongodb_database, fresh_mongodb_uri
from tests.support.records import PATIENT, write_report
from tests.support.stores import stored_version_count

RENAMED = {**PATIENT, "lastName": "King"}


@pytest.fixture
def uri():
    uri = fresh_mongodb_uri()
    yield uri
    drop_mongodb_database(uri)


@pytest.fixture
def store(uri, clock):
    store = MongoStore(uri, clock=clock)
    yield store
    store.close()


@pytest.fixture
def patient(store) -> dict:
    return store.create_patient(store.create_user("owner", b"h")["id"], PATIENT)


def stop_after_the_claim(store, monkeypatch):
    """Make the next write stop between its two steps, as a crash or a lost connection would."""
    def stopped(record):
        monkeypatch.undo()
        raise AutoReconnect("the connection dropped")  # what pymongo raises then
    monkeypatch.setattr(store.versions, "_apply_version", stopped)


def test_a_version_claimed_but_not_applied_is_not_shown_yet(store, patient, monkeypatch):
    stop_after_the_claim(store, monkeypatch)
    with pytest.raises(Unavailable):
        store.replace_patient(patient["id"], RENAMED, expected_version=1)
    assert store.get_patient(patient["id"])["version"] == 1
    assert stored_version_count(store, patient["id"]) == 2  # the claim is there, unapplied


def test_the_next_writer_rolls_a_stopped_write_forward(store, patient, monkeypatch):
    stop_after_the_claim(store, monkeypatch)
    with pytest.raises(Unavailable):
        store.replace_patient(patient["id"], RENAMED, expected_version=1)
    # A writer that read version 1 is told it changed, and the change is now in place.
    with pytest.raises(VersionMismatch):
        store.replace_patient(patient["id"], {**PATIENT, "notes": "late"}, expected_version=1)
    after = store.get_patient(patient["id"])
    assert after["version"] == 2 and after["lastName"] == "King"
    assert store.replace_patient(patient["id"], PATIENT)["version"] == 3


def test_an_unconditional_writer_goes_on_after_rolling_forward(store, patient, monkeypatch):
    stop_after_the_claim(store, monkeypatch)
    with pytest.raises(Unavailable):
        store.replace_patient(patient["id"], RENAMED)
    assert store.replace_patient(patient["id"], {**PATIENT, "notes": "n"})["version"] == 3
    assert store.get_version(patient["id"], 2)["lastName"] == "King"


def stop_a_delete(store, patient, monkeypatch) -> dict:
    report = write_report(store, patient["id"])
    stop_after_the_claim(store, monkeypatch)
    with pytest.raises(Unavailable):
        store.delete_patient(patient["id"])
    assert store.get_patient(patient["id"])["version"] == 2  # still there, its delete claimed
    return report


def test_the_next_writer_finishes_a_stopped_delete_and_is_told_the_patient_is_gone(store, patient, monkeypatch):
    report = stop_a_delete(store, patient, monkeypatch)
    with pytest.raises(NotFound):
        store.replace_patient(patient["id"], RENAMED)
    with pytest.raises(NotFound):
        store.get_patient(patient["id"])
    assert stored_version_count(store, patient["id"]) == 0
    assert report["id"] not in store.stored_report_ids()


def test_a_stopped_delete_no_one_meets_is_finished_at_the_next_start(store, uri, clock, patient, monkeypatch):
    report = stop_a_delete(store, patient, monkeypatch)
    clock.advance(61)
    reopened = MongoStore(uri, clock=clock)
    try:
        with pytest.raises(NotFound):
            reopened.get_patient(patient["id"])
        assert stored_version_count(reopened, patient["id"]) == 0
        assert report["id"] not in reopened.stored_report_ids()
    finally:
        reopened.close()


def test_patients_from_before_versions_get_version_1_once(store, uri, clock, patient):
    # The previous release's shape: no version on the patient, no history, no marker.
    store.database.patients.update_one({"_id": ObjectId(patient["id"])}, {"$unset": {"version": ""}})
    store.database.patient_versions.delete_many({})
    store.database.migrations.delete_many({})
    reopened = MongoStore(uri, clock=clock)
    try:
        assert reopened.get_patient(patient["id"])["version"] == 1
        assert reopened.get_version(patient["id"], 1)["updatedAt"] == patient["updatedAt"]
        assert reopened.database.migrations.count_documents({}) == 1
    finally:
        reopened.close()


def test_a_ranged_read_starts_at_the_chunk_holding_its_first_byte(store, patient):
    data = bytes(range(256)) * 2048  # 512 KiB: chunks 0, 1 and 2
    report = write_report(store, patient["id"], data)
    # Take chunk 0 away: a read that needs it fails, a read that starts in chunk 1 must not.
    store.database.chunk_documents.delete_one({"files_id": ObjectId(report["id"]), "n": 0})
    chunk = 255 * 1024
    _, chunks = store.open_report(patient["id"], report["id"], start=chunk + 10, length=100)
    try:
        assert b"".join(chunks) == data[chunk + 10:chunk + 110]
    finally:
        chunks.close()


def test_an_erasure_finishes_a_delete_that_stopped_half_way(store, patient, monkeypatch):
    stop_after_the_claim(store, monkeypatch)
    with pytest.raises(Unavailable):
        store.delete_patient(patient["id"])
    eraser = threading.Thread(target=store.erase_user, args=(patient["ownerId"],), daemon=True)
    eraser.start()
    eraser.join(timeout=30)
    assert not eraser.is_alive(), "the erasure went round the stopped delete for ever"
    with pytest.raises(NotFound):
        store.get_patient(patient["id"])
    assert store.database.patient_versions.count_documents({"ownerId": ObjectId(patient["ownerId"])}) == 0


def test_a_delete_leaves_a_tombstone_so_no_write_that_read_before_it_can_claim_a_version(store, patient):
    store.delete_patient(patient["id"])
    tombstone = store.database.patient_versions.find_one({"_id": version_key(ObjectId(patient["id"]), 2)})
    assert tombstone["deleted"] is True and "fields" not in tombstone and "pending" not in tombstone
    assert stored_version_count(store, patient["id"]) == 0
    # A writer that read the patient before the delete now claims a version, and fails.
    for version in (1, 2):
        assert "fields" not in store.database.patient_versions.find_one({"_id": version_key(ObjectId(patient["id"]), version)})
        with pytest.raises(DuplicateKeyError):
            store.database.patient_versions.insert_one({"_id": version_key(ObjectId(patient["id"]), version), "fields": PATIENT})


def test_an_upload_cut_off_after_its_claim_keeps_its_file_and_the_next_start_applies_it(
        store, uri, clock, patient, monkeypatch):
    stop_after_the_claim(store, monkeypatch)
    with pytest.raises(Unavailable):
        write_report(store, patient["id"], b"%PDF-1.4 kept")
    (report_id,) = store.stored_report_ids()
    assert store.get_patient(patient["id"])["reports"] == []
    # Past the sweep's age limit, a restart keeps the file and applies the version naming it.
    clock.advance(11 * 60)
    MongoStore(uri, clock=clock).close()
    assert store.stored_report_ids() == {report_id}
    assert [report["id"] for report in store.get_patient(patient["id"])["reports"]] == [report_id]
    _, chunks = store.open_report(patient["id"], report_id)
    assert b"".join(chunks) == b"%PDF-1.4 kept"
    chunks.close()


def test_a_slow_apply_that_lands_after_a_newer_one_puts_the_newer_back(store, patient):
    """What FerretDB's unisolated updates allow: version 3 is applied, then a slow apply
    of version 2 overwrites it. The slow writer, before it answers, applies version 3 again."""
    key = ObjectId(patient["id"])
    store.replace_patient(patient["id"], RENAMED)
    store.replace_patient(patient["id"], {**PATIENT, "notes": "newest"})
    second = store.database.patient_versions.find_one({"_id": version_key(key, 2)})
    store.database.patients.update_one({"_id": key}, {"$set": {"version": 1}})  # as if version 2's write were still to land
    # The slow writer's last two steps, as MongoVersions.write_version takes them.
    store.versions._apply_version(second)
    assert store.get_patient(patient["id"])["version"] == 2  # what a reader could see for that moment
    store.versions._catch_up(key, 2)
    after = store.get_patient(patient["id"])
    assert after["version"] == 3 and after["notes"] == "newest"
