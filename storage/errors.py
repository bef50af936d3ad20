"""The errors every store raises, so handlers never see a driver's exceptions.

A store translates its driver's failures into these: a duplicate key becomes
`Conflict`, a missing row `NotFound`, a lost connection or full disk `Unavailable`,
and a write made on condition of a version that is no longer current `VersionMismatch`.
The application maps each one to exactly one HTTP status (`handlers/__init__.py`,
`ERROR_STATUSES`).
"""


class StoreError(Exception):
    """Base of every error a store raises on purpose."""


class NotFound(StoreError):
    """The record asked for does not exist."""


class Conflict(StoreError):
    """The write would break a uniqueness rule (a username already taken)."""


class Unavailable(StoreError):
    """The database cannot be reached or cannot write now; retrying later may work."""


class VersionMismatch(StoreError):
    """A conditional write named a version that is no longer the record's current one:
    someone else changed it first, and nothing was written."""
