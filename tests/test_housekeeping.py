"""Housekeeping while serving (web/housekeeping.py): tasks run once per interval by the
injected clock, a failing one is tried again at its next turn; and the store's sweep,
run that way on a store that serves, removes what a crash left once it is old enough,
never an upload in progress that commits afterwards — on every store. A server hands
its housekeeping both the store's sweep and the bulk exports' (expired ones go)."""

import hashlib
import logging
import os
import signal
import threading

import meditrack
import system
from settings import Settings
from tests.support.clock import FakeClock
from storage.base import base64_sha1
from tests.support.records import PATIENT, REPORT_METADATA, write_report
from web.housekeeping import Housekeeping

HOUR = 3600.0
BIG = b"%PDF-" + os.urandom(300 * 1024)  # more than one GridFS chunk: some of it is stored at once


def test_a_task_runs_once_per_interval_by_the_clock():
    clock, runs = FakeClock(1000.0), []
    housekeeping = Housekeeping({"count": lambda: runs.append(clock())}, interval=HOUR, clock=clock)
    assert housekeeping.run_due() == [] and runs == []        # start-up has just done it
    clock.now += HOUR - 1
    assert housekeeping.run_due() == []
    clock.now += 1
    assert housekeeping.run_due() == ["count"] and runs == [1000.0 + HOUR]
    assert housekeeping.run_due() == []                      # not again until the next hour
    clock.now += HOUR
    assert housekeeping.run_due() == ["count"] and len(runs) == 2


def test_a_task_that_fails_is_logged_and_tried_again_at_its_next_turn(caplog):
    clock, attempts = FakeClock(0.0), []

    def flaky():
        attempts.append(clock())
        if len(attempts) == 1:
            raise OSError("the disk is busy")
    housekeeping = Housekeeping({"sweep": flaky, "other": lambda: None}, interval=10, clock=clock)
    clock.now = 10
    with caplog.at_level(logging.WARNING, logger="meditrack.housekeeping"):
        assert housekeeping.run_due() == ["sweep", "other"]   # the failure stops nothing else
    assert "sweep failed (OSError)" in caplog.text
    clock.now = 20
    assert housekeeping.run_due() == ["sweep", "other"] and attempts == [10, 20]


def test_the_thread_runs_what_is_due_and_stops():
    clock, ran = FakeClock(0.0), threading.Event()
    housekeeping = Housekeeping({"mark": ran.set}, interval=HOUR, clock=clock, check_every=0.01).start()
    try:
        clock.now = HOUR
        assert ran.wait(timeout=10)
    finally:
        housekeeping.stop()
    assert not housekeeping._thread.is_alive()


def test_the_hourly_sweep_removes_what_a_crash_left_and_never_an_upload_in_progress(store, clock, store_kind):
    """An upload a crash cut short (its bytes stored, nothing naming them), made an hour
    ago; and an upload still being written now. The sweep, as the housekeeping runs it,
    takes the first only; the second then commits and its report reads back whole."""
    patient = store.create_patient(store.create_user("u", b"h")["id"], PATIENT)
    kept = write_report(store, patient["id"])
    housekeeping = Housekeeping({"sweep": store.sweep}, interval=HOUR, clock=clock)
    crashed = store.report_writer()  # never committed nor aborted: what kill -9 leaves
    crashed.write(BIG)
    stored_as_a_crash_leaves_it(crashed, clock)
    clock.now += HOUR
    in_progress = store.report_writer()
    in_progress.write(BIG)
    stored_as_a_crash_leaves_it(in_progress, clock)  # the same state, but young: its row is on its way
    assert crashed.report_id in store.stored_report_ids()
    assert housekeeping.run_due() == ["sweep"]
    stored = store.stored_report_ids()
    assert crashed.report_id not in stored and {kept["id"], in_progress.report_id} <= stored
    in_progress.commit(patient["id"], {**REPORT_METADATA, "size": len(BIG), "sha256": hashlib.sha256(BIG).hexdigest(),
                                       "sha1": base64_sha1([BIG])})
    _, chunks = store.open_report(patient["id"], in_progress.report_id)
    try:
        assert b"".join(chunks) == BIG
    finally:
        chunks.close()


def stored_as_a_crash_leaves_it(writer, clock) -> None:
    """Bring an upload's bytes to where a crash before its row would leave them, made now
    by the store's clock: a file renamed into place (its age is the file's), GridFS chunks
    (their age is the id's), or an object the PUT stored (its age is the id's)."""
    if hasattr(writer, "_file"):  # the SQLite store's files
        os.utime(writer._file.name, (clock(), clock()))
    elif hasattr(writer, "_spool"):  # an object store (storage/s3/reports.py)
        writer._reports.put_file(writer.report_id, writer._spool, len(BIG), hashlib.sha256(BIG).hexdigest())


def test_a_server_sweeps_its_store_and_its_bulk_exports_hourly(monkeypatch):
    """`serve` (one process, or each worker) hands both sweeps to its housekeeping."""
    handed = {}

    class Recording:
        def __init__(self, tasks):
            handed.update(tasks)

        def start(self):
            return self

        def stop(self):
            handed["stopped"] = True

    class Closable:
        def __init__(self):
            self.closed = False

        def sweep(self):
            pass

        def close(self):
            self.closed = True

    class Server:  # serves nothing: stops at once, as after SIGTERM
        def serve_forever(self):
            pass

        def drain(self, grace):
            return True

        def server_close(self):
            pass

    monkeypatch.setattr(meditrack, "Housekeeping", Recording)
    store, writer, jobs = Closable(), Closable(), Closable()
    previous = {number: signal.getsignal(number) for number in system.STOP_SIGNALS}
    try:
        meditrack.serve(Settings(), Server(), store, writer, jobs)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    assert handed == {"sweep": store.sweep, "bulk exports": jobs.sweep, "stopped": True}
    assert store.closed and writer.closed
