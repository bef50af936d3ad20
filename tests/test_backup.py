"""Backup and restore beneath the command line (storage/backup.py and each store's backup.py).

A store is filled through the Store interface, backed up, and restored into a fresh
store of each kind the run has (SQLite always, MongoDB under `make test-mongo`): every
record must come back as the interface shows it, the audit chains must verify, and a
report deleted while a backup runs must be in it whole or not at all. A damaged backup
must be refused before the target is touched. The command, a running server and a
backup under load: tests/test_backup_under_load.py.
"""

import hashlib
import json
import os
import stat
from contextlib import contextmanager

import pytest

from storage.audit_writer import AuditQuarantine, AuditWriter
from storage.backup import BackupError, ReportGone, check_backup, restore_backup, take_backup
from storage.hash_chain import verify_chains
from tests.conftest import STORES
from tests.support.mongodb import drop_mongodb_database
from tests.support.records import PATIENT, write_report
from tests.support.stores import open_test_store

HOUR = 3600.0
KEY = b"k" * 64


@pytest.fixture(params=STORES)
def target(request, tmp_path, clock):
    """An empty store of each kind to restore into, and its data directory."""
    store = open_test_store(request.param, tmp_path / "target", clock)
    yield store, tmp_path / "target" / "data"
    store.close()
    if request.param == "mongodb":
        drop_mongodb_database(store.uri)


def fill(store, clock, data_dir) -> dict:
    """Two users with sessions (one refreshed twice), patients with several versions
    and reports, audit events in a chain; what a restore must give back."""
    alice = store.create_user("Alice", b"$2b$04$alice-hash")
    bob = store.create_user("bob", b"$2b$04$bob-hash")
    session = store.create_session(alice["id"], "a" * 64, clock() + HOUR, password_hash=b"$2b$04$alice-hash")
    assert store.rotate_refresh(session["id"], "a" * 64, "b" * 64)
    assert store.rotate_refresh(session["id"], "b" * 64, "c" * 64)
    other = store.create_session(bob["id"], "d" * 64, clock() + HOUR, password_hash=b"$2b$04$bob-hash")
    expired = store.create_session(bob["id"], "e" * 64, clock() + 10, password_hash=b"$2b$04$bob-hash")
    ada = store.create_patient(alice["id"], PATIENT)
    clock.advance(1)
    store.replace_patient(ada["id"], {**PATIENT, "firstName": "Augusta Ada", "notes": "née Byron"})
    scan = write_report(store, ada["id"], b"%PDF-1.7 " + bytes(range(256)) * 700)
    kept = write_report(store, ada["id"], b"\x89PNG\r\n\x1a\n" + b"\0" * 50, filename="x.png",
                        contentType="image/png")
    store.delete_report(ada["id"], scan["id"])
    grace = store.create_patient(bob["id"], {**PATIENT, "firstName": "Grace", "lastName": "Hopper"})
    gone = store.create_patient(bob["id"], {**PATIENT, "firstName": "Gone"})
    store.delete_patient(gone["id"])
    writer = AuditWriter(store, quarantine=AuditQuarantine(data_dir / "audit-quarantine.ndjson"), clock=clock,
                         flush_interval=0.002)
    for number in range(30):
        writer.record({"action": "read", "outcome": 200, "userId": alice["id"], "clientAddress": "192.0.2.1",
                       "requestId": f"request-{number}", "resourceType": "Patient", "resourceId": ada["id"],
                       "patientId": ada["id"], "ownerId": alice["id"]})
    assert writer.close()
    clock.advance(20)  # the third session has expired
    return {"users": (alice, bob), "sessions": (session, other, expired), "patients": (ada, grace),
            "report": kept}


def backup_of(store, clock, tmp_path, *, key: str = "file"):
    data_dir = tmp_path / "source-data"
    data_dir.mkdir(exist_ok=True)
    if key == "file":
        (data_dir / "jwt-secret").write_bytes(KEY)
    destination = tmp_path / "backup"
    manifest = take_backup(store, destination, data_dir=data_dir, key=key, now="2026-12-07T00:00:00.000Z")
    return destination, manifest


