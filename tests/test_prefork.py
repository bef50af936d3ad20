"""The supervisor of web/workers/prefork.py on its own: which deaths count as young, and the
back-off they earn. Real forks of children that exit at once; the supervisor's clock
is a fake one, so "young" and "old" are decided by the test, not by waiting."""

import signal
import socket

import pytest

from tests.support.clock import FakeClock
from tests.support.deployment import until
from tests.support.platforms import needs_fork
from web.workers.prefork import MAX_RESTART_DELAY, YOUNG_DEATH, Supervisor

pytestmark = needs_fork


def exit_at_once(listener, ready) -> int:
    return 3


def wait_for_sigterm(listener, ready) -> int:
    signal.pause()  # SIGTERM's default action ends the process
    return 0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def listener():
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def supervisor_of(serve, listener, clock) -> Supervisor:
    return Supervisor(listener, serve, workers=1, grace=1.0, clock=clock)


def spawn_and_reap(supervisor: Supervisor) -> int:
    """Start one worker and wait until the supervisor has collected its exit."""
    pid, ready = supervisor.spawn()
    assert until(lambda: pid in supervisor.reap() or pid not in supervisor.children, timeout=10)
    return pid


def test_workers_that_keep_dying_young_are_restarted_later_each_time(listener, clock):
    supervisor = supervisor_of(exit_at_once, listener, clock)
    assert supervisor.restart_delay() == 0.0
    delays = []
    for _ in range(8):
        spawn_and_reap(supervisor)     # the clock stands still: each one died young
        delays.append(supervisor.restart_delay())
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_RESTART_DELAY, MAX_RESTART_DELAY]


def test_a_worker_that_lived_long_enough_resets_the_back_off(listener, clock):
    supervisor = supervisor_of(exit_at_once, listener, clock)
    spawn_and_reap(supervisor)
    spawn_and_reap(supervisor)
    assert supervisor.restart_delay() == 1.0
    pid, _ = supervisor.spawn()
    clock.advance(YOUNG_DEATH + 1)
    assert until(lambda: pid in supervisor.reap(), timeout=10)
    assert supervisor.restart_delay() == 0.0


def test_a_worker_told_to_stop_is_not_a_young_death(listener, clock):
    # A reload stops workers a moment after they started: no back-off for that.
    supervisor = supervisor_of(wait_for_sigterm, listener, clock)
    pid, _ = supervisor.spawn()
    supervisor._stop(pid)
    assert pid not in supervisor.children
    assert supervisor.restart_delay() == 0.0
