"""The Store interface's versions and ranged reads, on every store: a patient's version
moves by one on every change, a write conditional on a version is atomic (of racing
writers naming one version exactly one wins), every version stays readable until the
patient is deleted, and a report can be read from any offset."""

import pytest

from storage.base import ReportChunks
from storage.errors import NotFound, VersionMismatch
from tests.support.concurrency import race
from tests.support.records import PATIENT, write_report
from tests.support.stores import stored_version_count

RENAMED = {**PATIENT, "lastName": "King"}


@pytest.fixture
def owner(store) -> dict:
    return store.create_user("owner", b"$2b$04$hash-of-owner")


@pytest.fixture
def patient(store, owner) -> dict:
    return store.create_patient(owner["id"], PATIENT)


def fields_of(version: dict) -> dict:
    return {name: value for name, value in version.items() if name not in ("version", "updatedAt")}


# -- versions move by one on every change -----------------------------------------------------

def test_a_new_patient_is_version_1_and_its_history_holds_it(store, patient):
    assert patient["version"] == 1
    assert store.get_patient(patient["id"])["version"] == 1
    assert store.list_versions(patient["id"], below=2, limit=10) == [{"version": 1, "updatedAt": patient["updatedAt"]}]


def test_every_change_is_the_next_version(store, patient, clock):
    clock.advance(1)
    assert store.replace_patient(patient["id"], RENAMED)["version"] == 2
    report = write_report(store, patient["id"])
    assert store.get_patient(patient["id"])["version"] == 3
    store.delete_report(patient["id"], report["id"])
    after = store.get_patient(patient["id"])
    assert after["version"] == 4 and after["reports"] == []


def test_a_version_keeps_the_fields_it_had(store, patient, clock):
    clock.advance(1)
    replaced = store.replace_patient(patient["id"], RENAMED)
    first, second = store.get_version(patient["id"], 1), store.get_version(patient["id"], 2)
    assert first["version"] == 1 and fields_of(first) == {**PATIENT}
    assert first["updatedAt"] == patient["updatedAt"]
    assert second["version"] == 2 and fields_of(second) == RENAMED and second["updatedAt"] == replaced["updatedAt"]


def test_versions_are_listed_newest_first_below_the_cursor(store, patient):
    for number in range(2, 6):
        store.replace_patient(patient["id"], {**PATIENT, "notes": str(number)})
    assert [v["version"] for v in store.list_versions(patient["id"], below=6, limit=10)] == [5, 4, 3, 2, 1]
    assert [v["version"] for v in store.list_versions(patient["id"], below=4, limit=2)] == [3, 2]
    assert store.list_versions(patient["id"], below=1, limit=10) == []


def test_a_version_that_never_existed_is_not_found(store, patient):
    for version in (0, 2, 99):
        with pytest.raises(NotFound):
            store.get_version(patient["id"], version)


def test_versions_of_another_patient_are_not_mixed_in(store, owner, patient):
    other = store.create_patient(owner["id"], RENAMED)
    store.replace_patient(other["id"], PATIENT)
    assert [v["version"] for v in store.list_versions(patient["id"], below=10, limit=10)] == [1]


# -- conditional writes ---------------------------------------------------------------------------

def test_a_write_naming_the_current_version_succeeds(store, patient):
    assert store.replace_patient(patient["id"], RENAMED, expected_version=1)["version"] == 2


def test_a_write_naming_an_old_version_changes_nothing(store, patient):
    store.replace_patient(patient["id"], RENAMED)
    with pytest.raises(VersionMismatch):
        store.replace_patient(patient["id"], {**PATIENT, "notes": "lost?"}, expected_version=1)
    after = store.get_patient(patient["id"])
    assert after["version"] == 2 and after["lastName"] == "King" and "notes" not in after
    assert stored_version_count(store, patient["id"]) == 2


def test_a_delete_naming_an_old_version_deletes_nothing(store, patient):
    store.replace_patient(patient["id"], RENAMED)
    with pytest.raises(VersionMismatch):
        store.delete_patient(patient["id"], expected_version=1)
    assert store.get_patient(patient["id"])["version"] == 2
    store.delete_patient(patient["id"], expected_version=2)
    with pytest.raises(NotFound):
        store.get_patient(patient["id"])


@pytest.mark.parametrize("write", ["replace", "delete"])
def test_a_conditional_write_to_a_missing_patient_is_not_found(store, patient, write):
    store.delete_patient(patient["id"])
    with pytest.raises(NotFound):
        if write == "replace":
            store.replace_patient(patient["id"], RENAMED, expected_version=1)
        else:
            store.delete_patient(patient["id"], expected_version=1)


