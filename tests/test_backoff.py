"""Unit tests of `handlers/backoff.FailureBackoff`: the per-username lock after failed logins.

The lock after the n-th failure is `min(max_delay, base_delay * 2 ** (n - free_failures))`,
so with `free_failures=5` the first five attempts are always answered and only the sixth
has to wait (1 s, then 2, 4, 8 ...). Time is a fake clock moved by hand: no test sleeps.
"""

import threading

import pytest

from handlers.backoff import FailureBackoff
from tests.support.clock import FakeClock
from tests.support.failure_log import MemoryFailureLog


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def backoff_with(clock, **options) -> FailureBackoff:
    defaults = {"free_failures": 5, "base_delay": 1.0, "max_delay": 300.0, "forget_after": 900.0}
    log = options.pop("log", None) or MemoryFailureLog()
    return FailureBackoff(**{**defaults, **options}, log=log, clock=clock)


def fail(backoff: FailureBackoff, key: str, times: int) -> None:
    for _ in range(times):
        backoff.failed(key)


# -- the free failures, then doubling -------------------------------------------------

def test_an_unknown_key_may_try_at_once(clock):
    assert backoff_with(clock).wait("nobody") == 0.0


def test_the_first_free_failures_attempts_are_never_locked_out(clock):
    backoff = backoff_with(clock, free_failures=5)
    for attempt in range(5):
        assert backoff.wait("alice") == 0.0, f"attempt {attempt + 1} was locked out"
        if attempt < 4:
            backoff.failed("alice")
    backoff.failed("alice")  # the fifth failure: the sixth attempt must wait
    assert backoff.wait("alice") == 1.0


@pytest.mark.parametrize("free_failures", [1, 3, 5])
def test_lock_doubles_with_each_failure_after_the_free_ones(clock, free_failures):
    backoff = backoff_with(clock, free_failures=free_failures, base_delay=1.0)
    fail(backoff, "alice", free_failures - 1)
    assert backoff.wait("alice") == 0.0
    locks = []
    for _ in range(6):
        backoff.failed("alice")
        locks.append(backoff.wait("alice"))  # the clock has not moved: the whole lock
    assert locks == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_lock_scales_with_base_delay(clock):
    backoff = backoff_with(clock, free_failures=1, base_delay=0.25)
    locks = []
    for _ in range(4):
        backoff.failed("alice")
        locks.append(backoff.wait("alice"))
    assert locks == [0.25, 0.5, 1.0, 2.0]


def test_lock_never_exceeds_max_delay(clock):
    backoff = backoff_with(clock, free_failures=1, base_delay=1.0, max_delay=10.0)
    locks = []
    for _ in range(8):
        backoff.failed("alice")
        locks.append(backoff.wait("alice"))
    assert locks == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]


def test_thousands_of_failures_stay_capped_at_max_delay(clock):
    # 2 ** 5000 would overflow a float; the lock must still be exactly max_delay.
    backoff = backoff_with(clock, free_failures=1, max_delay=300.0)
    fail(backoff, "alice", 5000)
    assert backoff.wait("alice") == 300.0


# -- time ---------------------------------------------------------------------------

def test_wait_counts_down_as_the_clock_moves(clock):
    backoff = backoff_with(clock, free_failures=1)
    fail(backoff, "alice", 4)  # lock: 8 s
    assert backoff.wait("alice") == 8.0
    clock.advance(3.0)
    assert backoff.wait("alice") == 5.0
    clock.advance(4.5)
    assert backoff.wait("alice") == 0.5
    clock.advance(0.5)
    assert backoff.wait("alice") == 0.0
    clock.advance(100.0)
    assert backoff.wait("alice") == 0.0  # never negative


def test_a_failure_after_the_lock_expires_doubles_the_next_lock(clock):
    backoff = backoff_with(clock, free_failures=1)
    backoff.failed("alice")              # lock 1
    clock.advance(1.0)
    assert backoff.wait("alice") == 0.0
    backoff.failed("alice")              # the count survives an expired lock: lock 2
    assert backoff.wait("alice") == 2.0


def test_a_success_resets_the_count(clock):
    backoff = backoff_with(clock, free_failures=3)
    fail(backoff, "alice", 6)
    assert backoff.wait("alice") == 8.0
    backoff.succeeded("alice")
    assert backoff.wait("alice") == 0.0
    fail(backoff, "alice", 2)            # free again, from the start
    assert backoff.wait("alice") == 0.0
    backoff.failed("alice")
    assert backoff.wait("alice") == 1.0