def test_a_restore_gives_back_every_record_as_the_store_shows_it(store, clock, tmp_path, target):
    filled = fill(store, clock, tmp_path)
    destination, manifest = backup_of(store, clock, tmp_path)
    assert manifest["counts"] == {"auditChains": 1, "auditEvents": 30, "patients": 2, "reportBytes": 58,
                                  "reports": 1, "sessions": 2, "users": 2, "versions": 6}
    restored, data_dir = target
    restore_backup(restored, check_backup(destination), data_dir=data_dir)

    alice, bob = filled["users"]
    assert restored.find_user("ALICE") == store.find_user("alice")
    assert restored.find_user("bob")["passwordHash"] == b"$2b$04$bob-hash"
    session, other, expired = filled["sessions"]
    assert restored.session_user(session["id"], alice["id"]) == store.session_user(session["id"], alice["id"])
    assert restored.list_sessions(bob["id"]) == store.list_sessions(bob["id"]) == [other]
    assert restored.session_user(expired["id"], bob["id"]) is None
    # Spent tokens are still told apart from forged ones; the current one still refreshes, once.
    assert restored.refresh_token_issuer(session["id"], "a" * 64) == alice["id"]
    assert restored.rotate_refresh(session["id"], "b" * 64, "f" * 64) is None
    assert restored.refresh_token_issuer(session["id"], "0" * 64) is None
    assert restored.rotate_refresh(session["id"], "c" * 64, "f" * 64)["id"] == session["id"]

    for patient in filled["patients"]:
        assert restored.get_patient(patient["id"]) == store.get_patient(patient["id"])
        current = store.get_patient(patient["id"])["version"]
        assert (restored.list_versions(patient["id"], below=current + 1, limit=10)
                == store.list_versions(patient["id"], below=current + 1, limit=10))
        for version in range(1, current + 1):
            assert restored.get_version(patient["id"], version) == store.get_version(patient["id"], version)
    ada = filled["patients"][0]
    metadata, chunks = restored.open_report(ada["id"], filled["report"]["id"])
    assert b"".join(chunks) == b"\x89PNG\r\n\x1a\n" + b"\0" * 50
    chunks.close()
    assert restored.stored_report_ids() == {filled["report"]["id"]}

    assert restored.audit_chains() == store.audit_chains()
    chain = store.audit_chains()[0]["chain"]
    assert list(restored.audit_events(chain)) == list(store.audit_events(chain))
    assert verify_chains(restored) == (1, 30)
    assert restored.list_audit(alice["id"], limit=5) == store.list_audit(alice["id"], limit=5)
    assert (data_dir / "jwt-secret").read_bytes() == KEY
    # And the restored store works on: a new version, a new patient.
    assert restored.replace_patient(ada["id"], PATIENT, expected_version=ada["version"] + 4)["version"] == 6
    assert restored.create_patient(bob["id"], PATIENT)["ownerId"] == bob["id"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_backup_is_readable_by_its_owner_only(store, clock, tmp_path):
    fill(store, clock, tmp_path)
    destination, manifest = backup_of(store, clock, tmp_path)
    assert stat.S_IMODE(destination.stat().st_mode) == 0o700
    assert stat.S_IMODE((destination / "reports").stat().st_mode) == 0o700
    for path in destination.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert sorted(path.name for path in destination.iterdir()) == [
        "audit-chains.ndjson", "audit-events.ndjson", "jwt-secret", "manifest.json", "patients.ndjson", "reports",
        "sessions.ndjson", "users.ndjson"]  # the snapshot's scratch copy is gone


def test_the_manifest_names_the_store_and_every_files_hash(store, clock, tmp_path):
    fill(store, clock, tmp_path)
    destination, manifest = backup_of(store, clock, tmp_path)
    assert json.loads((destination / "manifest.json").read_text()) == manifest
    assert (manifest["format"], manifest["formatVersion"], manifest["store"]) == ("meditrack-backup", 1, store.name)
    assert manifest["jwtKey"] == "file"
    for name, listed in manifest["files"].items():
        data = (destination / name).read_bytes()
        assert listed == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_a_key_from_the_environment_is_not_copied_and_the_manifest_says_so(store, clock, tmp_path, target):
    fill(store, clock, tmp_path)
    destination, manifest = backup_of(store, clock, tmp_path, key="environment")
    assert manifest["jwtKey"] == "environment" and "jwt-secret" not in manifest["files"]
    restored, data_dir = target
    restore_backup(restored, check_backup(destination), data_dir=data_dir)
    assert not (data_dir / "jwt-secret").exists()


class DeletesAReport:
    """A store whose snapshot deletes a report of the first patient it hands out, just
    before or just after the backup copies that report's bytes: a delete that lands
    while the backup runs."""

    def __init__(self, store, *, after_copy: bool):
        self._store, self._after_copy = store, after_copy
        self.name = store.name

    @contextmanager
    def snapshot(self, scratch):
        with self._store.snapshot(scratch) as snapshot:
            yield Deleting(snapshot, self._store, self._after_copy)


class Deleting:
    def __init__(self, snapshot, store, after_copy):
        self._snapshot, self._store, self._after_copy = snapshot, store, after_copy
        self.deleted = None

    def __getattr__(self, name):
        return getattr(self._snapshot, name)

    def patients(self):
        for patient in self._snapshot.patients():
            if patient["reports"] and self.deleted is None and not self._after_copy:
                self._delete(patient)
            yield patient

    def report_bytes(self, report_id):
        yield from self._snapshot.report_bytes(report_id)
        if self._after_copy and self.deleted is None:
            self._delete(next(patient for patient in self._snapshot.patients()
                              if any(report["id"] == report_id for report in patient["reports"])))

    def _delete(self, patient):
        self.deleted = patient["reports"][0]["id"]
        self._store.delete_report(patient["id"], self.deleted)


@pytest.mark.parametrize("after_copy", [False, True], ids=["before its bytes are copied", "after"])
def test_a_report_deleted_during_a_backup_is_in_it_with_its_bytes_or_not_at_all(store, clock, tmp_path, target,
                                                                               after_copy):
    filled = fill(store, clock, tmp_path)
    ada, report = filled["patients"][0], filled["report"]
    destination, manifest = backup_of(DeletesAReport(store, after_copy=after_copy), clock, tmp_path)
    with pytest.raises(Exception):
        store.open_report(ada["id"], report["id"])  # the delete did happen
    listed = [each["id"] for line in (destination / "patients.ndjson").read_text().splitlines()
              for each in json.loads(line)["reports"]]
    assert listed == ([report["id"]] if after_copy else [])
    assert sorted(path.name for path in (destination / "reports").iterdir()) == listed
    restored, data_dir = target
    restore_backup(restored, check_backup(destination), data_dir=data_dir)
    assert [each["id"] for each in restored.get_patient(ada["id"])["reports"]] == listed
    for report_id in listed:
        metadata, chunks = restored.open_report(ada["id"], report_id)
        assert hashlib.sha256(b"".join(chunks)).hexdigest() == metadata["sha256"]
        chunks.close()


def test_report_bytes_that_are_gone_say_so(store, clock, tmp_path):
    filled = fill(store, clock, tmp_path)
    ada, report = filled["patients"][0], filled["report"]
    with store.snapshot(tmp_path) as snapshot:
        store.delete_report(ada["id"], report["id"])
        with pytest.raises(ReportGone):
            b"".join(snapshot.report_bytes(report["id"]))


DAMAGE = {
    "a report's bytes": lambda backup: flip_last_byte(next((backup / "reports").iterdir())),
    "a record file": lambda backup: flip_last_byte(backup / "patients.ndjson"),
    "the key file": lambda backup: flip_last_byte(backup / "jwt-secret"),
    "a report file removed": lambda backup: next((backup / "reports").iterdir()).unlink(),
    "the manifest's counts": lambda backup: edit_manifest(backup, lambda m: m["counts"].update(users=3)),
    "a file the manifest lists removed": lambda backup: (backup / "sessions.ndjson").unlink(),
    "no manifest (a backup that did not finish)": lambda backup: (backup / "manifest.json").unlink(),
    "another format version": lambda backup: edit_manifest(backup, lambda m: m.update(formatVersion=2)),
}


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def edit_manifest(backup, change):
    manifest = json.loads((backup / "manifest.json").read_text())
    change(manifest)
    (backup / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_backup_is_refused_before_anything_is_written(store, clock, tmp_path, target, damage):
    fill(store, clock, tmp_path)
    destination, manifest = backup_of(store, clock, tmp_path)
    DAMAGE[damage](destination)
    restored, data_dir = target
    with pytest.raises(BackupError):
        restore_backup(restored, check_backup(destination), data_dir=data_dir)
    assert restored.is_empty()
    assert not (data_dir / "jwt-secret").exists()


def test_a_restore_refuses_a_store_that_holds_data(store, clock, tmp_path, target):
    fill(store, clock, tmp_path)
    destination, manifest = backup_of(store, clock, tmp_path)
    restored, data_dir = target
    restored.create_user("someone", b"hash")
    with pytest.raises(BackupError, match="already holds data"):
        restore_backup(restored, check_backup(destination), data_dir=data_dir)
    assert restored.find_user("alice") is None


def test_a_restore_refuses_a_data_directory_with_another_key(store, clock, tmp_path, target):
    fill(store, clock, tmp_path)
    destination, manifest = backup_of(store, clock, tmp_path)
    restored, data_dir = target
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "jwt-secret").write_bytes(b"another key " * 6)
    with pytest.raises(BackupError, match="different JWT key"):
        restore_backup(restored, check_backup(destination), data_dir=data_dir)
    assert restored.is_empty()


def test_a_backup_goes_into_a_new_directory_only(store, clock, tmp_path):
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "precious").write_text("kept")
    with pytest.raises(BackupError, match="already exists"):
        backup_of(store, clock, tmp_path)
    assert (tmp_path / "backup" / "precious").read_text() == "kept"


