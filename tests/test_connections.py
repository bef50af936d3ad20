"""Unit tests of `web/connections.ConnectionRegistry`: the cap, stalled heads, idle, drain.

Connections here are plain objects (the registry only keeps facts about them), and
time is a fake clock moved by hand. The one real wait is `wait_until_empty`'s own
timeout (see its section for how its bounds are chosen).
"""

import threading
import time

import pytest

from tests.support.clock import FakeClock
from web.connections import ConnectionRegistry



class Connection:
    """Stands in for a socket: only its identity matters to the registry."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f"Connection({self.name!r})"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(100.0)


@pytest.fixture
def registry(clock) -> ConnectionRegistry:
    return ConnectionRegistry(max_connections=3, header_timeout=10.0, clock=clock)


def admitted(registry: ConnectionRegistry, count: int) -> list[Connection]:
    connections = [Connection(f"c{number}") for number in range(count)]
    for connection in connections:
        assert registry.admit(connection)
    return connections


# -- the cap ------------------------------------------------------------------------

def test_admits_up_to_max_connections_then_refuses(registry):
    connections = admitted(registry, 3)
    assert not registry.admit(Connection("fourth"))
    assert len(registry) == 3
    assert set(registry.all()) == set(connections)


def test_a_refused_connection_is_not_tracked(registry):
    admitted(registry, 3)
    refused = Connection("refused")
    assert not registry.admit(refused)
    assert refused not in registry.all()


def test_release_frees_a_place(registry):
    first, _, _ = admitted(registry, 3)
    registry.release(first)
    assert len(registry) == 2
    newcomer = Connection("newcomer")
    assert registry.admit(newcomer)
    assert first not in registry.all() and newcomer in registry.all()
    assert not registry.admit(Connection("one too many"))


def test_releasing_twice_or_an_unknown_connection_changes_nothing(registry):
    first, second, third = admitted(registry, 3)
    registry.release(first)
    registry.release(first)
    registry.release(Connection("stranger"))
    assert len(registry) == 2
    assert set(registry.all()) == {second, third}


def test_concurrent_admissions_never_exceed_the_cap():
    registry = ConnectionRegistry(max_connections=50)
    threads, per_thread = 8, 100
    results, start = [], threading.Barrier(threads)
    results_lock = threading.Lock()

    def admit_many():
        start.wait(timeout=10)
        outcomes = [registry.admit(Connection("c")) for _ in range(per_thread)]
        with results_lock:
            results.extend(outcomes)

    workers = [threading.Thread(target=admit_many) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert results.count(True) == 50
    assert len(registry) == 50


# -- waiting, working, stalled ----------------------------------------------------------

def test_a_connection_waiting_longer_than_header_timeout_is_stalled(registry, clock):
    slow, = admitted(registry, 1)
    registry.waiting(slow)
    clock.advance(9.999)
    assert registry.stalled() == []
    clock.advance(0.002)
    assert registry.stalled() == [slow]


def test_waiting_exactly_header_timeout_is_not_yet_stalled(registry, clock):
    connection, = admitted(registry, 1)
    registry.waiting(connection)          # at 100.0
    clock.now = 110.0                     # exactly 10 s later, no rounding in between
    assert registry.stalled() == []
    clock.now = 110.5
    assert registry.stalled() == [connection]


def test_only_the_overdue_connections_are_stalled(registry, clock):
    early, late, busy = admitted(registry, 3)
    registry.waiting(early)               # at 100
    clock.advance(6.0)
    registry.waiting(late)                # at 106
    registry.waiting(busy)
    registry.working(busy)                # its head arrived: no longer waiting
    clock.advance(5.0)                    # 111: early waited 11 s, late 5 s
    assert registry.stalled() == [early]
    clock.advance(6.0)                    # 117: late waited 11 s too
    assert set(registry.stalled()) == {early, late}


def test_a_working_connection_is_never_stalled(registry, clock):
    connection, = admitted(registry, 1)
    registry.waiting(connection)
    clock.advance(5.0)
    registry.working(connection)          # the head arrived in time; the handler is slow
    clock.advance(1000.0)
    assert registry.stalled() == []


def test_the_next_request_on_a_keep_alive_connection_gets_a_fresh_header_timeout(registry, clock):
    connection, = admitted(registry, 1)
    registry.waiting(connection)
    clock.advance(9.0)
    registry.working(connection)          # first request served...
    clock.advance(30.0)
    registry.working(connection, False)   # ...its response sent
    registry.waiting(connection)          # at 139: waiting for the second request
    clock.advance(10.0)
    assert registry.stalled() == []
    clock.advance(0.5)
    assert registry.stalled() == [connection]


def test_a_released_connection_is_never_reported_stalled(registry, clock):
    connection, = admitted(registry, 1)
    registry.waiting(connection)
    registry.release(connection)
    clock.advance(100.0)
    assert registry.stalled() == []


# -- idle ---------------------------------------------------------------------------

def test_idle_lists_the_connections_not_working(registry):
    fresh, waiting, working = admitted(registry, 3)
    registry.waiting(waiting)
    registry.working(working)
    assert set(registry.idle()) == {fresh, waiting}
    registry.working(working, False)      # its response is sent: idle again
    assert set(registry.idle()) == {fresh, waiting, working}
    registry.working(fresh)
    assert set(registry.idle()) == {waiting, working}


# -- wait_until_empty (the drain at shutdown) ---------------------------------------------
#
# wait_until_empty waits on a condition with a real timeout (threading.Condition takes
# no clock), so these tests measure real time. Each bound tells apart two outcomes far
# apart, with seconds between them for a loaded machine: returning as soon as nothing is
# open, against waiting out a LONG_WAIT; and returning after a short timeout, against
# waiting for a connection that never goes.

LONG_WAIT = 30.0  # seconds: a timeout that a wait which need not wait never reaches


def test_wait_until_empty_is_true_at_once_when_nothing_is_open(registry):
    started = time.monotonic()
    assert registry.wait_until_empty(timeout=LONG_WAIT) is True
    assert time.monotonic() - started < LONG_WAIT  # it did not wait out its timeout


def test_wait_until_empty_returns_true_once_another_thread_releases_all(registry):
    connections = admitted(registry, 3)

    def finish_requests():
        for connection in connections:
            registry.release(connection)

    releaser = threading.Thread(target=finish_requests)
    started = time.monotonic()
    releaser.start()
    assert registry.wait_until_empty(timeout=LONG_WAIT) is True
    assert time.monotonic() - started < LONG_WAIT  # woken by the last release, not by its timeout
    releaser.join(timeout=LONG_WAIT)
    assert len(registry) == 0


def test_wait_until_empty_is_false_after_its_timeout_when_a_connection_stays(registry):
    first, second = admitted(registry, 2)
    registry.release(first)
    started = time.monotonic()
    assert registry.wait_until_empty(timeout=0.2) is False
    # It waited (a lower bound, which a slow machine only makes easier to meet), then
    # gave up at its timeout rather than waiting on: 5 s is 25 times the timeout, room
    # for a loaded machine to run this thread late.
    assert 0.15 <= time.monotonic() - started < 5.0
    assert registry.all() == [second]


def test_a_body_gets_header_timeout_plus_its_size_at_the_minimum_rate(clock):
    registry = ConnectionRegistry(header_timeout=10.0, min_body_rate=1000, clock=clock)
    uploader, = admitted(registry, 1)
    registry.working(uploader)
    registry.reading_body(uploader, 5000)     # 10 s of grace + 5000 bytes at 1000 bytes/s
    clock.advance(14.999)
    assert registry.stalled() == []
    clock.advance(0.002)
    assert registry.stalled() == [uploader]


def test_a_finished_request_clears_its_body_deadline(clock):
    registry = ConnectionRegistry(header_timeout=10.0, min_body_rate=1000, clock=clock)
    uploader, = admitted(registry, 1)
    registry.working(uploader)
    registry.reading_body(uploader, 10)
    registry.working(uploader, False)          # the response went out
    clock.advance(60)
    assert registry.stalled() == []
