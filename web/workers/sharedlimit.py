"""The rate limit of web/ratelimit.py, shared by the worker processes of one machine.

With `--workers N` (web/workers/prefork.py) a client's connections land on any worker. Buckets
kept in each worker's memory would give a client N times its limit (one bucket per
worker) — or, split evenly, make it wait for tokens another worker holds. So the
buckets live in memory every worker sees: a table made by the parent before it forks.

Why shared memory, and not the two other places buckets could live:

- **the parent as the bucket keeper** would cost every request a round trip to another
  process (a pipe write, a wake-up, a reply): more than the check itself, on every
  request, and the parent would become a single thread all workers queue behind;
- **a bucket in the store** would cost every request a database write; SQLite has one
  writer, and MongoDB a network round trip. A limit exists to protect the server: it
  must be the cheapest thing a request does.

A table in an anonymous shared mapping (`mmap(-1, …)`, MAP_SHARED: after `fork` every
worker maps the same pages) costs a hash, a lock and a few bytes read and written. Its
layout, `SLOT` bytes per client:

    key hash (8-byte unsigned, 0 = empty) | tokens (double) | last refill (double)

A client's slot is found by open addressing: start at hash % slots, look at up to
`PROBES` slots. A new client takes an empty slot in that window, or else the one whose
bucket was touched longest ago (like web/ratelimit.py's least-recently-used rule: a
forgotten client starts again with a full bucket, so the bound costs a burst, never a
wrong refusal). The arithmetic is the token bucket's, with time from CLOCK_MONOTONIC,
which every process on the machine reads alike.

NOTE: one lock for the whole table (`ProcessSharedLock`): refill-and-take must be one
step, or two workers could both spend the last token. A check holds it for a few
microseconds. It is two locks in one: a `threading.Lock` for the threads of a process,
and a POSIX record lock (`fcntl.lockf`) on a file made before the fork for the
processes. Not `multiprocessing.Lock`, a semaphore in shared memory: a worker killed
(`kill -9`, the OOM killer) while it held that one would leave it held, and every other
worker would wait forever. The kernel releases a record lock when its process dies.

Across machines each instance keeps its own table: put a global limit at the proxy.
"""

import hashlib
import mmap
import os
import struct
import tempfile
import threading
import time

from web.ratelimit import Clock, refill, require_positive, spend

try:
    import fcntl  # POSIX record locks; this module serves only workers, which need os.fork (POSIX)
except ImportError:  # Windows: importable, never used (settings.py refuses --workers there)
    fcntl = None

SLOT = struct.Struct("<Qdd")  # key hash, tokens, last refill
PROBES = 16                   # slots looked at for one key


class SharedRateLimiter:
    """`requests` per `per_seconds` for each client, counted across every process that
    inherits this object (make it before forking); the same `check` as RateLimiter."""

    def __init__(self, requests: int, per_seconds: float, *, slots: int = 65_536, clock: Clock = time.monotonic):
        require_positive("requests", requests)
        require_positive("per_seconds", per_seconds)
        self._capacity = float(requests)
        self._rate = requests / per_seconds
        self._slots = slots
        self._clock = clock
        self._table = mmap.mmap(-1, slots * SLOT.size)  # anonymous and shared: zeroes, every slot empty
        self._lock = ProcessSharedLock()

    def check(self, key: str) -> float:
        """Count one request from `key`: 0.0 if allowed, else the seconds to wait (> 0)."""
        # blake2b, not hash(): Python's str hash is salted per process, and every worker
        # must find the same slot. `| 1` keeps 0 free to mean "empty".
        key_hash = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") | 1
        start = key_hash % self._slots
        with self._lock:
            now = self._clock()
            slot = self._find(key_hash, start)
            stored_hash, tokens, last = SLOT.unpack_from(self._table, slot * SLOT.size)
            if stored_hash != key_hash:  # a new client (or one forgotten): a full bucket
                tokens, last = self._capacity, now
            # The same arithmetic as one process's buckets (web/ratelimit.py).
            tokens, last = refill(tokens, last, now, rate=self._rate, capacity=self._capacity)
            tokens, wait = spend(tokens, 1, self._rate)
            SLOT.pack_into(self._table, slot * SLOT.size, key_hash, tokens, last)
            return wait

    def _find(self, key_hash: int, start: int) -> int:
        """The key's slot; else an empty one; else the least recently touched, in the window."""
        empty, oldest, oldest_time = None, start, float("inf")
        for offset in range(PROBES):
            slot = (start + offset) % self._slots
            stored_hash, _, last = SLOT.unpack_from(self._table, slot * SLOT.size)
            if stored_hash == key_hash:
                return slot
            if stored_hash == 0:
                empty = slot if empty is None else empty
            elif last < oldest_time:
                oldest, oldest_time = slot, last
        return empty if empty is not None else oldest


class ProcessSharedLock:
    """Mutual exclusion for every thread of every process forked after it was made,
    which a process that dies while holding it cannot leave held.

    A POSIX record lock belongs to a process: the kernel releases it when the process
    exits, however it exits, but it does not exclude the threads of one process from
    each other, so a thread lock is taken first. The file is unlinked as soon as it
    is made; every fork inherits its descriptor, and a new thread lock."""

    def __init__(self):
        self._file = tempfile.TemporaryFile(prefix="meditrack-lock-")
        self._threads = threading.Lock()
        os.register_at_fork(after_in_child=self._in_new_process)

    def _in_new_process(self) -> None:
        self._threads = threading.Lock()  # the parent's may have been held by a thread the child does not have

    def __enter__(self):
        self._threads.acquire()
        try:
            fcntl.lockf(self._file, fcntl.LOCK_EX)  # waits while another process holds it
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(self, *exc_info):
        fcntl.lockf(self._file, fcntl.LOCK_UN)
        self._threads.release()
