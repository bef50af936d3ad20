"""The rate limit shared by worker processes (web/workers/sharedlimit.py): a token bucket per client
in shared memory, the same rule as web/ratelimit.py's, counted across forks and threads."""

import os
import signal
import threading

import pytest

from tests.support.clock import FakeClock
from tests.support.platforms import needs_fork
from web.workers.sharedlimit import ProcessSharedLock, SharedRateLimiter

pytestmark = needs_fork


def test_a_client_gets_its_burst_then_waits_for_the_next_token():
    clock = FakeClock(100.0)
    limiter = SharedRateLimiter(3, 3.0, clock=clock)  # 3 at once, then one a second
    assert [limiter.check("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.check("10.0.0.1") == pytest.approx(1.0)
    clock.advance(1.0)
    assert limiter.check("10.0.0.1") == 0.0
    assert limiter.check("10.0.0.2") == 0.0  # another client has a bucket of its own


def test_a_clock_going_back_mints_no_tokens():
    clock = FakeClock(100.0)
    limiter = SharedRateLimiter(1, 10.0, clock=clock)
    assert limiter.check("a") == 0.0
    clock.advance(-50.0)
    assert limiter.check("a") > 0


def test_processes_forked_after_it_share_one_bucket_per_client():
    # The clock stands still: no refill, so exactly the capacity is let through in all.
    limiter = SharedRateLimiter(40, 1000.0, clock=lambda: 5.0)
    readers = []
    for _ in range(4):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                allowed = sum(limiter.check("203.0.113.7") == 0.0 for _ in range(30))
                os.write(write, str(allowed).encode())
            finally:
                os._exit(0)  # never back into pytest in a forked child
        os.close(write)
        readers.append((pid, read))
    counts = []
    for pid, read in readers:
        os.waitpid(pid, 0)
        counts.append(int(os.read(read, 16)))
        os.close(read)
    assert sum(counts) == 40, counts  # not 4 × 30, and not fewer than the limit


def test_threads_share_it_too():
    limiter = SharedRateLimiter(100, 1000.0, clock=lambda: 5.0)
    allowed = []

    def client():
        allowed.append(sum(limiter.check("c") == 0.0 for _ in range(50)))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 100


def test_a_full_table_forgets_the_least_recently_seen_client_and_grants_it_a_fresh_burst():
    clock = FakeClock(0.0)
    limiter = SharedRateLimiter(1, 100.0, slots=16, clock=clock)  # one window: 16 clients at most
    for number in range(16):
        clock.advance(1.0)
        assert limiter.check(f"client-{number}") == 0.0
    assert limiter.check("client-15") > 0          # remembered: its token is spent
    clock.advance(1.0)
    assert limiter.check("newcomer") == 0.0         # takes the slot of the oldest...
    assert limiter.check("client-0") == 0.0         # ...which is forgotten: a full bucket again


def test_a_worker_killed_while_it_holds_the_lock_does_not_stop_the_others():
    # kill -9 in the middle of a check: with a lock in shared memory, every other
    # worker would wait for it forever. The kernel releases a record lock.
    limiter = SharedRateLimiter(10, 1000.0, clock=lambda: 5.0)
    pid = os.fork()
    if pid == 0:
        try:
            with limiter._lock:
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    answered = []
    checker = threading.Thread(target=lambda: answered.append(limiter.check("a")), daemon=True)
    checker.start()
    checker.join(timeout=10)
    assert answered == [0.0], "the lock a killed process held is still held"


def test_the_lock_excludes_the_threads_of_one_process():
    lock, inside, most = ProcessSharedLock(), [0], [0]

    def enter_many():
        for _ in range(2000):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                inside[0] -= 1

    threads = [threading.Thread(target=enter_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert most[0] == 1