def test_a_backup_that_fails_leaves_no_directory(store, clock, tmp_path):
    filled = fill(store, clock, tmp_path)

    class Failing(DeletesAReport):
        @contextmanager
        def snapshot(self, scratch):
            with self._store.snapshot(scratch) as snapshot:
                snapshot.audit_events = lambda: iter([{"not": "serializable", "x": object()}])
                yield snapshot

    with pytest.raises(TypeError):
        backup_of(Failing(store, after_copy=False), clock, tmp_path)
    assert not (tmp_path / "backup").exists()
    assert store.get_patient(filled["patients"][0]["id"])  # the store is untouched


def test_a_failed_sqlite_restore_writes_nothing(tmp_path, clock):
    source = open_test_store("sqlite", tmp_path / "source", clock)
    filled = fill(source, clock, tmp_path)
    destination, manifest = backup_of(source, clock, tmp_path)
    source.close()
    target = open_test_store("sqlite", tmp_path / "target", clock)
    try:
        # A patient whose owner is not in the backup: the restore's one transaction fails.
        lines = (destination / "users.ndjson").read_text().splitlines()
        (destination / "users.ndjson").write_text(lines[0] + "\n")
        edit_manifest(destination, lambda m: (m["counts"].update(users=1), m["files"].update({"users.ndjson": {
            "sha256": hashlib.sha256((lines[0] + "\n").encode()).hexdigest(), "size": len(lines[0]) + 1}})))
        with pytest.raises(Exception):
            restore_backup(target, check_backup(destination), data_dir=tmp_path / "target" / "data")
        assert target.is_empty()
        assert target.stored_report_ids() == set()  # the files it placed are gone again
        assert filled["report"]["id"] not in os.listdir(tmp_path / "target" / "data" / "reports")
    finally:
        target.close()


def test_bytes_missing_while_their_report_is_still_there_fail_the_backup(store, clock, tmp_path):
    """Not a delete during the backup (that leaves the report out) but bytes that are not
    where the settings look, e.g. a backup run without the server's object store settings."""
    filled = fill(store, clock, tmp_path)
    report = filled["report"]
    store.reports.remove_file(report["id"]) if store.name == "sqlite" else store.database.delete_file(report["id"])
    with pytest.raises(BackupError, match=f"report {report['id']} is in the store but its bytes are not"):
        backup_of(store, clock, tmp_path)
    assert not (tmp_path / "backup").exists()
