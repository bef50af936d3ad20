"""Backup and restore: everything a store holds, in a directory that either store reads back.

`python meditrack.py backup DEST` writes one; `python meditrack.py restore SRC` reads
one into an empty store. The records are in a shape neither store owns, so a backup of
the embedded store restores into MongoDB, and back: that is how a deployment moves
from one to the other (docs/operations.md). A backup is a new directory, readable by
its owner only (it holds patient data and the key that signs tokens):

    manifest.json            what it is: format and version, the store it came from,
                             when, how many of each record, and the SHA-256 and size of
                             every file below; written last, so a directory without it
                             is a backup that did not finish
    users.ndjson             one JSON object per line, in the shapes below
    sessions.ndjson
    patients.ndjson
    audit-chains.ndjson      each audit chain's head
    audit-events.ndjson      every audit event, chain by chain, in sequence order
    reports/<report id>      a report's bytes; its SHA-256 is in its patient's line
    jwt-secret               the JWT key, when it comes from the key file
    audit-quarantine.ndjson  audit events the store refused, when there are any

The records (each as the store would return it, storage/base.py, plus what a restore
needs to rebuild it):

    user     {"id", "username", "passwordHash" (base64 of the bcrypt hash), "createdAt"}
    session  {"id", "userId", "createdAt", "lastUsedAt", "expiresAt" (seconds since the
              epoch), "refreshHash" (its current refresh token's SHA-256, or null),
              "spentRefreshHashes": [the SHA-256 of each token it handed out and took back]}
    patient  {"id", "ownerId", "fields", "version", "createdAt", "updatedAt",
              "versions": [{"version", "fields", "updatedAt"}, ...], "reports": [report]}
    chain    {"chain", "firstSequence", "previousHash", "lastSequence", "lastHash"}
    event    every field of storage/base.py's STORED_FIELDS

Left out, as nothing a restore would miss: failed logins (they expire within the
hour), sessions that have expired, accounts being erased (with what they own), and
uploads not yet committed. Bulk exports (`<data-dir>/bulk/`) are copies of the
records and expire by themselves.
"""

import base64
import hashlib
import json
import os
import shutil
from abc import ABC, abstractmethod
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Iterable, Iterator

import system
from storage.errors import StoreError
from storage.ids import is_object_id

FORMAT = "meditrack-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RECORD_FILES = {"users": "users.ndjson", "sessions": "sessions.ndjson", "patients": "patients.ndjson",
                "auditChains": "audit-chains.ndjson", "auditEvents": "audit-events.ndjson"}
REPORTS = "reports"
KEY_FILE = "jwt-secret"                        # as settings.load_or_create_secret names it
QUARANTINE_FILE = "audit-quarantine.ndjson"    # as storage/audit_writer.py names it
CHUNK_SIZE = 1024 * 1024

# The keys each record must have: what a restore checks before it writes anything.
REQUIRED = {"users": ("id", "username", "passwordHash", "createdAt"),
            "sessions": ("id", "userId", "createdAt", "lastUsedAt", "expiresAt", "refreshHash",
                         "spentRefreshHashes"),
            "patients": ("id", "ownerId", "fields", "version", "createdAt", "updatedAt", "versions", "reports"),
            "auditChains": ("chain", "firstSequence", "previousHash", "lastSequence", "lastHash"),
            "auditEvents": ("id", "chain", "sequence", "hash")}


class BackupError(Exception):
    """A backup that cannot be taken or restored; the message says why, in one line."""


class ReportGone(Exception):
    """A report's bytes were deleted after the snapshot named them (the report was deleted
    while the backup ran): the backup leaves the report out, row and bytes."""


def bytes_missing(report_id: str) -> BackupError:
    """What a snapshot raises for bytes that are gone while their report is not: they were
    never where these settings look (the backup must run with the server's settings,
    MEDITRACK_S3_* included), or the store is damaged. Never a backup without them."""
    return BackupError(f"report {report_id} is in the store but its bytes are not where these settings look: "
                       f"run the backup with the server's settings (MEDITRACK_S3_* included)")


