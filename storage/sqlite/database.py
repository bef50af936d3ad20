"""How the embedded store talks to SQLite: a pool of connections to read with, the one
writer every write goes to (storage/sqlite/writer.py), the clock, and sqlite3's errors
turned into the store's own (storage/errors.py).

`Database` is what every part of the store holds (storage/sqlite/store.py builds it and
hands it to the accounts, the reports and the audit log); no part opens a connection
of its own.
"""

import sqlite3
import threading
from collections import deque
from contextlib import contextmanager
from pathlib import Path

import system
from storage.base import utc_timestamp
from storage.errors import Conflict, NotFound, Unavailable
from storage.sqlite.schema import create_schema
from storage.sqlite.writer import BUSY_TIMEOUT, GroupCommitWriter

# NOTE: how many threads may read at once (each with a pooled connection). Reads
# release Python's lock while SQLite works, so with many more readers than cores they
# contend for SQLite's internal locks in the kernel instead of doing work. Twice the
# cores keeps every core busy; more only adds contention.
READERS = 2 * system.cpu_count()


class Database:
    """What every part of the embedded store works through, and nothing else: connections
    to read with (`read`), the one writer every write goes to (`write`), and the clock.

    `SQLiteStore` makes one and hands it to each part it is built from (accounts,
    reports, the audit log), so no part reaches into another's attributes."""

    def __init__(self, path: Path, clock):
        self.path = path
        self.clock = clock
        # NOTE: a pool of connections, each used by one thread at a time. A sqlite3
        # connection must not be shared by two threads at once, and opening one per
        # request would cost more than the query. Borrowed last in, first out: a thread
        # gets the connection used last, whose page cache is warm, and the others stay
        # idle and small. First in, first out, a long export would fill the page cache
        # (up to 2 MB) of every connection a busy moment had opened, one after another.
        # (deque's append and pop are atomic: no lock needed.)
        self._idle: deque[sqlite3.Connection] = deque()
        self._readers = threading.BoundedSemaphore(READERS)
        with self.read() as db:
            create_schema(db)
        self._writer = GroupCommitWriter(self.connect, store_error)

    def connect(self) -> sqlite3.Connection:
        # isolation_level=None: no hidden BEGINs; transactions are explicit (the writer's).
        # timeout: SQLite's own wait for a lock (a reader meets one only while another
        # process recovers the WAL); the writer turns it off and waits its own way.
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
            # Readers that never wait for the writer, and a COMMIT no reader can block,
            # both come from write-ahead logging: without it, refuse to start.
            db.close()
            raise Unavailable(f"{self.path} cannot use write-ahead logging (is it on a network file system?)")
        # NOTE: FULL makes every commit durable before we answer 201, even across a
        # power cut; NORMAL would be faster but could lose the last commits.
        db.execute("PRAGMA synchronous = FULL")
        if system.FULL_FSYNC is not None:
            # macOS: SQLite's syncs are plain fsync() unless told otherwise, which leaves
            # a commit in the drive's cache (system.py); F_FULLFSYNC writes it through.
            db.execute("PRAGMA fullfsync = ON")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    @contextmanager
    def read(self):
        """Borrow a connection, waiting while READERS are out; translate sqlite3's
        errors into the store's own. (So never borrow a second while holding one.)"""
        with self._readers:
            try:
                db = self._idle.pop()
            except IndexError:
                try:
                    db = self.connect()
                except sqlite3.Error as exc:
                    raise Unavailable("the database file cannot be opened") from exc
            try:
                yield db
            except sqlite3.Error as exc:
                error = store_error(exc)
                if error is exc:
                    raise
                raise error from exc
            finally:
                if db.in_transaction:
                    db.rollback()
                self._idle.append(db)

    def write(self, work):
        """Run `work(connection)` in the writer's next group commit (storage/sqlite/writer.py);
        its result once committed, or its error. Every write goes this way: only the
        writer thread ever takes SQLite's write lock."""
        return self._writer.submit(work)

    def now(self) -> str:
        return utc_timestamp(self.clock())

    def close(self) -> None:
        self._writer.close()
        while self._idle:
            self._idle.pop().close()


def store_error(exc: sqlite3.Error) -> Exception:
    """The store's own error for a sqlite3 error (an error of any other kind is kept)."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    error = _translated(exc)
    if error is not exc:
        error.__cause__ = exc
    return error


def _translated(exc: sqlite3.Error) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError):
        # Which constraint failed is told by SQLite's extended result code, not by
        # its message text, which is meant for people and may change.
        if exc.sqlite_errorname in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
            return Conflict("a record with this key already exists")
        if exc.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
            # The parent row (a report's patient, a patient's owner) is gone, e.g.
            # deleted while an upload ran; MongoDB's store answers that case alike.
            return NotFound("the patient or user this record belongs to does not exist")
        # NOTE: any other constraint (NOT NULL, CHECK) fails only on a bug, in this
        # module's SQL or in a caller passing None where the contract wants a value.
        # Unavailable would tell the client to retry and Conflict to change its
        # request; neither would help. Kept, it becomes a 500 whose logged traceback
        # names the constraint (SQLite's message names columns, not values).
        return exc
    return Unavailable("the database cannot complete the request")
