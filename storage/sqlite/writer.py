"""Group commit: one writer thread makes every write of the process, many per commit.

SQLite lets one connection write at a time. If every request thread opened its own
write transaction, the ones that lose wait inside SQLite's busy handler, which sleeps
in growing steps (up to 100 ms at a time) and wakes in no particular order: a save can
wait half a second behind thirty others, and the disk is synced once per write.

Here request threads never touch the write lock. Each hands a *unit* (a function that
takes the connection and makes its changes) to `GroupCommitWriter.submit` and waits.
One writer thread takes every unit waiting, runs each inside a SAVEPOINT of a single
transaction, commits once, and only then wakes the callers:

    thread A ─┐                    ┌─ SAVEPOINT a … RELEASE a ─┐
    thread B ─┼─ queue ─→ writer ──┼─ SAVEPOINT b … ROLLBACK TO b (its own error) ─┼─ COMMIT (one sync) → wake A, B, C
    thread C ─┘                    └─ SAVEPOINT c … RELEASE c ─┘

- **Faster**: a commit's cost is mostly the sync (`synchronous=FULL`: the WAL is
  fsynced before COMMIT returns). Ten writes in one commit pay for one sync, not ten;
  and the writes that arrive during a sync are the next batch, so the writer is never
  idle while there is work, and never waits for company when there is none.
- **No less durable**: no caller is answered before the COMMIT that holds its write
  has returned, so "201" still means "on disk", exactly as with a commit per write.
- **Isolated failures**: a unit that raises (a conflict, a missing patient, a version
  that moved on) is rolled back to its savepoint and gets its own error; the others in
  the batch still commit.
- **Fair**: units run in the order they were submitted (FIFO), with no sleeping.

Between processes sharing the file (several workers, or a second instance), SQLite's
lock remains, and SQLite offers no queue for it: a process can only try again. Only
each process's writer thread tries, and it does not leave that to SQLite's busy handler,
which sleeps in growing steps of up to 100 ms. It polls `BEGIN IMMEDIATE` itself, every
0.5 ms at first and never less often than every `MAX_POLL` (2 ms), for at most
`BUSY_TIMEOUT` seconds, after which its batch fails with `Unavailable` (503) rather
than hanging. Readers never wait (WAL). What group commit and the polling gain, as
measured: docs/performance.md.
"""

import logging
import sqlite3
import threading
import time
from collections import deque

from storage.errors import Unavailable

BUSY_TIMEOUT = 5.0  # seconds the writer waits for another process's write lock
FIRST_POLL, MAX_POLL = 0.0005, 0.002  # seconds between its tries: short, so the lock is taken soon after it is free

log = logging.getLogger("meditrack.storage")


class Unit:
    """One caller's write: its function, then its result or its error."""
    __slots__ = ("work", "result", "error", "done")

    def __init__(self, work):
        self.work = work
        self.result = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class GroupCommitWriter:
    """The process's one writing connection and the thread that uses it.

    `connect()` opens the connection (in the writer thread: a sqlite3 connection is used
    by one thread); the writer then turns SQLite's own busy wait off (see `_begin`).
    `translate(exc)` turns a sqlite3 error into the store's own.

    The thread never dies of an error: a batch that cannot be written gets `Unavailable`
    for each of its units, the connection is opened again for the next batch, and every
    caller is woken whatever happened.
    """

    def __init__(self, connect, translate):
        self._connect, self._translate = connect, translate
        self._pending: deque[Unit] = deque()
        self._changed = threading.Condition()
        self._closing = False
        self.commits = 0  # transactions committed, and the units in them: their ratio is
        self.units = 0    # the mean batch size
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()

    def submit(self, work):
        """Run `work(connection)` in the next batch; return its result once the batch is
        committed, or raise its error (or `Unavailable` if the commit failed)."""
        if threading.current_thread() is self._thread:
            # A unit runs on the writer thread, which would wait for itself for ever.
            raise RuntimeError("a unit cannot submit another unit: do both in one")
        unit = Unit(work)
        with self._changed:
            if self._closing:
                raise Unavailable("the database is closing")
            self._pending.append(unit)
            self._changed.notify_all()
        unit.done.wait()
        if unit.error is not None:
            raise unit.error
        return unit.result

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join(timeout)
        if self.commits:
            log.info("sqlite writer: %d units in %d commits (%.1f per commit)",
                     self.units, self.commits, self.units / self.commits)

    def _run(self) -> None:
        db = None
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._closing)
                if not self._pending:
                    break  # closing, and nothing left to write
                batch = list(self._pending)
                self._pending.clear()
            try:
                if db is None:
                    db = self._open()
                if not self._commit(db, batch):
                    db = _discard(db)  # a failed batch may leave it in an unknown state: start afresh
            except BaseException as exc:  # noqa: BLE001 — the batch is answered, whatever this was
                db = _discard(db)
                log.error("sqlite writer: a batch failed: %s", type(exc).__name__)
                for unit in batch:
                    unit.result, unit.error = None, _unavailable(exc)
            finally:
                for unit in batch:
                    unit.done.set()
        _discard(db)

    def _open(self) -> sqlite3.Connection:
        db = self._connect()
        db.execute("PRAGMA busy_timeout = 0")  # the writer waits for the lock its own way: _begin
        return db

    def _commit(self, db: sqlite3.Connection, batch: list[Unit]) -> bool:
        """One transaction for the batch, a savepoint per unit, one COMMIT; False if the
        batch could not be committed (each unit then holds `Unavailable`)."""
        try:
            self._begin(db)
            for unit in batch:
                db.execute("SAVEPOINT unit")
                try:
                    unit.result = unit.work(db)
                except Exception as exc:  # the unit's own error: undo the unit, keep the rest
                    if not db.in_transaction:
                        raise  # SQLite rolled the whole transaction back (a full disk, say)
                    db.execute("ROLLBACK TO unit")
                    unit.error = self._translate(exc)
                db.execute("RELEASE unit")
            db.execute("COMMIT")
        except Exception as exc:  # a failed BEGIN or COMMIT, or a unit that broke the transaction
            # Nothing of this batch was committed: every unit is told so, even those that
            # ran without error. (The caller closes the connection, which also rolls back
            # whatever is left of the transaction, and the next batch opens a new one.)
            for unit in batch:
                unit.result, unit.error = None, _unavailable(exc)
            return False
        self.commits += 1
        self.units += len(batch)
        return True

    @staticmethod
    def _begin(db: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE (take the write lock now), trying again while another process
        holds it (SQLITE_BUSY), at most BUSY_TIMEOUT seconds. The one place this module
        sleeps: between processes there is no queue to wait in."""
        deadline, pause = time.monotonic() + BUSY_TIMEOUT, FIRST_POLL
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, MAX_POLL)



def _unavailable(cause: BaseException) -> Unavailable:
    """A 503 for one caller (an exception of its own: tracebacks of two threads must not mix)."""
    error = Unavailable("the database cannot complete the write")
    error.__cause__ = cause
    return error


def _discard(db: sqlite3.Connection | None) -> None:
    """Close a connection a failure may have left in an unknown state; None to assign."""
    if db is not None:
        try:
            db.close()
        except sqlite3.Error:
            pass
    return None
