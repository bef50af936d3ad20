"""The embedded store, the default: SQLite through the standard library's `sqlite3`.

Read in this order: `store.py` (`SQLiteStore`: the pool of readers, users and
patients), `writer.py` (group commit: the one thread that makes every write),
`schema.py` (the tables), `reports.py` (report files on disk), `accounts.py` (sessions,
refresh tokens, failed logins, account erasure) and `audit_log.py` (the append-only
audit trail's table).
"""

from storage.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