def test_forget_after_seconds_without_a_failure_resets_the_count(clock):
    backoff = backoff_with(clock, free_failures=3, forget_after=900.0)
    fail(backoff, "alice", 4)            # lock 2 s
    clock.advance(900.001)
    assert backoff.wait("alice") == 0.0
    fail(backoff, "alice", 2)            # counted from zero again: still free
    assert backoff.wait("alice") == 0.0


def test_exactly_forget_after_seconds_is_not_yet_forgotten(clock):
    backoff = backoff_with(clock, free_failures=3, forget_after=900.0)
    fail(backoff, "alice", 4)            # lock 2 s
    clock.advance(900.0)                 # "more than forget_after" has not yet passed
    backoff.failed("alice")              # the fifth failure: lock 4 s
    assert backoff.wait("alice") == 4.0


def test_a_key_is_not_forgotten_while_it_is_still_locked(clock):
    # forget_after shorter than the lock: the lock must run its full course anyway.
    backoff = backoff_with(clock, free_failures=1, max_delay=300.0, forget_after=5.0)
    fail(backoff, "alice", 5)            # lock 16 s
    clock.advance(10.0)                  # 10 s without a failure, but 6 s still locked
    assert backoff.wait("alice") == 6.0
    backoff.failed("alice")              # the count went on: lock 32 s
    assert backoff.wait("alice") == 32.0
    clock.advance(32.0 + 5.001)          # lock over, and forget_after since the failure
    assert backoff.wait("alice") == 0.0
    backoff.failed("alice")              # a first failure again
    assert backoff.wait("alice") == 1.0


# -- keys and memory ----------------------------------------------------------------

def test_keys_are_independent(clock):
    backoff = backoff_with(clock, free_failures=1)
    fail(backoff, "alice", 3)
    backoff.failed("bob")
    assert backoff.wait("alice") == 4.0
    assert backoff.wait("bob") == 1.0
    assert backoff.wait("carol") == 0.0
    backoff.succeeded("bob")
    assert backoff.wait("alice") == 4.0
    assert backoff.wait("bob") == 0.0


# -- threads ------------------------------------------------------------------------

def test_many_threads_failing_one_key_count_exactly(clock):
    threads, per_thread = 16, 250
    total = threads * per_thread
    # With free_failures equal to the number of failures, the lock is base_delay only
    # if every single failure was counted: one lost update and there is no lock at all.
    backoff = backoff_with(clock, free_failures=total, base_delay=1.0)
    start = threading.Barrier(threads)

    def fail_many():
        start.wait(timeout=10)
        for _ in range(per_thread):
            backoff.failed("alice")

    workers = [threading.Thread(target=fail_many) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not any(worker.is_alive() for worker in workers)
    assert backoff.wait("alice") == 1.0
    backoff.failed("alice")
    assert backoff.wait("alice") == 2.0


# -- the log shared by workers --------------------------------------------------------

def test_two_backoffs_on_one_log_count_failures_together(clock):
    # Two worker processes, each with its own FailureBackoff, over the one store.
    log = MemoryFailureLog()
    first, second = backoff_with(clock, free_failures=2, log=log), backoff_with(clock, free_failures=2, log=log)
    first.failed("alice")
    second.failed("alice")              # the second failure, wherever it happened: lock 1 s
    assert first.wait("alice") == second.wait("alice") == 1.0
    first.succeeded("alice")
    assert second.wait("alice") == 0.0


def test_only_the_latest_history_failures_are_read(clock):
    backoff = backoff_with(clock, free_failures=5, base_delay=1.0, max_delay=300.0)
    assert backoff.history == 5 + 9 + 1   # 2 ** 9 = 512 s is past the 300 s cap
    asked = []

    class CountingLog(MemoryFailureLog):
        def login_failures(self, key, limit):
            asked.append(limit)
            return super().login_failures(key, limit)

    backoff.log = CountingLog()
    fail(backoff, "alice", 40)
    assert backoff.wait("alice") == 300.0 and asked == [backoff.history]


def test_failures_just_under_forget_after_apart_keep_counting(clock):
    # The slowest streak an attacker can keep up: the log must keep each failure for
    # `keep_for`, the span of `history` such failures, or the count would fall back.
    backoff = backoff_with(clock, free_failures=1, max_delay=300.0, forget_after=900.0)
    locks = []
    for _ in range(backoff.history):
        backoff.failed("alice")
        locks.append(backoff.wait("alice"))
        clock.advance(899.0)
    assert locks == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
