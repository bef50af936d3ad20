"""`FakeClock`: time that moves only when a test says so.

The mechanisms that keep time take their clock as a parameter (`clock=time.monotonic`
by default); a test hands them one of these instead and moves it by hand, so no test
sleeps to see a timeout, a lock or a token bucket refill.
"""

import threading


class FakeClock:
    """A clock that moves only when a test says so: `advance(seconds)`, or set `now`.
    Safe to read and advance from many threads (the concurrency tests do)."""

    def __init__(self, start: float = 1000.0):
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    @property
    def now(self) -> float:
        return self()

    @now.setter
    def now(self, value: float) -> None:
        with self._lock:
            self._now = value

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
