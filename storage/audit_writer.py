"""The audit trail's writer: events in, batches to the store.

A request never waits for its audit event to reach the disk. `AuditWriter.record`
puts the event on a queue and returns; one writer thread takes whatever has queued,
links each event into this process's hash chain, and hands the batch to the store,
which commits it in one transaction (SQLite: one sync for the whole batch; MongoDB:
one `insert_many`). That is group commit: a hundred reads a moment apart cost one
sync, not a hundred.

What a crash can lose: the writer waits at most half of `flush_interval` for a batch
to fill, then commits it, so an event is on disk half a flush interval plus a commit
after it was recorded (`MEDITRACK_AUDIT_FLUSH_MS`, 50 ms by default; a commit here
takes a few milliseconds: tests/test_audit_faults.py measures the whole). `kill -9` loses the
events of that last moment and nothing older; a graceful stop (`close`) commits every
queued event first. If the store refuses a batch (it is down, the disk is full), the
batch is kept and retried with a growing pause, and new events wait behind it, up to
`MAX_BACKLOG`; while the queue is full the request pipeline refuses audited requests
with 503 rather than serve patient data it cannot record (`handlers/audit_trail.py`).

Each batch is linked into this process's hash chain before it is stored
(storage/hash_chain.py says how, and what the chain proves).

An event that names a patient carries its owner, so the owner sees it in GET /audit.
The handler that read the patient says who that is; for any other event (a request
refused before its handler ran, a patient that does not exist) the writer looks it up
here, per batch, before chaining it — never on the request thread. While the store
cannot answer, the batch waits, as it waits when the store refuses it: an event is
never stored without the owner it should have (None only where there is none).

A batch the store keeps refusing for a reason that is not an outage (PERMANENT_AFTER
attempts, each not `Unavailable`) would block every audited request forever, so it is
taken apart: its events are committed one by one, and one that the store still refuses
is set aside in the quarantine (`AuditQuarantine`: a file beside the data, written and
synced before it counts), never silently dropped. The chain goes on without it, so it
verifies; /health counts what is quarantined, and `verify-audit` exits 1 while any is.
"""

import json
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path

from storage.base import Store, utc_timestamp
from storage.errors import StoreError, Unavailable
from storage.hash_chain import GENESIS, chain_hash
from storage.ids import new_id

MAX_BACKLOG = 50_000                 # events that may wait for the store before requests are refused
MAX_BATCH = 1_000                    # events per commit when a backlog drains
MAX_RETRY_PAUSE = 2.0                # seconds between attempts while the store refuses events
KNOWN_OWNERS = 10_000                # patient id → owner id pairs remembered (about 1.5 MB)
PERMANENT_AFTER = 3                  # refusals of one batch, none an outage, before it is taken apart
QUARANTINE_FILE = "audit-quarantine.ndjson"  # in the data directory, whichever store holds the trail
PURGE_INTERVAL = 3600                # seconds between purges of events older than the retention
DAY = 86_400


log = logging.getLogger("meditrack.audit")


class AuditQuarantine:
    """Events the store would not take, one JSON line each, in a file of their own: kept
    for a person to look at (and to move into the trail once the cause is fixed)."""

    def __init__(self, path: Path):
        self.path = path

    def add(self, event: dict) -> None:
        line = json.dumps({name: value for name, value in event.items()
                           if name not in ("chain", "sequence", "hash")}, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())  # set aside means kept: on the disk before it counts

    def count(self) -> int:
        try:
            with open(self.path, encoding="utf-8") as file:
                return sum(1 for line in file if line.strip())
        except FileNotFoundError:
            return 0


