"""The `Store` interface: everything the handlers may ask of a database.

Two implementations stand behind it — `storage/sqlite/store.py` (embedded, the default) and
`storage/mongo/store.py` (MongoDB) — and one contract test suite runs against both. The rules
that make them interchangeable:

- plain dicts in and out, never a cursor, row or driver type;
- ids are 24-hex ObjectId strings (`storage/ids.py`), timestamps ISO 8601 UTC strings;
- failures are the project's own errors (`storage/errors.py`), never a driver's.

A patient as a store returns it:
    {"id", "ownerId", <the PatientInput fields>, "reports": [...], "version", "createdAt", "updatedAt"}
`version` is 1 when the patient is created and one more on every change (its fields
replaced, a report added or deleted). A store keeps every version's fields: a
patient's history, erased with it. Writes that take `expected_version` change nothing
and raise `VersionMismatch` unless the patient is still at that version, checked in
the same atomic step as the write, never by reading first.
A version as a store returns it: {"version", <the PatientInput fields>, "updatedAt"}.
A user: {"id", "username", "createdAt"} plus "passwordHash" (bytes) from `find_user`.
A session: {"id", "userId", "createdAt", "lastUsedAt", "expiresAt"}; it is alive until
it is ended or `expiresAt` passes (a fixed time after login: refreshing does not move
it), and of its refresh tokens only their SHA-256 is kept.
A report: {"id", "filename", "contentType", "size", "sha256", "sha1", "description",
"uploadedAt"}; "sha1" is the base64 SHA-1 a FHIR Attachment carries, computed as the
upload streams. A report stored before that gets it when a store first opens the
database, from its bytes: None only if they could not be read.
An audit event: the fields of STORED_FIELDS below; a chain's head:
{"chain", "firstSequence", "previousHash", "lastSequence", "lastHash"}.

Report bytes are written through a `ReportWriter`, in two steps so that an upload is
all or nothing: `write` streams the bytes somewhere no reader looks, and `commit`
makes them and their metadata visible together. Leaving the writer's `with` block
without a commit (a bad file type, a size limit, a client gone) throws the bytes away.
"""

import base64
import hashlib
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import Iterable, Iterator


# An event as the store keeps it. Every field but `hash` goes into the hash; `ownerId`
# (whose patient it was) decides who may read the event and is never shown.
PUBLIC_FIELDS = ("id", "recorded", "action", "outcome", "userId", "sessionId", "clientAddress", "requestId",
                 "resourceType", "resourceId", "patientId", "hash")
STORED_FIELDS = PUBLIC_FIELDS + ("ownerId", "chain", "sequence")


def base64_sha1(chunks: Iterable[bytes]) -> str:
    """The SHA-1 of some bytes in base64: FHIR's Attachment.hash (datatypes.html#Attachment)."""
    digest = hashlib.sha1()
    for chunk in chunks:
        digest.update(chunk)
    return base64_digest(digest)


def base64_digest(digest) -> str:
    """A hashlib object's digest in base64, as Attachment.hash carries it (an upload
    hashes as it streams, then asks for this)."""
    return base64.b64encode(digest.digest()).decode("ascii")


