"""The `Store` interface: everything the handlers may ask of a database.

Two implementations stand behind it — `storage/sqlite.py` (embedded, the default) and
`storage/mongo.py` (MongoDB) — and one contract test suite runs against both. The rules
that make them interchangeable:

- plain dicts in and out, never a cursor, row or driver type;
- ids are 24-hex ObjectId strings (`storage/ids.py`), timestamps ISO 8601 UTC strings;
- failures are the project's own errors (`storage/errors.py`), never a driver's.

A patient as a store returns it:
    {"id", "ownerId", <the PatientInput fields>, "reports": [...], "createdAt", "updatedAt"}
A user: {"id", "username", "createdAt"} plus "passwordHash" (bytes) from `find_user`.
"""

from abc import ABC, abstractmethod
from datetime import datetime, timezone


def utc_timestamp(seconds: float) -> str:
    """ISO 8601 in UTC with millisecond precision, e.g. 2026-11-24T10:15:30.123Z."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


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
    def get_user(self, user_id: str) -> dict | None:
        """The user with this id, without its password hash."""

    # -- patients --------------------------------------------------------------
    @abstractmethod
    def create_patient(self, owner_id: str, fields: dict) -> dict:
        """Insert a patient with these PatientInput fields; returns the stored patient."""

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
    def replace_patient(self, patient_id: str, fields: dict) -> dict:
        """Replace every editable field; `NotFound` if the patient is gone."""

    @abstractmethod
    def delete_patient(self, patient_id: str) -> None:
        """Delete the patient and its report files; `NotFound` if there is none."""

    # -- lifecycle ---------------------------------------------------------------
    @abstractmethod
    def ping(self) -> None:
        """Return if the database answers; raise `Unavailable` if it does not."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store is not used after this."""


def name_keys(fields: dict) -> tuple[str, str]:
    """The case-folded first and last name that name search compares against.

    casefold() rather than lower(): it is Unicode's caseless matching (ß matches ss),
    and SQLite's own lower() only folds ASCII.
    """
    return fields["firstName"].casefold(), fields["lastName"].casefold()
