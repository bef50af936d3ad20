"""What a crash can cost the audit trail, and what it cannot, on both stores.

A MediTrack process serves a stream of patient reads (each one an audit event) and is
then killed (`kill -9`) or stopped (SIGTERM). Each read's X-Request-Id is noted with
the moment its answer arrived; the event was queued before the answer was sent, so
an answer that arrived more than MEDITRACK_AUDIT_FLUSH_MS before the kill belongs to
an event at least that old, which the writer must have committed. SIGTERM must lose
none. Then `python meditrack.py verify-audit` must find every chain intact, and must
name the event once one is edited in the database.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from bench.processes import ROOT
from storage.audit_writer import QUARANTINE_FILE, AuditQuarantine
from tests.support.api import ApiClient
from tests.support.deployment import PROCESS_EXIT, Deployment
from tests.support.records import PATIENT
from tests.support.stores import tamper_with_audit
from tests.support.platforms import needs_posix_signals, needs_sigkill

READERS = 4                # client threads reading at once
READS_BEFORE_THE_STOP = 400
IN_TIME = 60.0             # seconds those reads may take
FLUSH_MS = 50              # MEDITRACK_AUDIT_FLUSH_MS, the default


@pytest.fixture
def deployment(tmp_path, store_kind):
    deployment = Deployment(tmp_path / "data", store_kind)
    yield deployment
    deployment.clean_up()


class ReadLog:
    """(request id, when its answer arrived) of every read answered, from many threads."""

    def __init__(self):
        self.answered: list[tuple[str, float]] = []
        self.changed = threading.Condition()
        self.stop = threading.Event()

    def add(self, request_id: str, arrived: float) -> None:
        with self.changed:
            self.answered.append((request_id, arrived))
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.answered) >= count, timeout)


def read_until_stopped(url: str, token: str, patient_id: str, log: ReadLog) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    while not log.stop.is_set():
        try:
            response = session.get(f"{url}/patients/{patient_id}", timeout=10)
        except requests.RequestException:
            return  # the server is gone
        arrived = time.monotonic()
        if response.status_code == 200:
            log.add(response.headers["X-Request-Id"], arrived)


def reads_then(deployment: Deployment, stop_signal: int) -> tuple[ReadLog, float, set[str]]:
    """Serve reads from READERS threads, send `stop_signal` once READS_BEFORE_THE_STOP are
    answered; the log, the moment of the signal, and the request ids of every stored event."""
    server = deployment.start(MEDITRACK_AUDIT_FLUSH_MS=str(FLUSH_MS))
    client = ApiClient(server.url).register_and_login()
    patient_id = client.post("/patients", json=PATIENT).json()["id"]
    token = client.session.headers["Authorization"].removeprefix("Bearer ")
    log = ReadLog()
    readers = [threading.Thread(target=read_until_stopped, args=(server.url, token, patient_id, log), daemon=True)
               for _ in range(READERS)]
    for reader in readers:
        reader.start()
    assert log.wait_for(READS_BEFORE_THE_STOP, IN_TIME), f"only {len(log.answered)} reads answered"
    stopped_at = time.monotonic()
    os.kill(server.process.pid, stop_signal)
    server.process.wait(timeout=PROCESS_EXIT)
    log.stop.set()
    for reader in readers:
        reader.join(timeout=30)
    store = deployment.open_store()
    try:
        stored = [event["requestId"] for chain in store.audit_chain_ids() for event in store.audit_events(chain)]
    finally:
        store.close()
    assert len(stored) == len(set(stored)), "an event was stored twice"
    return log, stopped_at, set(stored)


@needs_sigkill
def test_kill_9_loses_no_event_older_than_the_flush_interval(deployment):
    log, killed_at, stored = reads_then(deployment, signal.SIGKILL)
    bound = killed_at - FLUSH_MS / 1000
    old_enough = [request_id for request_id, arrived in log.answered if arrived < bound]
    missing = [request_id for request_id in old_enough if request_id not in stored]
    lost = [killed_at - arrived for request_id, arrived in log.answered if request_id not in stored]
    # Shown with `pytest -s`: what this run's kill cost.
    print(f"[{deployment.store_kind}] {len(log.answered)} reads answered, {len(lost)} events lost, "
          f"the oldest {max(lost, default=0) * 1000:.1f} ms before the kill")
    assert len(old_enough) >= READS_BEFORE_THE_STOP // 2
    assert not missing, f"{len(missing)} events older than {FLUSH_MS} ms were lost"


@needs_posix_signals
def test_sigterm_loses_no_event(deployment):
    log, _, stored = reads_then(deployment, signal.SIGTERM)
    missing = [request_id for request_id, _ in log.answered if request_id not in stored]
    assert not missing, f"{len(missing)} of {len(log.answered)} events were lost"


def verify_audit(deployment: Deployment) -> subprocess.CompletedProcess:
    environment = {**os.environ, "MONGODB_URI": deployment.mongodb_uri or ""}
    return subprocess.run([sys.executable, "meditrack.py", "verify-audit", "--data-dir", str(deployment.data_dir)],
                          cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)


@needs_posix_signals
def test_verify_audit_passes_an_intact_trail_and_names_an_edited_event(deployment):
    server = deployment.start()
    client = ApiClient(server.url).register_and_login()
    patient_id = client.post("/patients", json=PATIENT).json()["id"]
    for _ in range(10):
        client.get(f"/patients/{patient_id}")
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=PROCESS_EXIT) == 0

    intact = verify_audit(deployment)
    assert intact.returncode == 0, intact.stderr
    assert "audit trail intact: 13 events in 1 chain" in intact.stdout  # register, login, create, 10 reads

    store = deployment.open_store()
    try:
        (chain,) = store.audit_chain_ids()
        victim = list(store.audit_events(chain))[5]
        tamper_with_audit(store, "edit", victim)
    finally:
        store.close()
    broken = verify_audit(deployment)
    assert broken.returncode == 1
    assert f"event {victim['id']}" in broken.stderr and "altered" in broken.stderr


def test_verify_audit_fails_while_an_event_waits_in_the_quarantine(deployment):
    deployment.data_dir.mkdir(parents=True, exist_ok=True)
    deployment.open_store().close()  # an empty trail: it holds
    assert verify_audit(deployment).returncode == 0
    AuditQuarantine(deployment.data_dir / QUARANTINE_FILE).add({"id": "0" * 24, "requestId": "r", "action": "read"})
    waiting = verify_audit(deployment)
    assert waiting.returncode == 1 and "1 event the store refused" in waiting.stderr