class Snapshot(ABC):
    """What a store hands a backup (`Store.snapshot()`): its records in the shapes above,
    as they stood at one moment where the store can give one (each store's module says
    what its snapshot promises), and each report's bytes."""

    @abstractmethod
    def users(self) -> Iterator[dict]: ...

    @abstractmethod
    def sessions(self) -> Iterator[dict]: ...

    @abstractmethod
    def patients(self) -> Iterator[dict]: ...

    @abstractmethod
    def audit_chains(self) -> list[dict]: ...

    @abstractmethod
    def audit_events(self) -> Iterator[dict]:
        """Every event of every chain, chain by chain, in sequence order."""

    @abstractmethod
    def report_bytes(self, report_id: str) -> Iterator[bytes]:
        """The report's bytes in chunks; `ReportGone`, at once or part-way, if they were deleted."""


# -- taking a backup ------------------------------------------------------------------

def _owner_only(path, flags: int) -> int:
    """open()'s opener for a file made with mode 0600 (as the key file is)."""
    return os.open(path, flags, 0o600)


class _HashedFile:
    """A new file, owner-only from its first byte, hashed as it is written."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "xb", opener=_owner_only)  # "x": a file already there is an error
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)
        self.size += len(data)

    def finish(self) -> dict:
        """Flush and sync the file; its SHA-256 and size, as the manifest lists them."""
        self._file.flush()
        system.sync_file(self._file.fileno())
        self._file.close()
        return {"sha256": self._digest.hexdigest(), "size": self.size}

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def take_backup(store, destination: Path, *, data_dir: Path, key: str, now: str) -> dict:
    """Write a backup of `store` into the new directory `destination`; its manifest.
    `key`: where the JWT key comes from, as the manifest says it: "file" (`data_dir`'s
    key file, copied), "environment" (MEDITRACK_JWT_SECRET: not copied), or "none"
    (no key yet: no token was ever signed). A failure removes the directory."""
    try:
        os.mkdir(destination, 0o700)  # the umask can only take bits away from 0700
    except FileExistsError:
        raise BackupError(f"{destination} already exists: a backup goes into a new directory") from None
    except OSError as exc:
        raise BackupError(f"cannot create {destination}: {exc.strerror}") from None
    try:
        manifest = _write_backup(store, destination, data_dir=data_dir, key=key, now=now)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    return manifest


def _write_backup(store, destination: Path, *, data_dir: Path, key: str, now: str) -> dict:
    files, counts = {}, Counter()
    (destination / REPORTS).mkdir(mode=0o700)
    with store.snapshot(destination) as snapshot:
        files[RECORD_FILES["users"]] = _write_records(destination, "users", snapshot.users(), counts)
        files[RECORD_FILES["sessions"]] = _write_records(destination, "sessions", snapshot.sessions(), counts)
        files[RECORD_FILES["patients"]] = _write_records(
            destination, "patients", _with_report_bytes(snapshot, destination / REPORTS, counts), counts)
        files[RECORD_FILES["auditChains"]] = _write_records(destination, "auditChains", snapshot.audit_chains(),
                                                            counts)
        files[RECORD_FILES["auditEvents"]] = _write_records(destination, "auditEvents", snapshot.audit_events(),
                                                            counts)
    for name, wanted in ((KEY_FILE, key == "file"), (QUARANTINE_FILE, True)):
        if wanted and (data_dir / name).is_file():
            files[name] = _copy_file(data_dir / name, destination / name)
    system.sync_directory(destination / REPORTS)
    manifest = {"format": FORMAT, "formatVersion": FORMAT_VERSION, "store": store.name, "createdAt": now,
                "jwtKey": key, "counts": dict(sorted(counts.items())),
                "files": files}
    out = _HashedFile(destination / MANIFEST)
    out.write(json.dumps(manifest, indent=2).encode("utf-8") + b"\n")
    out.finish()
    system.sync_directory(destination)
    return manifest


def _write_records(destination: Path, kind: str, records: Iterable[dict], counts: Counter) -> dict:
    out = _HashedFile(destination / RECORD_FILES[kind])
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")
        counts[kind] += 1
    return out.finish()


def _with_report_bytes(snapshot: Snapshot, directory: Path, counts: Counter) -> Iterator[dict]:
    """Each patient, once its reports' bytes are copied: a report whose bytes are gone
    (deleted since the snapshot) is left out, so no line names a report the backup
    has no bytes for."""
    for patient in snapshot.patients():
        kept = [report for report in patient["reports"] if _copy_report(snapshot, report, directory)]
        counts["versions"] += len(patient["versions"])
        counts["reports"] += len(kept)
        counts["reportBytes"] += sum(report["size"] for report in kept)
        yield {**patient, "reports": kept}


def _copy_report(snapshot: Snapshot, report: dict, directory: Path) -> bool:
    out = _HashedFile(directory / report["id"])
    try:
        with closing(snapshot.report_bytes(report["id"])) as chunks:
            for chunk in chunks:
                out.write(chunk)
    except ReportGone:
        out.discard()
        return False
    except BaseException:
        out.discard()
        raise
    written = out.finish()
    if (written["sha256"], written["size"]) != (report["sha256"], report["size"]):
        raise BackupError(f"report {report['id']}: its stored bytes do not match its SHA-256 and size; "
                          f"the store is damaged")
    return True


def _copy_file(source: Path, target: Path) -> dict:
    out = _HashedFile(target)
    with open(source, "rb") as file:
        while data := file.read(CHUNK_SIZE):
            out.write(data)
    return out.finish()


# -- reading one back -----------------------------------------------------------------

class BackupReader:
    """A backup that `check_backup` found whole: its records, and its report files.
    What `Store.restore` reads from."""

    def __init__(self, source: Path, manifest: dict):
        self.source = source
        self.manifest = manifest

    def records(self, kind: str) -> Iterator[dict]:
        with open(self.source / RECORD_FILES[kind], "rb") as file:
            for line in file:
                yield json.loads(line)

    def report_path(self, report_id: str) -> Path:
        return self.source / REPORTS / report_id

    @staticmethod
    def password_hash(user: dict) -> bytes:
        return base64.b64decode(user["passwordHash"])


def user_record(user_id: str, username: str, password_hash: bytes, created_at: str) -> dict:
    """A user as a backup holds it (the hash is bytes; JSON carries it in base64)."""
    return {"id": user_id, "username": username, "passwordHash": base64.b64encode(password_hash).decode("ascii"),
            "createdAt": created_at}


def check_backup(source: Path) -> BackupReader:
    """Everything a restore can check before it writes: the manifest, each file's SHA-256
    and size, each record's keys and ids, and each report's bytes against the SHA-256
    its patient's line gives. `BackupError` names the first thing wrong."""
    try:
        manifest = json.loads((source / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise BackupError(f"{source} has no {MANIFEST}: it is not a backup, or one that did not finish") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source / MANIFEST} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{source / MANIFEST} does not describe a MediTrack backup")
    if manifest.get("formatVersion") != FORMAT_VERSION:
        raise BackupError(f"{source} is a backup in format version {manifest.get('formatVersion')}; "
                          f"this MediTrack reads version {FORMAT_VERSION}")
    files = manifest.get("files") or {}
    for name in (*RECORD_FILES.values(), *((KEY_FILE,) if manifest.get("jwtKey") == "file" else ())):
        if name not in files:
            raise BackupError(f"the manifest lists no {name}: the backup is incomplete")
    for name, expected in files.items():
        if name not in (*RECORD_FILES.values(), KEY_FILE, QUARANTINE_FILE):
            raise BackupError(f"the manifest lists {name!r}, which no backup holds")
        if _file_digest(source / name) != (expected.get("sha256"), expected.get("size")):
            raise BackupError(f"{name} does not match the SHA-256 and size in the manifest: the backup is damaged")
    reader = BackupReader(source, manifest)
    for kind in RECORD_FILES:
        count = sum(1 for _ in _checked_records(reader, kind))
        if count != manifest.get("counts", {}).get(kind, 0):
            raise BackupError(f"{RECORD_FILES[kind]} holds {count} records, the manifest says "
                              f"{manifest.get('counts', {}).get(kind, 0)}")
    return reader


def _checked_records(reader: BackupReader, kind: str) -> Iterator[dict]:
    name = RECORD_FILES[kind]
    try:
        for number, record in enumerate(reader.records(kind), 1):
            missing = [key for key in REQUIRED[kind] if not isinstance(record, dict) or key not in record]
            if missing:
                raise BackupError(f"{name}, line {number}: no {', '.join(missing)}")
            if kind in ("users", "sessions", "patients") and not is_object_id(record["id"]):
                raise BackupError(f"{name}, line {number}: {record['id']!r} is not an id")
            if kind == "patients":
                for report in record["reports"]:
                    _check_report(reader, report, f"{name}, line {number}")
            yield record
    except ValueError as exc:  # json's errors, UnicodeDecodeError among them
        raise BackupError(f"{name} is not one JSON object per line: {exc}") from None


def _check_report(reader: BackupReader, report: dict, where: str) -> None:
    if not is_object_id(report.get("id")):
        raise BackupError(f"{where}: a report without a valid id")
    if _file_digest(reader.report_path(report["id"])) != (report.get("sha256"), report.get("size")):
        raise BackupError(f"{REPORTS}/{report['id']} is missing, or does not match its report's SHA-256 and size: "
                          f"the backup is damaged")


def described(counts: dict) -> str:
    """A manifest's counts in one line."""
    return (f"{counts.get('users', 0)} users, {counts.get('sessions', 0)} sessions, "
            f"{counts.get('patients', 0)} patients ({counts.get('versions', 0)} versions), "
            f"{counts.get('reports', 0)} reports ({counts.get('reportBytes', 0)} bytes), "
            f"{counts.get('auditEvents', 0)} audit events in {counts.get('auditChains', 0)} chains")


def _file_digest(path: Path) -> tuple[str, int] | None:
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "rb") as file:
            while data := file.read(CHUNK_SIZE):
                digest.update(data)
                size += len(data)
    except OSError:
        return None
    return digest.hexdigest(), size


