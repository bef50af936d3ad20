"""Exponential back-off for repeated failures of one key: guessing one account's password.

The per-address rate limit (`web/ratelimit.py`) slows one client; an attacker with many
addresses can still try many passwords against one username. So failed logins are also
counted per username: the first `free_failures` cost nothing (people mistype), and
after that each failure locks the username for twice as long as the one before,

    lock = min(max_delay, base_delay * 2 ** (failures - free_failures))

A success resets the count, and so does `forget_after` seconds without a failure (once
the last lock has run out).

NOTE: the lock never exceeds `max_delay` (five minutes by default). A lock that grew
without bound would let anyone shut a user out of their own account for as long as
they liked, just by failing on purpose; capped, the worst they can do is keep it at a
few minutes, while an attacker guessing passwords gets a dozen tries an hour.

Where the failures are kept: in a *log* of failure times per key, not in a counter.
The count and the lock are worked out from the log each time (`replay`), so the log
only ever has entries added (or a key's entries deleted): every worker process, and
every instance sharing one MongoDB, appends to the same log in the store, and two
failures at the same moment are both counted without relying on an atomic increment
(which FerretDB 1.x, for one, does not give; see storage/mongo/accounts.py). Only the
latest `history` failures of a key are ever read: beyond that the lock is `max_delay`
anyway.

Time is a parameter (`clock`), so tests move it by hand. It is wall-clock time by
default, because the log is shared by processes and machines.
"""

import math
import time
from typing import Protocol


class FailureLog(Protocol):
    """Where failures are kept: the store (storage/base.py)."""

    def record_login_failure(self, key: str, at: float, expires_at: float) -> None: ...
    def login_failures(self, key: str, limit: int) -> list[float]: ...   # newest first
    def forget_login_failures(self, key: str) -> None: ...


class FailureBackoff:
    def __init__(self, *, free_failures: int = 5, base_delay: float = 1.0, max_delay: float = 300.0,
                 forget_after: float = 900.0, log: FailureLog, clock=time.time):
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self._clock = clock
        # Enough failures to reach max_delay, plus one: older ones cannot change the lock.
        self.history = free_failures + max(0, math.ceil(math.log2(max_delay / base_delay))) + 1
        # A failure matters while it is among the latest `history` of a streak, whose
        # failures are at most this far apart: after that the log may drop it (one gap
        # more, for clocks that differ between the processes sharing the log).
        self.keep_for = (self.history + 1) * max(forget_after, max_delay)
        self.log = log

    def wait(self, key: str) -> float:
        """Seconds until `key` may try again; 0.0 when it may try now."""
        now = self._clock()
        _, locked_until = self.replay(self.log.login_failures(key, self.history))
        # Never more than max_delay, even when the clock went back, or another machine's
        # clock sharing the log runs ahead.
        return min(self.max_delay, max(0.0, locked_until - now))

    def failed(self, key: str) -> None:
        now = self._clock()
        self.log.record_login_failure(key, now, now + self.keep_for)

    def succeeded(self, key: str) -> None:
        self.log.forget_login_failures(key)

    def replay(self, newest_first: list[float]) -> tuple[int, float]:
        """The count of failures and the time the lock ends, after the failures at these
        times: each one resets the count if it came more than `forget_after` after the
        one before and once that one's lock had ended, and otherwise adds one to it."""
        count, last, locked_until = 0, -math.inf, -math.inf
        for at in reversed(newest_first):
            if at - last > self.forget_after and at >= locked_until:
                count = 0
            count, last = count + 1, at
            locked_until = at + self.lock_after(count)
        return count, locked_until

    def lock_after(self, count: int) -> float:
        extra = count - self.free_failures
        if extra < 0:
            return 0.0
        return min(self.max_delay, self.base_delay * 2 ** min(extra, 32))

