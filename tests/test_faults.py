"""Faults: a MediTrack process killed in the middle of writing, and one asked to stop
in the middle of a request.

Each test runs `python meditrack.py` as a real process, so it can be killed, and runs
once per store. Two promises are checked from outside:

- Durability. A write answered 201 survives `kill -9`: the patient is there, the
  report reads back byte for byte. And a crash leaves no debris: after the start-up
  sweep, the stored report bytes are exactly the reports that patients name (no temp
  file, orphan file or stray GridFS chunk).
- Graceful shutdown. On SIGTERM the server stops taking connections, closes idle
  keep-alive ones at once, lets a request in progress finish within the grace period
  (MEDITRACK_SHUTDOWN_GRACE), and cuts off what is still running after it — and an
  upload cut off that way leaves nothing behind.

After a process has gone, the store is opened in this process on the same data. The
MongoDB store sweeps only GridFS files older than SWEEP_MIN_AGE (so that it never takes
an upload another process is still writing); here its clock is moved past that age,
so every leftover counts as old. No test sleeps: every wait is a process, socket or
thread with a timeout, and the kill comes after a count of acknowledged writes.
"""

import hashlib
import os
import random
import signal
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass

import pytest
import requests

from tests.support.api import ApiClient
from tests.support.deployment import PROCESS_EXIT, Deployment, MediTrackProcess, until
from tests.support.raw_http import RawConnection, http_request
from tests.support.records import PATIENT
from tests.support.uploads import MULTIPART, file_part, multipart
from tests.support.platforms import needs_posix_signals, needs_sigkill

KiB, MiB = 1024, 1024 * 1024

WRITERS = 6                  # client threads writing at once
KILL_AFTER = 60              # acknowledged writes before the kill -9
ACKNOWLEDGED_IN_TIME = 60.0  # seconds those writes may take
# The graceful tests check that the server stops *before* its grace period runs out
# (it did not wait for what it had no need to wait for), on a real clock in another
# process. A long grace makes those bounds generous for a loaded CI machine, and costs
# nothing when the server works: it never waits the grace out.
GRACE = 30                   # MEDITRACK_SHUTDOWN_GRACE for the graceful tests
SOCKET_TIMEOUT = GRACE / 2   # our sockets' timeout: what "at once" may take, well short of GRACE


@pytest.fixture
def deployment(tmp_path, store_kind):
    deployment = Deployment(tmp_path / "data", store_kind)
    yield deployment
    deployment.clean_up()


# -- uploads ------------------------------------------------------------------------------

def random_pdf(rng: random.Random, size: int) -> bytes:
    """`size` bytes the server sniffs as PDF; random, so a wrong byte anywhere shows."""
    header = b"%PDF-1.4\n"
    return header + rng.randbytes(size - len(header))


