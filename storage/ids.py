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

# NOTE: next() on itertools.count is atomic under the GIL, but a lock keeps the
# guarantee explicit and independent of interpreter details.
def _new_process() -> None:
    global _PROCESS_RANDOM, _counter, _counter_lock
    _counter_lock = threading.Lock()  # a thread of the parent may have held it at the fork
    _PROCESS_RANDOM = os.urandom(5)
    _counter = itertools.count(int.from_bytes(os.urandom(3), "big"))


_new_process()
# NOTE: "once per process" includes a forked one. A `--workers` child (web/prefork.py)
# starts with a copy of its parent's memory, random bytes and counter included: without
# this, two workers made the same ids in the same second (found by `make soak` with
# two workers: a new patient refused as a duplicate, and two audit chains with one id).
os.register_at_fork(after_in_child=_new_process)

OBJECT_ID = re.compile(r"[0-9a-f]{24}")


def new_id(clock=time.time) -> str:
    with _counter_lock:
        count = next(_counter) % 0x1000000
    seconds = int(clock()) & 0xFFFFFFFF
    return (seconds.to_bytes(4, "big") + _PROCESS_RANDOM + count.to_bytes(3, "big")).hex()


def is_object_id(text: str) -> bool:
    """True for exactly 24 lower-case hex digits (fullmatch: no trailing newline)."""
    return isinstance(text, str) and OBJECT_ID.fullmatch(text) is not None