def restore_backup(store, reader: BackupReader, *, data_dir: Path) -> dict:
    """Write a checked backup into `store`, which must be empty, and its files (the JWT
    key, the quarantine) into `data_dir`; its manifest. `BackupError` before anything is
    written if the target holds data or a different key."""
    if not store.is_empty():
        raise BackupError(f"the {store.name} store named by the settings already holds data: "
                          f"restore only into an empty one")
    quarantine = data_dir / QUARANTINE_FILE
    if quarantine.is_file() and quarantine.stat().st_size:
        raise BackupError(f"{quarantine} holds audit events: restore only into an empty data directory")
    key = data_dir / KEY_FILE
    if KEY_FILE in reader.manifest["files"] and key.exists():
        if key.read_bytes() != (reader.source / KEY_FILE).read_bytes():
            raise BackupError(f"{key} holds a different JWT key: move it away, or restore into another data "
                              f"directory (tokens are signed with the backup's key)")
    data_dir.mkdir(parents=True, exist_ok=True)
    if KEY_FILE in reader.manifest["files"] and not key.exists():
        _copy_file(reader.source / KEY_FILE, key)  # first: a restore retried after a failure finds it equal
    try:
        store.restore(reader)
    except StoreError as exc:
        left = ("nothing was written" if store.name == "sqlite" else
                "part of the backup may be in the database: drop it before restoring again")
        raise BackupError(f"{exc}; {left}") from exc
    if QUARANTINE_FILE in reader.manifest["files"]:
        quarantine.unlink(missing_ok=True)  # empty, as checked above
        _copy_file(reader.source / QUARANTINE_FILE, quarantine)
    system.sync_directory(data_dir)
    return reader.manifest