def begin_upload(server: MediTrackProcess, token: str, patient_id: str, body: bytes) -> RawConnection:
    """Send an upload's head and the first half of its body, and return once the
    server is reading that body: the request is then in progress, not an idle connection.

    `Expect: 100-continue` is the signal: the server sends 100 Continue only when the
    handler first reads the body (after authorizing and finding the patient).
    """
    connection = RawConnection(server, SOCKET_TIMEOUT)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": MULTIPART,
               "Content-Length": str(len(body)), "Expect": "100-continue"}
    connection.send(http_request("POST", f"/patients/{patient_id}/reports", headers=headers))
    interim = connection.read_response()
    assert interim.status == 100, (interim.status, interim.body)
    connection.send(body[:len(body) // 2])
    return connection


def idle_keep_alive_connection(server: MediTrackProcess) -> RawConnection:
    """A connection that has completed one request and stays open, saying nothing."""
    connection = RawConnection(server, SOCKET_TIMEOUT)
    response = connection.request(http_request("GET", "/health"))
    assert response.status == 200 and response.header("Connection") is None
    return connection


def new_patient(server: MediTrackProcess) -> tuple[str, dict]:
    """A fresh user's token and a patient of theirs."""
    client = ApiClient(server.url).register_and_login()
    response = client.post("/patients", json=PATIENT)
    assert response.status_code == 201, response.text
    return client.session.headers["Authorization"].removeprefix("Bearer "), response.json()


def stored_sha256(store, patient_id: str, report_id: str) -> str:
    """The sha256 of a report's bytes as the store reads them back (and of its metadata)."""
    report, chunks = store.open_report(patient_id, report_id)
    digest = hashlib.sha256()
    try:
        for chunk in chunks:
            digest.update(chunk)
    finally:
        chunks.close()
    assert report["sha256"] == digest.hexdigest(), "the metadata's sha256 is not the bytes'"
    return digest.hexdigest()


# -- kill -9 in the middle of a stream of writes ---------------------------------------------

class WriteLog:
    """What the server acknowledged (answered 201), and what happened to the rest,
    shared by the writer threads."""

    def __init__(self):
        self.changed = threading.Condition()
        self.killed = threading.Event()   # set just before the kill: later failures are expected
        self.patients: set[str] = set()
        self.reports: dict[str, tuple[str, str, int]] = {}  # report id → (patient id, sha256, size)
        self.edits: dict[str, tuple[int, str]] = {}  # patient id → (the version a PATCH made, its notes)
        self.cut_off: list[str] = []      # what each request in flight when the process died was
        self.unexpected: list[str] = []   # any other answer or failure

    @property
    def acknowledged(self) -> int:
        return len(self.patients) + len(self.reports) + len(self.edits)

    def record(self, *, patient: str | None = None, report: tuple[str, str, str, int] | None = None,
               edit: tuple[str, int, str] | None = None) -> None:
        with self.changed:
            if patient:
                self.patients.add(patient)
            if report:
                self.reports[report[0]] = report[1:]
            if edit:
                self.edits[edit[0]] = edit[1:]
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.acknowledged >= count or self.unexpected, timeout)


def write_until_the_server_dies(url: str, token: str, log: WriteLog, seed: int) -> None:
    """Create a patient, upload one to three reports to it (1 KiB – 2 MiB), edit it with
    a PATCH naming its version (If-Match), repeat; stop at the first request that fails,
    as every one does once the server is killed."""
    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    try:
        while True:
            sending = "a patient"
            response = session.post(url + "/patients", json=PATIENT, timeout=30)
            if response.status_code != 201:
                raise AssertionError(f"creating a patient answered {response.status_code}")
            patient_id, version = response.json()["id"], 1
            log.record(patient=patient_id)
            for _ in range(rng.randint(1, 3)):
                data = random_pdf(rng, int(2 ** rng.uniform(10, 21)))  # 1 KiB – 2 MiB, log-uniform
                sha256 = hashlib.sha256(data).hexdigest()
                body = multipart(file_part(data))
                sending = f"an upload of {len(data)} bytes"
                response = session.post(f"{url}/patients/{patient_id}/reports", data=body, timeout=30,
                                        headers={"Content-Type": MULTIPART})
                if response.status_code != 201 or response.json()["sha256"] != sha256:
                    raise AssertionError(f"an upload answered {response.status_code}: {response.text[:200]}")
                log.record(report=(response.json()["id"], patient_id, sha256, len(data)))
                version += 1  # each report added is a new version of the patient
            notes = f"edit {rng.getrandbits(64):016x}"
            sending = "an edit"
            response = session.patch(f"{url}/patients/{patient_id}", json={"notes": notes}, timeout=30,
                                     headers={"Content-Type": "application/merge-patch+json",
                                              "If-Match": f'"{version}"'})
            if response.status_code != 200 or response.json()["version"] != version + 1:
                raise AssertionError(f"an edit answered {response.status_code}: {response.text[:200]}")
            log.record(edit=(patient_id, version + 1, notes))
    except requests.ConnectionError as exc:
        with log.changed:
            if log.killed.is_set():
                log.cut_off.append(sending)  # this thread's request was on its way at the kill
            else:
                log.unexpected.append(f"a request failed before the kill: {exc}")
            log.changed.notify_all()
    except Exception as exc:  # noqa: BLE001 — reported by the test, not lost in a thread
        with log.changed:
            log.unexpected.append(repr(exc))
            log.changed.notify_all()


def report_ids_patients_name(store, owner_id: str) -> tuple[set[str], set[str]]:
    """Every patient of the owner, page by page, and every report id they name."""
    patient_ids, report_ids, after = set(), set(), None
    while True:
        page = store.list_patients(owner_id, limit=100, after=after)
        patient_ids |= {patient["id"] for patient in page}
        report_ids |= {report["id"] for patient in page for report in patient["reports"]}
        if len(page) < 100:
            return patient_ids, report_ids
        after = page[-1]["id"]


@needs_sigkill
def test_kill_9_during_writes_loses_no_acknowledged_write(deployment):
    server = deployment.start()
    client = ApiClient(server.url).register_and_login()
    token = client.session.headers["Authorization"].removeprefix("Bearer ")
    log = WriteLog()
    writers = [threading.Thread(target=write_until_the_server_dies, args=(server.url, token, log, seed),
                                daemon=True) for seed in range(WRITERS)]
    for writer in writers:
        writer.start()

    assert log.wait_for(KILL_AFTER, ACKNOWLEDGED_IN_TIME), f"only {log.acknowledged} writes acknowledged"
    assert not log.unexpected, log.unexpected
    assert all(writer.is_alive() for writer in writers), "every writer must still be sending at the kill"
    log.killed.set()
    with log.changed:
        acknowledged_at_kill = log.acknowledged
    os.kill(server.process.pid, signal.SIGKILL)
    assert server.process.wait(timeout=PROCESS_EXIT) == -signal.SIGKILL
    for writer in writers:
        writer.join(timeout=30)
        assert not writer.is_alive(), "a writer is still waiting on a dead server"
    assert not log.unexpected, log.unexpected
    assert log.cut_off, "no request was in flight at the kill: the test proved nothing"

    # The dead process's data, as a store opened on it now finds it.
    left_behind = deployment.report_ids_before_sweep()
    store = deployment.open_store()
    try:
        for patient_id in log.patients:
            assert store.get_patient(patient_id)["ownerId"] == client.user["id"]
        for report_id, (patient_id, sha256, _) in log.reports.items():
            assert stored_sha256(store, patient_id, report_id) == sha256, f"report {report_id} changed"
        for patient_id, (version, notes) in log.edits.items():
            # Each acknowledged edit is the patient's current version, with its whole history.
            patient = store.get_patient(patient_id)
            assert (patient["version"], patient["notes"]) == (version, notes)
            history = store.list_versions(patient_id, below=version + 1, limit=100)
            assert [item["version"] for item in history] == list(range(version, 0, -1))
        patient_ids, named = report_ids_patients_name(store, client.user["id"])
        assert log.patients <= patient_ids
        stored = store.stored_report_ids()
        # Exactly: no orphan file, temp file or GridFS chunk, and no row without its bytes.
        assert stored == named, {"orphans": stored - named, "missing": named - stored}
        # Shown with `pytest -s`, or beside a failure: what this run's kill hit.
        print(f"[{deployment.store_kind}] {acknowledged_at_kill} writes acknowledged at the kill, "
              f"{len(log.patients)} patients, {len(log.reports)} reports and {len(log.edits)} edits in the end; "
              f"{len(log.cut_off)} requests cut off: {', '.join(sorted(log.cut_off))}; "
              f"{len(named) - len(log.reports)} reports committed but never acknowledged; "
              f"the sweep removed {len(left_behind - stored)} leftovers")
    finally:
        store.close()
    if deployment.store_kind == "sqlite":
        with closing(sqlite3.connect(deployment.data_dir / "meditrack.sqlite3")) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert list(deployment.temp_dir.iterdir()) == []

    # A new process on the same data serves what was acknowledged.
    restarted = deployment.start()
    for patient_id in sorted(log.patients)[:3]:
        response = client.session.get(f"{restarted.url}/patients/{patient_id}", timeout=10)
        assert response.status_code == 200 and response.json()["id"] == patient_id
    largest = max(log.reports, key=lambda report_id: log.reports[report_id][2])
    for report_id in sorted(log.reports)[:2] + [largest]:
        patient_id, sha256, _ = log.reports[report_id]
        download = client.session.get(f"{restarted.url}/patients/{patient_id}/reports/{report_id}", timeout=30)
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == sha256


# -- SIGTERM: finish what is in progress, take nothing new ------------------------------------

@dataclass
class UploadInFlight:
    server: MediTrackProcess
    patient: dict
    data: bytes
    body: bytes
    connection: RawConnection
    terminated: float  # time.monotonic() at the SIGTERM

    def finish(self):
        """Send the rest of the body; the server's answer."""
        self.connection.send(self.body[len(self.body) // 2:])
        return self.connection.read_response()


def sigterm_during_an_upload(deployment: Deployment, size: int) -> UploadInFlight:
    """A server with GRACE seconds' grace, half an upload received, then SIGTERM;
    returns once the server has stopped serving and is draining."""
    server = deployment.start(MEDITRACK_SHUTDOWN_GRACE=str(GRACE))
    token, patient = new_patient(server)
    data = random_pdf(random.Random(size), size)
    body = multipart(file_part(data))
    connection = begin_upload(server, token, patient["id"], body)
    idle = idle_keep_alive_connection(server)
    terminated = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    # The idle connection is closed when draining begins: from then on the server
    # takes no new request, and the upload is a request in progress.
    assert idle.server_closed()
    idle.close()
    return UploadInFlight(server, patient, data, body, connection, terminated)


def test_sigterm_lets_an_upload_in_flight_finish(deployment):
    upload = sigterm_during_an_upload(deployment, 512 * KiB)
    response = upload.finish()
    upload.connection.close()
    assert response.status == 201, (response.status, response.body)
    assert response.json()["sha256"] == hashlib.sha256(upload.data).hexdigest()
    assert response.header("Connection") == "close"  # a stopping server keeps no connection
    process = upload.server.process
    assert process.wait(timeout=GRACE) == 0
    assert time.monotonic() - upload.terminated < GRACE
    log = upload.server.stderr_text()
    assert "MediTrack stopped" in log and "cut off" not in log

    store = deployment.open_store()
    try:
        report_id = response.json()["id"]
        assert stored_sha256(store, upload.patient["id"], report_id) == hashlib.sha256(upload.data).hexdigest()
        assert store.stored_report_ids() == {report_id}
    finally:
        store.close()


@needs_posix_signals
def test_sigterm_closes_an_idle_keep_alive_connection_at_once(deployment):
    server = deployment.start(MEDITRACK_SHUTDOWN_GRACE=str(GRACE))
    idle = idle_keep_alive_connection(server)
    terminated = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    # server_closed() reads with the socket's timeout (half the grace): an idle
    # connection held open until the grace period ran out would raise instead.
    assert idle.server_closed()
    idle.close()
    assert server.process.wait(timeout=GRACE / 2) == 0
    assert time.monotonic() - terminated < GRACE / 2


def connection_is_refused(server: MediTrackProcess) -> bool:
    """Whether a new connection is refused, or closed without a response, at once
    (within SOCKET_TIMEOUT). A connection left hanging (accepted by the kernel, never
    served) is not refused: it would hang until the grace period ran out."""
    try:
        with RawConnection(server, timeout=SOCKET_TIMEOUT) as late:
            late.send(http_request("GET", "/health"))
            return late.server_closed()
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_sigterm_refuses_new_connections_while_a_request_finishes(deployment):
    upload = sigterm_during_an_upload(deployment, 256 * KiB)
    refused = connection_is_refused(upload.server)
    # The request in progress could not have finished before now: it still lacks half its body.
    assert upload.finish().status == 201
    upload.connection.close()
    assert upload.server.process.wait(timeout=GRACE) == 0
    assert refused, "a connection made during the shutdown was neither refused nor closed"


@needs_posix_signals
def test_an_upload_cut_off_by_shutdown_leaves_nothing_behind(deployment):
    # One second of grace, and a socket timeout so long that nothing but the end of the
    # grace can end the stalled upload within the bound below.
    server = deployment.start(MEDITRACK_SHUTDOWN_GRACE="1", MEDITRACK_SOCKET_TIMEOUT="120")
    token, patient = new_patient(server)
    body = multipart(file_part(random_pdf(random.Random(3), 1 * MiB)))
    upload = begin_upload(server, token, patient["id"], body)  # the second half never comes
    # Half a MiB is on its way: wait until the store holds some of it, so there is
    # something for the shutdown to clean up.
    assert until(lambda: deployment.upload_in_progress(server), timeout=10), "the upload never reached the store"

    terminated = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    # The grace, then the cut-off and the exit: PROCESS_EXIT allows for a loaded machine.
    assert server.process.wait(timeout=1 + PROCESS_EXIT) == 0
    assert time.monotonic() - terminated < 1 + PROCESS_EXIT
    assert "cut off" in server.stderr_text()
    assert upload.server_closed(), "the cut-off upload must not be answered"
    upload.close()

    # The writer discarded its bytes itself: nothing is left even before a sweep.
    assert deployment.report_ids_before_sweep() == set()
    store = deployment.open_store()
    try:
        assert store.get_patient(patient["id"])["reports"] == []
        assert store.stored_report_ids() == set()
    finally:
        store.close()
    if deployment.store_kind == "sqlite":
        assert list(deployment.temp_dir.iterdir()) == []


# -- kill -9 in the middle of an account erasure ----------------------------------------------

ERASED_PATIENTS = 50


def erasing_state(deployment: Deployment, user_id: str) -> str | None:
    """The user's row as it lies, read without opening a store (which would finish the
    erasure): "erasing", "active", or None when the row is gone."""
    if deployment.store_kind == "mongodb":
        import pymongo
        from bson import ObjectId
        with pymongo.MongoClient(deployment.mongodb_uri, serverSelectionTimeoutMS=5000) as client:
            user = client.get_default_database()["users"].find_one({"_id": ObjectId(user_id)})
        return None if user is None else "erasing" if user.get("erasing") else "active"
    with closing(sqlite3.connect(f"file:{deployment.data_dir / 'meditrack.sqlite3'}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT erasing FROM users WHERE id = ?", (user_id,)).fetchone()
    return None if row is None else "erasing" if row[0] else "active"


@needs_sigkill
def test_kill_9_during_an_account_erasure_is_finished_by_the_next_start(deployment):
    server = deployment.start()
    client = ApiClient(server.url).register_and_login()
    user_id, username = client.user["id"], client.user["username"]
    for number in range(ERASED_PATIENTS):
        patient = client.post("/patients", json=PATIENT).json()
        body = multipart(file_part(b"%PDF-1.4 report " + str(number).encode()))
        uploaded = client.post(f"/patients/{patient['id']}/reports", data=body, headers={"Content-Type": MULTIPART})
        assert uploaded.status_code == 201, uploaded.text
    assert len(deployment.report_ids_before_sweep()) == ERASED_PATIENTS

    answers = []
    eraser = threading.Thread(target=lambda: answers.append(_erase_quietly(client)), daemon=True)
    eraser.start()
    # The kill comes the moment the account is marked for erasure (its first step,
    # committed), while the patients and files are still being deleted.
    assert until(lambda: erasing_state(deployment, user_id) == "erasing", timeout=30), "the erasure never began"
    os.kill(server.process.pid, signal.SIGKILL)
    assert server.process.wait(timeout=PROCESS_EXIT) == -signal.SIGKILL
    eraser.join(timeout=30)
    # Still marked, and so not finished: the kill came in the middle, as it was meant to
    # (the patients go one short transaction at a time: about 100 ms for 50 of them).
    assert erasing_state(deployment, user_id) == "erasing", "the erasure had finished before the kill"
    assert answers != [204]
    assert deployment.report_ids_before_sweep(), "no report was left to erase at the kill"

    # The next start finishes the erasure before it serves anyone.
    restarted = deployment.start()
    login = ApiClient(restarted.url).post("/auth/login", json={"username": username,
                                                                "password": "correct horse battery"})
    assert login.status_code == 401
    assert erasing_state(deployment, user_id) is None
    store = deployment.open_store()
    try:
        assert store.list_patients(user_id, limit=ERASED_PATIENTS + 1) == []
        assert store.list_sessions(user_id) == []
        assert store.stored_report_ids() == set()
    finally:
        store.close()


def _erase_quietly(client: ApiClient):
    """DELETE /auth/me; the status, or the failure a killed server causes."""
    try:
        return client.delete("/auth/me", json={"password": "correct horse battery"}).status_code
    except requests.RequestException as exc:
        return type(exc).__name__
