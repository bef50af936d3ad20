"""Exponential back-off for repeated failures of one key: guessing one account's password.

The per-address rate limit (`web/ratelimit.py`) slows one client; an attacker with many
addresses can still try many passwords against one username. So failed logins are also
counted per username: the first `free_failures` cost nothing (people mistype), and
after that each failure locks the username for twice as long as the one before,

    lock = min(max_delay, base_delay * 2 ** (failures - free_failures))

A success resets the count, and so does `forget_after` seconds without a failure.

NOTE: the lock never exceeds `max_delay` (five minutes by default). A lock that grew
without bound would let anyone shut a user out of their own account for as long as
they liked, just by failing on purpose; capped, the worst they can do is keep it at a
few minutes, while an attacker guessing passwords gets a dozen tries an hour.

Time is a parameter (`clock`), so tests move it by hand; memory is bounded by
`max_keys` (the least recently failed keys are forgotten first).
"""

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class Failures:
    count: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class FailureBackoff:
    def __init__(self, *, free_failures: int = 5, base_delay: float = 1.0, max_delay: float = 300.0,
                 forget_after: float = 900.0, max_keys: int = 10_000, clock=time.monotonic):
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, Failures] = OrderedDict()
        # NOTE: login handlers run on many threads; one lock keeps each key's count exact.
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Seconds until `key` may try again; 0.0 when it may try now."""
        now = self._clock()
        with self._lock:
            failures = self._current(key, now)
            return max(0.0, failures.locked_until - now) if failures else 0.0

    def failed(self, key: str) -> None:
        now = self._clock()
        with self._lock:
            failures = self._current(key, now) or Failures()
            failures.count += 1
            failures.last_failure = now
            extra = failures.count - self.free_failures
            if extra >= 0:
                failures.locked_until = now + min(self.max_delay, self.base_delay * 2 ** min(extra, 32))
            self._failures[key] = failures
            self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _current(self, key: str, now: float) -> Failures | None:
        """The key's failures, unless they are old enough to be forgotten."""
        failures = self._failures.get(key)
        if failures and now - failures.last_failure > self.forget_after and now >= failures.locked_until:
            del self._failures[key]
            return None
        return failures