class AuditWriter:
    """Queues events, links them into this process's chain, and commits them in batches."""

    def __init__(self, store: Store, *, quarantine: AuditQuarantine, flush_interval: float = 0.05,
                 retention_days: int = 2190, clock=time.time, max_backlog: int = MAX_BACKLOG):
        self.store = store
        self.quarantine = quarantine
        self.flush_interval = flush_interval
        self.retention = retention_days * DAY
        self.clock = clock
        self.max_backlog = max_backlog
        self.chain = new_id(clock)   # this process's chain
        self.dropped = 0             # events refused because the queue was full
        self.quarantined = quarantine.count()  # events set aside, by any process, ever
        self._sequence, self._last_hash = 0, GENESIS
        self._queue: deque[dict] = deque()
        self._unsaved: list[dict] = []   # a batch the store has not taken yet
        self._unsaved_chained = False    # whether it has its owners and its place in the chain
        self._chain_before = (0, GENESIS)  # the chain's state before the batch in hand
        self._owners: dict[str, str] = {}  # a patient's owner never changes: looked up once
        lock = threading.Lock()                     # one lock, two things to wait for:
        self._wake = threading.Condition(lock)      # the writer waits for events,
        self._done = threading.Condition(lock)      # flush() for commits
        self._accepted = self._committed = 0               # events queued / stored, ever
        self._closing = False
        self._hurry = False   # someone is waiting in flush(): commit without waiting for company
        self._stopped = False  # the writer thread has finished: nothing recorded now is stored
        self._next_purge = 0.0
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    # -- the request side ------------------------------------------------------------
    def record(self, event: dict) -> None:
        """Queue an event (the fields of PUBLIC_FIELDS but id and hash, plus ownerId when
        the request knew it); it gets its id and time now, its owner and its place in the
        chain when the writer takes it. The writer owns the dict from here on (and adds
        those fields to it)."""
        event["id"], event["recorded"] = new_id(self.clock), utc_timestamp(self.clock())
        event.setdefault("sessionId", None)
        with self._wake:
            if self._stopped or len(self._queue) + len(self._unsaved) >= self.max_backlog:
                # Full, or closed (a request cut off by shutdown, answered after close()):
                # counted and logged, never queued where no writer will take it.
                self.dropped += 1
                if self.dropped % 1000 == 1:  # the first, then one line per thousand: no log flood
                    log.error("audit backlog full: events are being dropped (%d so far)", self.dropped)
                return
            self._queue.append(event)
            self._accepted += 1
            if len(self._queue) == 1:
                self._wake.notify()

    @property
    def backlog(self) -> int:
        """Events recorded but not yet committed."""
        return len(self._queue) + len(self._unsaved)

    @property
    def full(self) -> bool:
        return self.backlog >= self.max_backlog

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until every event recorded before this call is committed (GET /audit
        calls it, so a user's audit shows the request they made a moment ago); False
        if the store has not taken them within `timeout`."""
        with self._wake:
            target = self._accepted
            self._hurry = True
            self._wake.notify()
            return self._done.wait_for(lambda: self._committed >= target, timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Commit every queued event, then stop; False if the store refused them until
        `timeout` passed (they are lost, and the log says how many)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)
        if self._thread.is_alive() or self.backlog:
            log.error("audit writer stopped with %d events not committed", self.backlog)
            return False
        return True

    # -- the writer thread -----------------------------------------------------------
    def _run(self) -> None:
        pause, refusals = self.flush_interval, 0
        while True:
            self._purge_if_due()
            with self._wake:
                if not (self._queue or self._unsaved or self._closing):
                    self._wake.wait(self._until_purge())  # record() wakes us
                    continue
                fresh = not self._unsaved
                if fresh:
                    # Group commit: wait a moment for company, so one sync carries many events.
                    self._wake.wait_for(lambda: self._closing or self._hurry, self.flush_interval / 2)
                    self._hurry = False
                    self._unsaved, self._unsaved_chained = self._take(MAX_BATCH), False
                    if not self._unsaved:
                        self._stopped = True
                        return  # closing, and nothing is left
                batch = self._unsaved
            try:
                if not self._unsaved_chained:
                    # Outside the lock: a request recording an event never waits for this.
                    self._with_owners(batch)  # StoreError: the batch waits, unchained
                    self._chain_before = (self._sequence, self._last_hash)
                    self._chained(batch)
                    self._unsaved_chained = True
                self.store.append_audit(self.chain, batch)
            except Exception as exc:
                refusals = 0 if isinstance(exc, Unavailable) else refusals + 1
                if refusals >= PERMANENT_AFTER and self._unsaved_chained:
                    self._settle(self._one_by_one(batch))  # what still fails is set aside
                    refusals = 0
                    continue
                # Kept for the next attempt (appending a batch twice stores it once);
                # new events queue behind it. On close, we retry until close's timeout.
                if not isinstance(exc, StoreError):
                    log.exception("unexpected error appending audit events")
                log.warning("the store refused %d audit events; retrying in %.2f s", len(batch), pause)
                time.sleep(pause)
                pause = min(pause * 2, MAX_RETRY_PAUSE)
                continue
            self._settle([])
            pause, refusals = self.flush_interval, 0

    def _settle(self, left: list[dict]) -> None:
        """The batch in hand is stored or set aside, but for `left` (unchained), which
        waits for the next attempt."""
        with self._wake:
            self._committed += len(self._unsaved) - len(left)
            self._unsaved, self._unsaved_chained = left, False
            self._done.notify_all()

    def _one_by_one(self, batch: list[dict]) -> list[dict]:
        """A batch the store keeps refusing, taken apart: each event chained and stored
        on its own, and one the store refuses on its own quarantined (the chain goes on
        from the event before it). If the store goes down meanwhile, the events not yet
        stored are returned, unchained, to wait as a batch again."""
        self._sequence, self._last_hash = self._chain_before
        for index, event in enumerate(batch):
            before = (self._sequence, self._last_hash)
            self._chained([event])
            try:
                self.store.append_audit(self.chain, [event])
            except Unavailable:
                self._sequence, self._last_hash = before
                return batch[index:]
            except Exception as exc:
                self._sequence, self._last_hash = before
                self.quarantine.add(event)
                self.quarantined += 1
                log.error("audit event %s set aside in %s: the store refuses it (%s)", event["id"],
                          self.quarantine.path, type(exc).__name__)
        return []

    def _take(self, limit: int) -> list[dict]:
        batch = []
        while self._queue and len(batch) < limit:
            batch.append(self._queue.popleft())
        return batch

    def _with_owners(self, events: list[dict]) -> None:
        """Each event that names a patient and has no owner yet gets it from the store
        (None if there is no such patient); StoreError if the store cannot say now."""
        for event in events:
            if "ownerId" in event:
                continue
            owner = self._owners.get(event["patientId"])
            if owner is None:
                owner = self.store.patient_owner(event["patientId"])
                if owner is not None:
                    if len(self._owners) >= KNOWN_OWNERS:
                        self._owners.clear()
                    self._owners[event["patientId"]] = owner
            event["ownerId"] = owner

    def _chained(self, events: list[dict]) -> list[dict]:
        for event in events:
            self._sequence += 1
            event["chain"], event["sequence"] = self.chain, self._sequence
            event["hash"] = self._last_hash = chain_hash(self._last_hash, event)
        return events

    def _until_purge(self) -> float:
        return max(0.0, min(self._next_purge - self.clock(), PURGE_INTERVAL))

    def _purge_if_due(self) -> None:
        """Delete events past the retention period (HIPAA keeps documentation six years)."""
        if self.clock() < self._next_purge:
            return
        self._next_purge = self.clock() + PURGE_INTERVAL
        try:
            self.store.purge_audit(utc_timestamp(self.clock() - self.retention))
        except Exception as exc:  # never the end of the writer: the purge can wait an hour
            if not isinstance(exc, StoreError):
                log.exception("unexpected error purging audit events")
            log.warning("the audit purge failed; it is tried again in an hour")


