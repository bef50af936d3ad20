"""Token-bucket rate limiting: one bucket per client, a clock you can inject, safe across threads.

A token bucket holds at most `capacity` tokens and gains `rate` tokens a second. Every
request takes one token; when there is none left, the caller learns how many seconds
until there will be. A full bucket therefore allows a burst of `capacity` requests, and
after that a steady `rate` a second. This is the classic meter that RFC 2697 builds its
markers from, with one bucket and no colours.

The arithmetic is done lazily. A bucket stores only its token count and the time it was
last looked at; on every call it adds `rate * elapsed` and clips at `capacity`:

    tokens = min(capacity, tokens + rate * elapsed)

Time comes from a `clock` parameter (`time.monotonic` by default, which never jumps
when the wall clock is changed), so tests tick a fake clock instead of sleeping.

This module knows nothing about HTTP statuses or sockets. `RateLimiter.check` returns
0.0 (allowed) or the seconds to wait; the caller decides how to refuse, and
`retry_after_header` turns the wait into a `Retry-After` value (RFC 9110 §10.2.3).
"""

import math
import re
import threading
import time
from collections import OrderedDict
from typing import Callable

Clock = Callable[[], float]

# "REQUESTS/SECONDS": a whole number of requests, then a period that may have a decimal
# part. `[0-9]` rather than `\d`: `\d` also matches other scripts' digits, such as "١٢".
_RATE_FORMAT = re.compile(r"([0-9]+)/([0-9]+(?:\.[0-9]+)?)")


def parse_rate(text: str) -> tuple[int, float] | None:
    """Parse a limit such as "120/60" into (120, 60.0): 120 requests per 60 seconds.

    "0" means "no limit" and returns None. Anything else raises ValueError.
    """
    if text == "0":
        return None
    # fullmatch, not match: a trailing newline or a third "/part" is junk, not a rate.
    match = _RATE_FORMAT.fullmatch(text)
    if match is None:
        raise ValueError(
            f"a rate limit must look like REQUESTS/SECONDS (e.g. '120/60'), "
            f"or be '0' to disable it; got {text!r}"
        )
    requests, per_seconds = int(match[1]), float(match[2])
    if requests == 0:
        raise ValueError(f"a rate limit must allow at least 1 request; got {text!r} (use '0' to disable)")
    if per_seconds == 0:
        raise ValueError(f"a rate limit's period must be longer than 0 seconds; got {text!r}")
    # A period of 400 digits overflows to infinity: a rate of zero, which no bucket can use.
    if not math.isfinite(per_seconds):
        raise ValueError(f"a rate limit's period is too large; got {text!r}")
    return requests, per_seconds


def retry_after_header(seconds: float) -> str:
    """The `Retry-After` value for a wait of `seconds`: a whole number, rounded up, at least 1."""
    # RFC 9110 §10.2.3: delay-seconds is a non-negative integer. Rounding down would tell
    # the client to come back before a token exists, and "0" would make it retry at once.
    return str(max(1, math.ceil(seconds)))


def require_positive(name: str, value: float) -> None:
    # `not value > 0` also refuses NaN, which compares false with everything.
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")


# --- the bucket's arithmetic, shared with web/workers/sharedlimit.py ---------------------

def refill(tokens: float, last: float, now: float, *, rate: float, capacity: float) -> tuple[float, float]:
    """A bucket's tokens after the time from `last` to `now`, and its new `last`.

    NOTE: a clock that goes backwards (a faulty or adjusted one) must never mint
    tokens. A negative elapsed time counts as zero, and the bucket keeps its latest
    time: moving it back would pay for the same interval twice once the clock recovers."""
    elapsed = max(0.0, now - last)
    return min(capacity, tokens + rate * elapsed), max(last, now)


def spend(tokens: float, wanted: float, rate: float) -> tuple[float, float]:
    """(the tokens left, the seconds to wait): `wanted` are taken if they are there; else
    none are, and the wait is until they would be."""
    if tokens >= wanted:
        return tokens - wanted, 0.0
    return tokens, (wanted - tokens) / rate


