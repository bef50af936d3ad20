"""Record ids in MongoDB's ObjectId format, made with the standard library.

Both stores use the same id shape so that clients, URLs and tests do not care which
store is running: 12 bytes written as 24 lower-case hex digits,

    4 bytes  seconds since the Unix epoch (big-endian), so ids sort by creation time
    5 bytes  random, chosen once per process, so two processes never collide
    3 bytes  a counter, starting at a random value, so one process never repeats

as the BSON ObjectId specification lays it out. Sorting ids sorts records by time
(to the second), which is what makes `_id`/`id` a good key for cursor pagination.
"""

import itertools
import os
import re
import threading
import time


class _ProcessPart:
    """The random bytes and the counter of one process, and the lock that guards the counter."""

    def __init__(self):
        self.pid = os.getpid()
        self.random = os.urandom(5)
        self.counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
        # NOTE: next() on itertools.count is atomic under the GIL, but a lock keeps the
        # guarantee explicit and independent of interpreter details.
        self.lock = threading.Lock()


_process = _ProcessPart()


def _this_process() -> _ProcessPart:
    """This process's part, made anew in a forked child.

    NOTE: "once per process" includes a forked one (`--workers`). A child starts with a
    copy of its parent's memory, random bytes and counter included, so two workers
    would make the same ids in the same second. A new pid tells the child it is one;
    its new part also has a new lock (the parent's may have been held at the fork by a
    thread the child does not have)."""
    global _process
    part = _process
    if part.pid != os.getpid():
        part = _process = _ProcessPart()
    return part


OBJECT_ID = re.compile(r"[0-9a-f]{24}")


def new_id(clock=time.time) -> str:
    part = _this_process()
    with part.lock:
        count = next(part.counter) % 0x1000000
    seconds = int(clock()) & 0xFFFFFFFF
    return (seconds.to_bytes(4, "big") + part.random + count.to_bytes(3, "big")).hex()


def id_seconds(text: str) -> int:
    """When an id was made (seconds since the epoch, by the clock that made it): its first 4 bytes."""
    return int(text[:8], 16)


def is_object_id(text: str) -> bool:
    """True for exactly 24 lower-case hex digits (fullmatch: no trailing newline)."""
    return isinstance(text, str) and OBJECT_ID.fullmatch(text) is not None
