"""storage/sqlite/writer.py: group commit on a real SQLite file.

A batch is made deterministic without sleeping: a first unit holds the writer (it waits
on an Event), the test waits until the units it wants batched are queued behind it
(`WatchedWriter.wait_for_pending`, on the writer's condition variable), then lets the writer go: they are the next
batch, whole.
"""

import sqlite3
import threading

import pytest

from storage.errors import Conflict, Unavailable
from storage.sqlite.database import store_error
from storage.sqlite.writer import GroupCommitWriter


class WatchedWriter(GroupCommitWriter):
    """The writer, and a way to see its queue: how the tests line units up for one batch."""

    def wait_for_pending(self, count: int, timeout: float) -> bool:
        """Whether `count` units are waiting for the next batch within `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._pending) >= count, timeout)


@pytest.fixture
def path(tmp_path):
    path = tmp_path / "writer.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE items (name TEXT PRIMARY KEY)")
    return path


class GatedConnection(sqlite3.Connection):
    """A connection whose COMMIT can be held (`hold_commit`) or made to fail (`fail_commit`),
    and that says when a BEGIN found the lock taken (`busy`)."""
    hold_commit: threading.Event | None = None
    at_commit = threading.Event()
    fail_commit = False
    busy = threading.Event()

    def execute(self, sql, *args):
        if sql == "COMMIT":
            self.at_commit.set()
            if self.hold_commit is not None:
                self.hold_commit.wait(10)
            if self.fail_commit:
                raise sqlite3.OperationalError("disk I/O error")
        try:
            return super().execute(sql, *args)
        except sqlite3.OperationalError:
            if sql == "BEGIN IMMEDIATE":
                self.busy.set()
            raise


@pytest.fixture
def gate():
    class Gate(GatedConnection):
        at_commit, busy = threading.Event(), threading.Event()
    return Gate


@pytest.fixture
def writer(path, gate):
    writer = WatchedWriter(lambda: sqlite3.connect(path, timeout=0, isolation_level=None,
                                                   check_same_thread=False, factory=gate),
                           store_error)
    yield writer
    writer.close()


def names(path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT name FROM items ORDER BY name")]


def insert(name):
    return lambda db: db.execute("INSERT INTO items VALUES (?)", (name,)).rowcount


class Batch:
    """Submit units from threads of their own while the writer is held, then release it."""

    def __init__(self, writer):
        self.writer, self.holding, self.release = writer, threading.Event(), threading.Event()
        self.threads, self.outcomes = [], {}
        self.holder = threading.Thread(target=self.submit, args=("holder", self.hold))
        self.holder.start()
        assert self.holding.wait(10)  # the writer is inside the holder's batch: the rest queue

    def hold(self, db):
        self.holding.set()
        self.release.wait(10)

    def submit(self, key, work):
        try:
            self.outcomes[key] = ("result", self.writer.submit(work))
        except BaseException as error:
            self.outcomes[key] = ("error", error)

    def add(self, key, work):
        self.threads.append(threading.Thread(target=self.submit, args=(key, work)))
        self.threads[-1].start()
        # One at a time, so the order they queue in is the order they were added.
        assert self.writer.wait_for_pending(len(self.threads), 10)

    def run(self) -> dict:
        commits_before = self.writer.commits
        self.release.set()
        for thread in [self.holder, *self.threads]:
            thread.join(10)
            assert not thread.is_alive(), "a caller was never answered"
        self.commits = self.writer.commits - commits_before
        return {key: outcome for key, outcome in self.outcomes.items() if key != "holder"}


def test_a_failing_unit_in_a_batch_of_three_leaves_the_other_two_committed(writer, path):
    writer.submit(insert("taken"))
    batch = Batch(writer)
    batch.add("first", insert("first"))
    batch.add("middle", lambda db: [db.execute("INSERT INTO items VALUES ('middle')"),
                                    db.execute("INSERT INTO items VALUES ('taken')")])  # a conflict, half-way
    batch.add("last", insert("last"))
    outcomes = batch.run()
    assert outcomes["first"] == ("result", 1) and outcomes["last"] == ("result", 1)
    kind, error = outcomes["middle"]
    assert kind == "error" and isinstance(error, Conflict)
    assert names(path) == ["first", "last", "taken"]  # nothing of the middle unit, not even its first row
    assert batch.commits == 2  # the holder's batch, then all three together


def test_units_run_in_the_order_they_were_submitted(writer):
    order = []
    batch = Batch(writer)
    for number in range(5):
        batch.add(number, lambda db, number=number: order.append(number))
    batch.run()
    assert order == [0, 1, 2, 3, 4]


def test_a_callers_own_exception_reaches_it_unchanged_and_the_others_commit(writer, path):
    batch = Batch(writer)
    batch.add("bug", lambda db: [db.execute("INSERT INTO items VALUES ('bug')"), 1 / 0])
    batch.add("fine", insert("fine"))
    outcomes = batch.run()
    assert isinstance(outcomes["bug"][1], ZeroDivisionError)
    assert names(path) == ["fine"]


def test_a_unit_that_ends_the_transaction_fails_the_whole_batch_and_nothing_is_committed(writer, path):
    batch = Batch(writer)
    batch.add("before", insert("before"))
    batch.add("breaker", lambda db: [db.execute("ROLLBACK"), 1 / 0])
    batch.add("after", insert("after"))
    outcomes = batch.run()
    assert all(kind == "error" and isinstance(error, Unavailable) for kind, error in outcomes.values())
    assert names(path) == []


def test_a_caller_is_answered_only_after_the_commit_that_holds_its_write(writer, path, gate):
    gate.hold_commit = threading.Event()
    caller = threading.Thread(target=writer.submit, args=(insert("durable"),))
    caller.start()
    assert gate.at_commit.wait(10)  # the writer is at COMMIT, and is held there
    assert caller.is_alive() and names(path) == []  # not answered, and not yet visible
    gate.hold_commit.set()
    caller.join(10)
    assert not caller.is_alive() and names(path) == ["durable"]


def test_a_commit_that_fails_fails_every_unit_of_its_batch_and_stores_nothing(writer, path, gate):
    gate.fail_commit = True
    batch = Batch(writer)
    batch.add("one", insert("one"))
    batch.add("two", insert("two"))
    outcomes = batch.run()
    assert all(kind == "error" and isinstance(error, Unavailable) for kind, error in outcomes.values())
    gate.fail_commit = False
    assert names(path) == []
    assert writer.submit(insert("after")) == 1  # the writer goes on with the next batch


def test_while_another_connection_holds_the_write_lock_the_writer_waits_for_it(writer, path, gate):
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # as another process's writer would
    caller = threading.Thread(target=writer.submit, args=(insert("patient"),))
    caller.start()
    assert gate.busy.wait(10)  # the writer tried, found the lock taken, and polls
    other.execute("COMMIT")
    other.close()
    caller.join(10)
    assert not caller.is_alive() and names(path) == ["patient"]


def test_a_unit_cannot_submit_a_unit_of_its_own(writer):
    with pytest.raises(RuntimeError):
        writer.submit(lambda db: writer.submit(insert("nested")))


def test_close_commits_what_is_queued_and_then_refuses(writer, path):
    batch = Batch(writer)
    batch.add("queued", insert("queued"))
    closer = threading.Thread(target=writer.close)
    closer.start()
    with writer._changed:  # close() has begun: nothing new is taken, the queue is still to commit
        assert writer._changed.wait_for(lambda: writer._closing, 10)
    batch.run()
    closer.join(10)
    assert batch.outcomes["queued"] == ("result", 1) and names(path) == ["queued"]
    with pytest.raises(Unavailable):
        writer.submit(insert("late"))


def test_the_writer_counts_units_and_commits(writer):
    batch = Batch(writer)
    for number in range(4):
        batch.add(number, insert(str(number)))
    batch.run()
    assert (writer.units, writer.commits) == (5, 2)  # the holder alone, then the four together


def test_a_connection_that_cannot_be_opened_fails_that_batch_and_the_next_batch_tries_again(path):
    attempts = []

    def connect():
        attempts.append(1)
        if len(attempts) == 1:
            raise sqlite3.OperationalError("unable to open database file")
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    writer = GroupCommitWriter(connect, store_error)
    try:
        with pytest.raises(Unavailable):
            writer.submit(insert("first"))
        assert writer.submit(insert("second")) == 1
        assert names(path) == ["second"] and len(attempts) == 2
    finally:
        writer.close()