class TokenBucket:
    """Holds up to `capacity` tokens, refilled at `rate` tokens per second; starts full."""

    def __init__(self, rate: float, capacity: float, *, clock: Clock = time.monotonic):
        require_positive("rate", rate)
        require_positive("capacity", capacity)
        self._rate = rate
        self._capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._last_refill = clock()
        # NOTE: refill and take must happen as one step. Two handler threads that both
        # read "1 token left" before either subtracts would both be let through.
        self._lock = threading.Lock()

    def take(self, tokens: float = 1.0) -> float:
        """Take `tokens` and return 0.0, or take nothing and return the seconds until enough are there."""
        require_positive("tokens", tokens)
        # A request larger than the bucket could never succeed; a wait time would be a lie.
        if tokens > self._capacity:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of capacity {self._capacity}")
        with self._lock:
            self._refill()
            self._tokens, wait = spend(self._tokens, tokens, self._rate)
            return wait

    def is_full(self) -> bool:
        """True when the bucket holds `capacity` tokens now: forgetting it would lose nothing."""
        with self._lock:
            self._refill()
            return self._tokens >= self._capacity

    def _refill(self) -> None:
        # Called with self._lock held.
        self._tokens, self._last_refill = refill(self._tokens, self._last_refill, self._clock(),
                                                 rate=self._rate, capacity=self._capacity)


class RateLimiter:
    """Allows each client (a key, such as its address) `requests` requests per `per_seconds`.

    Every client has its own TokenBucket: capacity `requests`, rate `requests / per_seconds`.

    Memory is bounded by `max_clients`. When a new client arrives and the table is full:

    1. forget every bucket that would be full by now. This is free: a forgotten client
       gets a new bucket, which starts full, so an idle client loses nothing;
    2. if the table is still full, forget the least recently used clients.

    Step 1 looks at every bucket, so it runs at most once per `max_clients // 2` new
    clients; in between, step 2 alone makes room. Each new client thus pays for at most
    two bucket inspections on average, and a known client's check is O(1).

    The cost of the bound: an attacker with many addresses can push a real client out,
    and that client's next bucket starts full, so it gets a fresh burst. Only the idle
    (full) buckets go first, then the least recently used ones, so a client that is busy
    right now is the last to be forgotten.
    """

    def __init__(
        self,
        requests: int,
        per_seconds: float,
        *,
        clock: Clock = time.monotonic,
        max_clients: int = 10_000,
    ):
        require_positive("requests", requests)
        require_positive("per_seconds", per_seconds)
        require_positive("max_clients", max_clients)
        self._capacity = requests
        self._rate = requests / per_seconds
        self._clock = clock
        self._max_clients = max_clients
        self._sweep_interval = max(1, max_clients // 2)
        self._new_clients_since_sweep = 0
        # Least recently used first: a known client is moved to the end on every check.
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        # NOTE: one lock covers the look-up, the eviction and the take. Taking outside it
        # would let another thread forget the bucket between look-up and take, and the
        # token would come out of a bucket nobody keeps. A take is a few arithmetic
        # operations, so serialising it costs less than that race would.
        self._lock = threading.Lock()

    def check(self, key: str) -> float:
        """Count one request from `key`: 0.0 if allowed, else the seconds to wait (> 0)."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                # Make room before inserting: the newcomer's bucket is full, and a sweep
                # run after inserting it would forget it at once.
                if len(self._buckets) >= self._max_clients:
                    self._make_room()
                bucket = TokenBucket(self._rate, self._capacity, clock=self._clock)
                self._buckets[key] = bucket
                self._new_clients_since_sweep += 1
            else:
                self._buckets.move_to_end(key)
            return bucket.take()

    def __len__(self) -> int:
        """How many clients are tracked now."""
        with self._lock:
            return len(self._buckets)

    def _make_room(self) -> None:
        # Called with self._lock held, when the table is full and a new client arrives.
        # NOTE: full buckets go first because forgetting them grants nobody a token; the
        # least recently used go next, so a flood of new addresses pushes out idle
        # clients before busy ones (see the class docstring for the cost).
        if self._new_clients_since_sweep >= self._sweep_interval:
            self._forget_full_buckets()
        while len(self._buckets) >= self._max_clients:
            self._buckets.popitem(last=False)

    def _forget_full_buckets(self) -> None:
        full = [key for key, bucket in self._buckets.items() if bucket.is_full()]
        for key in full:
            del self._buckets[key]
        self._new_clients_since_sweep = 0