def test_of_sixteen_writers_naming_one_version_exactly_one_wins(store, patient):
    results, errors = race(16, lambda index: store.replace_patient(
        patient["id"], {**PATIENT, "notes": f"writer {index}"}, expected_version=1))
    assert len(results) == 1 and len(errors) == 15
    assert all(isinstance(error, VersionMismatch) for error in errors)
    after = store.get_patient(patient["id"])
    assert after["version"] == 2 and after["notes"] == results[0]["notes"]
    assert [v["version"] for v in store.list_versions(patient["id"], below=10, limit=10)] == [2, 1]


def test_of_sixteen_conditional_deletes_and_updates_exactly_one_wins(store, patient):
    def delete_or_update(index):
        if index % 2:
            return store.delete_patient(patient["id"], expected_version=1) or "deleted"
        return store.replace_patient(patient["id"], RENAMED, expected_version=1)

    results, errors = race(16, delete_or_update)
    assert len(results) == 1
    assert all(isinstance(error, (VersionMismatch, NotFound)) for error in errors)
    if results == ["deleted"]:
        with pytest.raises(NotFound):
            store.get_patient(patient["id"])
        assert stored_version_count(store, patient["id"]) == 0
    else:
        assert store.get_patient(patient["id"])["version"] == 2


def test_sixteen_unconditional_writers_each_make_a_version_of_their_own(store, patient):
    results, errors = race(16, lambda index: store.replace_patient(patient["id"], {**PATIENT, "notes": str(index)}))
    assert errors == []
    assert sorted(result["version"] for result in results) == list(range(2, 18))
    listed = store.list_versions(patient["id"], below=100, limit=100)
    assert [v["version"] for v in listed] == list(range(17, 0, -1))
    # The newest version's fields are what the patient shows: nothing was half-applied.
    newest = store.get_version(patient["id"], 17)
    assert fields_of(newest) == {name: value for name, value in store.get_patient(patient["id"]).items()
                                 if name in fields_of(newest)}


def test_uploads_racing_with_replaces_lose_neither(store, patient):
    """Eight uploads and eight replaces at once: every report stays listed (a replace
    never writes back a report list read before an upload) and every change is a version."""
    def upload_or_replace(index):
        if index % 2:
            return write_report(store, patient["id"], description=str(index))["id"]
        return store.replace_patient(patient["id"], {**PATIENT, "notes": str(index)})["version"]

    results, errors = race(16, upload_or_replace)
    assert errors == []
    after = store.get_patient(patient["id"])
    assert sorted(report["id"] for report in after["reports"]) == sorted(r for r in results if isinstance(r, str))
    assert after["version"] == 17


# -- history is erased with the patient ------------------------------------------------------------

def test_deleting_a_patient_erases_its_history(store, patient):
    store.replace_patient(patient["id"], RENAMED)
    store.delete_patient(patient["id"])
    assert stored_version_count(store, patient["id"]) == 0
    with pytest.raises(NotFound):
        store.get_version(patient["id"], 1)


def test_erasing_an_account_erases_its_patients_history(store, owner, patient):
    store.replace_patient(patient["id"], RENAMED)
    store.erase_user(owner["id"])
    assert stored_version_count(store, patient["id"]) == 0


# -- ranged reads ---------------------------------------------------------------------------------

DATA = bytes(range(256)) * 4096  # 1 MiB: four GridFS chunks and a bit


def read_range(store, patient_id, report_id, start, length) -> bytes:
    _, chunks = store.open_report(patient_id, report_id, start=start, length=length)
    try:
        return b"".join(chunks)
    finally:
        chunks.close()


@pytest.mark.parametrize("start, length", [
    (0, 1), (0, len(DATA)), (len(DATA) - 1, 1), (12345, 100_000),
    (255 * 1024 - 3, 6),            # across the first GridFS chunk boundary
    (2 * 255 * 1024, 255 * 1024),   # exactly the third chunk
    (700_000, None),                # from an offset to the end
])
def test_a_report_reads_back_from_any_offset(store, patient, start, length):
    report = write_report(store, patient["id"], DATA)
    expected = DATA[start:] if length is None else DATA[start:start + length]
    assert read_range(store, patient["id"], report["id"], start, length) == expected


class RecordingSource:
    """A file-like source that records what was asked of it."""

    def __init__(self, data: bytes):
        self.data, self.position, self.calls = data, 0, []

    def seek(self, position):
        self.calls.append(("seek", position))
        self.position = position

    def read(self, size):
        self.calls.append(("read", self.position, size))
        chunk = self.data[self.position:self.position + size]
        self.position += len(chunk)
        return chunk

    def close(self):
        self.calls.append(("close",))


def test_ranged_chunks_seek_first_and_never_read_before_or_past_the_range():
    source = RecordingSource(bytes(200_000))
    chunks = ReportChunks(source, start=100_000, length=70_000)
    assert sum(len(chunk) for chunk in chunks) == 70_000
    assert source.calls[0] == ("seek", 100_000)
    reads = [call for call in source.calls if call[0] == "read"]
    assert min(call[1] for call in reads) == 100_000
    assert max(call[1] + call[2] for call in reads) == 170_000