def utc_timestamp(seconds: float) -> str:
    """ISO 8601 in UTC with millisecond precision, e.g. 2026-11-24T10:15:30.123Z."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)  # rounded to the microsecond
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ReportWriter(ABC):
    """Streams one report's bytes in; `commit` publishes them, anything else discards them."""

    report_id: str  # chosen up front: the stored bytes are named by it, never by the client

    @abstractmethod
    def write(self, chunk: bytes) -> None:
        """Append bytes to the report being written."""

    @abstractmethod
    def commit(self, patient_id: str, metadata: dict) -> dict:
        """Make the bytes and the report's metadata (filename, contentType, size,
        sha256, sha1, description) visible at once; `NotFound` if the patient is gone."""

    @abstractmethod
    def abort(self) -> None:
        """Discard whatever was written; safe to call after a commit (it does nothing)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.abort()


class Store(ABC):
    name: str  # "sqlite" or "mongodb", as /health reports it

    # -- users ---------------------------------------------------------------
    @abstractmethod
    def create_user(self, username: str, password_hash: bytes) -> dict:
        """Insert a user; `Conflict` if the username is taken, ignoring case."""

    @abstractmethod
    def find_user(self, username: str) -> dict | None:
        """The user with this username (ignoring case), with its passwordHash."""

    @abstractmethod
    def set_password(self, user_id: str, password_hash: bytes) -> None:
        """Replace the user's password hash."""

    @abstractmethod
    def erase_user(self, user_id: str) -> None:
        """Erase the user and everything it owns: sessions, patients, reports and their
        bytes. The account is unusable (no login, no session) before anything else
        goes, and an erasure a crash interrupts is finished when the store next opens."""

    # -- failed logins (the log of handlers/backoff.py, shared by every worker) ----------
    @abstractmethod
    def record_login_failure(self, key: str, at: float, expires_at: float) -> None:
        """Log a failed login for `key` at `at`; the entry may be deleted after `expires_at`
        (both in seconds since the epoch)."""

    @abstractmethod
    def login_failures(self, key: str, limit: int) -> list[float]:
        """The times of `key`'s latest `limit` failures that have not expired, newest first."""

    @abstractmethod
    def forget_login_failures(self, key: str) -> None:
        """Delete every failure logged for `key` (a successful login)."""

    # -- sessions ----------------------------------------------------------------
    @abstractmethod
    def create_session(self, user_id: str, refresh_hash: str, expires_at: float, *,
                       password_hash: bytes) -> dict | None:
        """Start a session, alive until `expires_at` (seconds since the epoch), whose
        first refresh token has this SHA-256 (hex); None, and no session, if the user is
        gone, is being erased, or no longer has `password_hash` (it changed while the
        login was being checked)."""

    @abstractmethod
    def session_user(self, session_id: str, user_id: str) -> dict | None:
        """In one round trip: the user of this live session, with "sessionLastUsedAt";
        None if the session is ended, expired, unknown or not the user's."""

    @abstractmethod
    def touch_session(self, session_id: str) -> None:
        """Record that the session was used now (its lastUsedAt)."""

    @abstractmethod
    def rotate_refresh(self, session_id: str, old_hash: str, new_hash: str) -> dict | None:
        """Compare-and-set, atomically: if `old_hash` is the live session's current refresh
        token, spend it, make `new_hash` the current one and return the session; else
        change nothing and return None. Of any number of calls racing with one old hash,
        exactly one succeeds."""

    @abstractmethod
    def refresh_token_issuer(self, session_id: str, refresh_hash: str) -> str | None:
        """The user whose session handed out a refresh token with this hash, spent or
        not; None if the session never did. What tells a token used twice (reuse: end
        the session, and record it as that user's) from a forged one."""

    @abstractmethod
    def end_session(self, session_id: str, user_id: str | None = None) -> bool:
        """End a live session (only if it is `user_id`'s, when given); True if one ended."""

    @abstractmethod
    def end_sessions(self, user_id: str, *, keep: str | None = None) -> None:
        """End every live session of the user but `keep`."""

    @abstractmethod
    def list_sessions(self, user_id: str) -> list[dict]:
        """The user's live sessions, the newest first."""

    # -- patients --------------------------------------------------------------
    @abstractmethod
    def create_patient(self, owner_id: str, fields: dict) -> dict:
        """Insert a patient with these PatientInput fields; returns the stored patient.
        `NotFound` if the owner is gone or being erased."""

    @abstractmethod
    def get_patient(self, patient_id: str) -> dict:
        """The patient with this id; `NotFound` if there is none."""

    @abstractmethod
    def list_patients(self, owner_id: str, *, limit: int, after: str | None = None,
                      name_contains: str | None = None) -> list[dict]:
        """Up to `limit` of the owner's patients in id order, with ids greater than
        `after`; `name_contains` (already case-folded) must occur literally in the
        case-folded first or last name."""

    @abstractmethod
    def count_patients(self, owner_id: str) -> int:
        """How many patients the owner has (a FHIR search's Bundle.total)."""

    @abstractmethod
    def replace_patient(self, patient_id: str, fields: dict, *, expected_version: int | None = None) -> dict:
        """Replace every editable field, making a new version; `NotFound` if the patient
        is gone, `VersionMismatch` if `expected_version` is given and is not current."""

    @abstractmethod
    def delete_patient(self, patient_id: str, *, expected_version: int | None = None) -> None:
        """Delete the patient, its history and its report files; `NotFound` if there is
        none, `VersionMismatch` if `expected_version` is given and is not current."""

    @abstractmethod
    def list_versions(self, patient_id: str, *, below: int, limit: int) -> list[dict]:
        """Up to `limit` of the patient's versions numbered below `below`, the newest
        first, each {"version", "updatedAt"}."""

    @abstractmethod
    def get_version(self, patient_id: str, version: int) -> dict:
        """One version of the patient's fields; `NotFound` if it has no such version."""

    # -- reports -----------------------------------------------------------------
    @abstractmethod
    def report_writer(self) -> ReportWriter:
        """A writer for a new report's bytes (use it in a `with` block)."""

    @abstractmethod
    def open_report(self, patient_id: str, report_id: str, *, start: int = 0,
                    length: int | None = None) -> tuple[dict, "ReportChunks"]:
        """The report's metadata and its bytes from `start` (`length` of them, or to the
        end) as chunks, never reading the bytes before `start`; `NotFound` unless this
        patient has this report."""

    @abstractmethod
    def delete_report(self, patient_id: str, report_id: str) -> None:
        """Delete the report's metadata and bytes; `NotFound` unless the patient has it."""

    @abstractmethod
    def sweep(self) -> None:
        """What start-up tidies, again, while serving (web/housekeeping.py runs it
        hourly): report bytes that no report names — an upload or a delete a crash cut
        short — once older than the store's minimum age, so that one in progress is
        never taken; expired sessions; an erasure a failure left half done."""

    @abstractmethod
    def stored_report_ids(self) -> set[str]:
        """The ids of every report whose bytes are stored, committed or not: what a
        check that nothing was left behind compares with the reports patients name."""

    @abstractmethod
    def report_storage(self) -> dict:
        """Where report bytes live, for /health: {"kind": "files"} (beside the SQLite
        database), {"kind": "gridfs"}, or {"kind": "s3", "endpoint", "bucket",
        "answers"} (storage/s3/reports.py)."""

    @abstractmethod
    def patient_owner(self, patient_id: str) -> str | None:
        """The id of the user who owns this patient; None if there is no such patient."""

    @abstractmethod
    def report_patient(self, report_id: str) -> str | None:
        """The id of the patient this report belongs to; None if there is no such report."""

    # -- audit trail (append and query only: no event is ever changed) ------------------
    @abstractmethod
    def append_audit(self, chain: str, events: list[dict]) -> None:
        """Store a batch of one chain's events, in sequence order, and move the chain's
        head to the last of them, all in one commit where the database allows it.
        Appending a batch that was (partly) stored before stores nothing twice."""

    @abstractmethod
    def list_audit(self, viewer_id: str, *, limit: int, before: str | None = None,
                   patient_id: str | None = None, action: str | None = None) -> list[dict]:
        """Up to `limit` events the viewer may see (their own, and any on a patient they
        own), newest first, with ids less than `before`; each with PUBLIC_FIELDS only."""

    @abstractmethod
    def audit_chains(self) -> list[dict]:
        """Every chain's head."""

    @abstractmethod
    def audit_chain_ids(self) -> set[str]:
        """The chains that have events (a chain with events and no head was inserted)."""

    @abstractmethod
    def audit_events(self, chain: str) -> Iterator[dict]:
        """A chain's events in sequence order, every stored field."""

    @abstractmethod
    def purge_audit(self, recorded_before: str) -> None:
        """Delete events recorded before this time (the retention period), moving each
        chain's start (firstSequence, previousHash) past them before they go."""

    # -- backup and restore (the format, and what calls these: storage/backup.py) --------
    @abstractmethod
    def snapshot(self, scratch):
        """A context manager giving a `storage.backup.Snapshot` of everything stored;
        `scratch` is a directory it may use while open (inside the backup being written)."""

    @abstractmethod
    def is_empty(self) -> bool:
        """True if the store holds no user, patient or audit event: a restore's target."""

    @abstractmethod
    def restore(self, backup) -> None:
        """Write every record of a checked `storage.backup.BackupReader` into this empty store."""

    # -- lifecycle ---------------------------------------------------------------
    @abstractmethod
    def ping(self) -> None:
        """Return if the database answers; raise `Unavailable` if it does not."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store is not used after this."""


