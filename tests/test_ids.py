"""Tests for storage/ids.py: ObjectId-shaped ids (4 bytes time, 5 random, 3 counter) and their check."""

import json
import os
import re
import select
import signal
import threading

import pytest

from storage import ids
from storage.ids import is_object_id, new_id
from tests.support.platforms import needs_fork

SECONDS = 0x65A1B2C3  # 2024-01-12, chosen so every one of the 4 bytes differs


def test_id_is_24_lower_case_hex_digits():
    assert re.fullmatch(r"[0-9a-f]{24}", new_id())


def test_first_four_bytes_are_the_clocks_seconds():
    identifier = new_id(clock=lambda: SECONDS + 0.999)
    assert bytes.fromhex(identifier)[:4] == SECONDS.to_bytes(4, "big")


@pytest.mark.parametrize("seconds", [0, 1, 1_700_000_000, 0xFFFFFFFF])
def test_seconds_are_big_endian_and_fill_all_four_bytes(seconds):
    assert int(new_id(clock=lambda: seconds)[:8], 16) == seconds


def test_ids_from_later_seconds_sort_after_earlier_ones():
    assert new_id(clock=lambda: SECONDS) < new_id(clock=lambda: SECONDS + 1)


def test_ids_of_one_process_share_the_random_middle_bytes():
    first, second = new_id(clock=lambda: SECONDS), new_id(clock=lambda: SECONDS + 100)
    assert first[8:18] == second[8:18]


def test_ten_thousand_ids_in_the_same_second_are_unique():
    ids = [new_id(clock=lambda: SECONDS) for _ in range(10_000)]
    assert len(set(ids)) == 10_000


def test_ten_thousand_ids_from_eight_threads_are_unique():
    threads, per_thread = 8, 1250
    start_together = threading.Barrier(threads)
    made: list[list[str]] = [[] for _ in range(threads)]

    def make(index: int) -> None:
        start_together.wait()
        made[index] = [new_id(clock=lambda: SECONDS) for _ in range(per_thread)]

    workers = [threading.Thread(target=make, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    every_id = [identifier for batch in made for identifier in batch]
    assert len(every_id) == 10_000
    assert len(set(every_id)) == 10_000


@pytest.mark.parametrize("text", ["0" * 24, "f" * 24, "0123456789abcdef01234567", new_id()])
def test_is_object_id_accepts_24_lower_case_hex_digits(text):
    assert is_object_id(text) is True


@pytest.mark.parametrize("text", [
    "0123456789ABCDEF01234567",     # upper case
    "0123456789abcdeF01234567",     # one upper-case digit
    "0" * 23,
    "0" * 25,
    "0" * 24 + "\n",
    "\n" + "0" * 24,
    " " + "0" * 23,
    "g" * 24,
    "0123456789abcdef0123456-",
    "",
    "٠" * 24,                        # Arabic-Indic zeros: digits, but not hex
    "０" * 24,                       # full-width zeros
])
def test_is_object_id_refuses_anything_else(text):
    assert is_object_id(text) is False


@pytest.mark.parametrize("value", [None, 0x0123456789ABCDEF, b"0" * 24, ["0" * 24], 1.5])
def test_is_object_id_refuses_non_strings(value):
    assert is_object_id(value) is False


@needs_fork
def test_forked_children_make_ids_of_their_own():
    # Two `--workers` children of one parent, at the same second: their 5 random bytes
    # (and so their ids) must differ from each other's and from the parent's.
    def ids_of_a_child() -> set[str]:
        read, write = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                os.write(write, json.dumps([new_id(lambda: 1_700_000_000) for _ in range(100)]).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as reader:
            made = set(json.loads(reader.read()))
        os.waitpid(child, 0)
        return made

    first, second = ids_of_a_child(), ids_of_a_child()
    parent = {new_id(lambda: 1_700_000_000) for _ in range(100)}
    assert len(first) == len(second) == 100
    assert not first & second and not first & parent and not second & parent
    assert len({made[8:18] for made in first | second | parent}) == 3  # one random part per process


@needs_fork
def test_a_child_forked_while_a_thread_held_the_counter_lock_still_makes_ids():
    # The thread holding the lock does not exist in the child: had the child kept its
    # parent's lock, its first id would wait forever.
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock():
        with ids._this_process().lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    holding.wait(10)
    read, write = os.pipe()
    try:
        child = os.fork()
        if child == 0:
            try:
                os.write(write, new_id().encode())
            finally:
                os._exit(0)
    finally:
        release.set()
        holder.join()
    os.close(write)
    answered, _, _ = select.select([read], [], [], 10)
    if not answered:
        os.kill(child, signal.SIGKILL)
    with os.fdopen(read) as reader:
        made = reader.read() if answered else ""
    os.waitpid(child, 0)
    assert is_object_id(made), "the child made no id within 10 s"