class ReportChunks:
    """A report's bytes as an iterable of chunks that closes its source when done.

    The server iterates it to stream a download and calls `close()` afterwards, even
    when the client goes away half-way, so no file or cursor is left open. A ranged
    download (RFC 9110 §14) seeks its source to the first byte wanted and stops after
    the last: the bytes before and after the range are never read.
    """

    CHUNK_SIZE = 64 * 1024

    def __init__(self, source, *, start: int = 0, length: int | None = None):
        self._source = source  # anything with read(n), seek(n) and close()
        if start:
            source.seek(start)
        self._remaining = length

    def __iter__(self):
        while self._remaining is None or self._remaining > 0:
            size = self.CHUNK_SIZE if self._remaining is None else min(self.CHUNK_SIZE, self._remaining)
            chunk = self._source.read(size)
            if not chunk:
                return
            if self._remaining is not None:
                self._remaining -= len(chunk)
            yield chunk

    def close(self) -> None:
        self._source.close()


def name_keys(fields: dict) -> tuple[str, str]:
    """The case-folded first and last name that name search compares against.

    casefold() rather than lower(): it is Unicode's caseless matching (ß matches ss),
    and SQLite's own lower() only folds ASCII.
    """
    return fields["firstName"].casefold(), fields["lastName"].casefold()
