"""`--workers 2` as real processes (web/workers/prefork.py), on each store: both workers serve;
a killed one is replaced within 2 s and no acknowledged write is lost; SIGHUP replaces
them all without a failed request; SIGTERM drains uploads in flight on both and exits
0, and stops idle workers at once; both write at once with ids and audit chains of
their own; what one worker ends (a session, a password, an account) the other honours
at once, the login back-off counts failures on both, and a client gets its rate limit
once across them.

Which worker answered is read from outside: every log line names its process, and
tests/support/workers.py finds the worker that accepted a connection in /proc, so a
request can be sent to the worker a test chooses. No header in the API says it."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from bench.processes import ROOT
from tests.support.api import ApiClient
from tests.support.deployment import PROCESS_EXIT, Deployment, until
from tests.support.platforms import needs_fork, needs_proc, require_proc
from tests.support.uploads import file_part, multipart
from tests.support.records import PATIENT
from tests.support.workers import request_on_worker, worker_of
from tests.test_audit_faults import verify_audit
from tests.test_faults import begin_upload

pytestmark = [needs_fork, needs_proc]

ACCESS_LINE = re.compile(r"\[(\d+)\] meditrack\.access ")
REPLACED_WITHIN = 2.0   # seconds, the bound for a killed worker's successor to serve
REQUESTS = 60


@pytest.fixture
def deployment(tmp_path, store_kind):
    deployment = Deployment(tmp_path / "data", store_kind)
    yield deployment
    deployment.clean_up()


def start_workers(deployment: Deployment, **env):
    return deployment.start(MEDITRACK_WORKERS="2", **env)


def serving_pids(server) -> set[int]:
    return {int(found[1]) for line in list(server.log) if (found := ACCESS_LINE.search(line))}


def started_workers(server) -> list[int]:
    return [int(found[1]) for line in list(server.log) if (found := re.search(r"worker (\d+) started", line))]


def ready_workers(server) -> list[int]:
    """Workers that have opened their store and serve (web/workers/prefork.py logs it)."""
    return [int(found[1]) for line in list(server.log) if (found := re.search(r"worker (\d+) ready", line))]


def test_both_workers_serve_under_load(deployment):
    # NOTE: the kernel gives each connection to whichever worker accepts first: one
    # still opening its store takes none, and one at a time the worker that has just
    # answered often takes the next. Concurrent clients, as real load is, reach both.
    server = start_workers(deployment)
    assert until(lambda: len(ready_workers(server)) == 2, timeout=15)

    def client(_):  # a connection per request, as many short-lived clients make
        return [requests.get(server.url + "/health", timeout=5).status_code for _ in range(REQUESTS // 6)]

    with ThreadPoolExecutor(6) as pool:
        statuses = [status for answers in pool.map(client, range(6)) for status in answers]
    assert set(statuses) == {200}
    assert until(lambda: len(serving_pids(server)) == 2, timeout=5), serving_pids(server)
    assert serving_pids(server) <= set(started_workers(server))


def test_a_killed_worker_is_replaced_within_2_s_and_no_acknowledged_write_is_lost(deployment):
    server = start_workers(deployment)
    assert until(lambda: len(ready_workers(server)) == 2, timeout=15)
    client = ApiClient(server.url).register_and_login()
    headers = dict(client.session.headers)
    acknowledged, stop = [], threading.Event()

    def write():  # a connection per create, so creates land on both workers
        while not stop.is_set():
            try:
                response = requests.post(server.url + "/patients", json=PATIENT, headers=headers, timeout=10)
            except requests.RequestException:
                continue  # cut off by the kill: not acknowledged, so not counted
            if response.status_code == 201:
                acknowledged.append(response.json()["id"])

    writers = [threading.Thread(target=write) for _ in range(3)]
    for writer in writers:
        writer.start()
    try:
        assert until(lambda: len(acknowledged) >= 20, timeout=15)
        victim = started_workers(server)[0]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        successor = None
        while successor is None and time.monotonic() - killed < REPLACED_WITHIN:
            assert requests.get(server.url + "/health", timeout=5).status_code == 200  # the other one serves meanwhile
            newcomers = set(started_workers(server)[2:]) & serving_pids(server)
            successor = next(iter(newcomers), None)
        assert successor is not None, "no new worker served within 2 s of the kill"
        assert victim not in started_workers(server)[2:]
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=30)
    missing = [patient_id for patient_id in acknowledged if client.get(f"/patients/{patient_id}").status_code != 200]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged creates are gone"


def test_sighup_replaces_every_worker_without_a_failed_request(deployment):
    server = start_workers(deployment)
    assert until(lambda: len(ready_workers(server)) == 2, timeout=15)
    first = set(started_workers(server))
    failures, answered, stop = [], [], threading.Event()

    def load():
        session = requests.Session()
        # RFC 9112 §9.3.1: a request on a kept connection the server closed as it sent it
        # may be retried, if idempotent: what every browser and client library does.
        # connect=0: a refused connection is not retried, it is a failure.
        session.mount("http://", HTTPAdapter(max_retries=Retry(total=2, connect=0, allowed_methods={"GET"})))
        while not stop.is_set():
            try:
                answered.append(session.get(server.url + "/health", timeout=10).status_code)
            except requests.RequestException as exc:
                failures.append(repr(exc))

    clients = [threading.Thread(target=load) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        server.process.send_signal(signal.SIGHUP)
        assert until(lambda: len(started_workers(server)) == 4 and not first & serving_now(server), timeout=30), \
            (started_workers(server), serving_now(server), server.stderr_text()[-2000:])
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=15)
    assert failures == [] and set(answered) == {200}, (failures[:3], Counter(answered), server.stderr_text()[-2000:])


def serving_now(server) -> set[int]:
    """The workers that answered the last few requests."""
    recent = [found for line in list(server.log)[-20:] if (found := ACCESS_LINE.search(line))]
    return {int(found[1]) for found in recent}


def uploads_in_flight(server, each: int, size: int) -> tuple[ApiClient, dict, bytes, list]:
    """Uploads half sent, and being read by their worker (100 Continue), until each of
    the two workers is reading `each` of them: the client, the patient, the body, and
    the connections."""
    workers = two_ready_workers(server)
    client = ApiClient(server.url).register_and_login()
    token = client.session.headers["Authorization"].removeprefix("Bearer ")
    patient = client.post("/patients", json=PATIENT).json()
    body = multipart(file_part(b"%PDF-1.4 " + os.urandom(size)))
    uploads, per_worker = [], Counter()
    while min(per_worker[pid] for pid in workers) < each:
        assert len(uploads) < 24, per_worker
        uploads.append(begin_upload(server, token, patient["id"], body))
        per_worker[worker_of(server, uploads[-1], workers)] += 1
    return client, patient, body, uploads


def test_sigterm_lets_uploads_in_flight_on_both_workers_finish_and_exits_0(deployment):
    server = start_workers(deployment, MEDITRACK_SHUTDOWN_GRACE="30")
    client, patient, body, uploads = uploads_in_flight(server, each=2, size=512 * 1024)
    server.process.send_signal(signal.SIGTERM)
    statuses = []
    for connection in uploads:
        connection.send(body[len(body) // 2:])
        statuses.append(connection.read_response().status)
        connection.close()
    assert statuses == [201] * len(uploads), statuses
    assert server.process.wait(timeout=PROCESS_EXIT + 30) == 0
    # Every acknowledged upload is there for the next server.
    again = ApiClient(deployment.start().url)
    again.session.headers.update(client.session.headers)
    assert len(again.get(f"/patients/{patient['id']}").json()["reports"]) == len(uploads)


def running(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie waiting to be reaped has)."""
    require_proc()
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_workers_drain_and_exit_when_their_supervisor_is_killed(deployment):
    server = start_workers(deployment)
    assert until(lambda: len(ready_workers(server)) == 2, timeout=15)
    workers = ready_workers(server)
    server.process.kill()  # kill -9: the supervisor stops no one
    server.process.wait(timeout=PROCESS_EXIT)
    # Each notices within ORPHAN_CHECK (0.25 s) and, idle, drains at once; the margin
    # is for a busy machine.
    assert until(lambda: not any(running(pid) for pid in workers), timeout=2.0), \
        [pid for pid in workers if running(pid)]
    with pytest.raises(requests.ConnectionError):  # no one serves the port any more
        requests.get(server.url + "/health", timeout=2)


def can_bind(port: int) -> bool:
    """Whether a new server could listen on this port now: nothing else listens on it."""
    try:
        socket.create_server(("127.0.0.1", port)).close()  # SO_REUSEADDR, as a server sets it
    except OSError:
        return False
    return True


def test_when_the_supervisor_is_killed_busy_workers_free_the_port_at_once_then_finish(deployment):
    server = start_workers(deployment, MEDITRACK_SHUTDOWN_GRACE="30")
    workers = two_ready_workers(server)
    _, _, body, uploads = uploads_in_flight(server, each=1, size=256 * 1024)  # each worker mid-upload
    server.process.kill()  # kill -9: the supervisor stops no one
    server.process.wait(timeout=PROCESS_EXIT)
    # Each worker notices within ORPHAN_CHECK (0.25 s) and stops listening before it
    # drains: a new server can take the port while the uploads still run.
    assert until(lambda: can_bind(server.port), timeout=2.0), "the port is still taken"
    statuses = []
    for connection in uploads:
        connection.send(body[len(body) // 2:])
        statuses.append(connection.read_response().status)
        connection.close()
    assert statuses == [201] * len(uploads)
    assert until(lambda: not any(running(pid) for pid in workers), timeout=PROCESS_EXIT)


def test_sigterm_stops_idle_workers_at_once(deployment):
    # A connection wakes every idle worker and one accepts it. Once a worker lost that
    # race while blocked in accept() and never heard the SIGTERM: it was killed when
    # the grace period ran out (web/workers/prefork.py: the socket is non-blocking now).
    server = start_workers(deployment, MEDITRACK_SHUTDOWN_GRACE="60")
    two_ready_workers(server)
    for _ in range(10):
        assert requests.get(server.url + "/health", timeout=5).status_code == 200
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=PROCESS_EXIT) == 0  # long before 60 s
    assert not any("did not stop in time" in line for line in list(server.log))


def two_ready_workers(server) -> list[int]:
    assert until(lambda: len(ready_workers(server)) == 2, timeout=15), server.stderr_text()[-2000:]
    return ready_workers(server)


def test_both_workers_write_at_once_each_with_its_own_ids_and_audit_chain(deployment):
    # Forked from one parent, the workers must still make ids of their own: with the
    # parent's copy of storage/ids.py's random bytes, creates at the same second on
    # both collided (409), and both workers wrote one audit chain with one id.
    server = start_workers(deployment)
    workers = two_ready_workers(server)
    client = ApiClient(server.url).register_and_login()
    token = client.session.headers["Authorization"].removeprefix("Bearer ")

    def create_on(pid):
        return [request_on_worker(server, pid, workers, "POST", "/patients", token=token, body=PATIENT).status
                for _ in range(15)]

    with ThreadPoolExecutor(2) as pool:
        statuses = [status for answers in pool.map(create_on, workers) for status in answers]
    assert statuses == [201] * 30
    assert len(client.get("/patients?limit=100").json()["items"]) == 30
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=PROCESS_EXIT) == 0
    verified = verify_audit(deployment)
    assert verified.returncode == 0, verified.stderr
    assert "in 2 chains" in verified.stdout, verified.stdout


# -- what one worker ends, the other honours at once ------------------------------------

USERNAME, PASSWORD = "worker-tester", "correct horse battery"


def login_pair(server, username=USERNAME, password=PASSWORD) -> dict:
    response = ApiClient(server.url).post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def two_workers(deployment):
    """A server with two ready workers, their pids, and a registered USERNAME."""
    server = start_workers(deployment)
    workers = two_ready_workers(server)
    assert ApiClient(server.url).post("/auth/register", json={"username": USERNAME, "password": PASSWORD}) \
        .status_code == 201
    return server, workers


def test_a_logout_on_one_worker_is_honoured_by_the_other_at_once(two_workers):
    server, (first, second) = two_workers
    token = login_pair(server)["accessToken"]
    assert request_on_worker(server, second, (first, second), "GET", "/auth/me", token=token).status == 200
    assert request_on_worker(server, first, (first, second), "POST", "/auth/logout", token=token).status == 204
    assert request_on_worker(server, second, (first, second), "GET", "/auth/me", token=token).status == 401


def test_a_password_change_on_one_worker_ends_the_other_sessions_on_the_other(two_workers):
    server, (first, second) = two_workers
    kept, ended = login_pair(server)["accessToken"], login_pair(server)["accessToken"]
    assert request_on_worker(server, second, (first, second), "GET", "/auth/me", token=ended).status == 200
    change = {"currentPassword": PASSWORD, "newPassword": "tr0ub4dor & 3 staples"}
    assert request_on_worker(server, first, (first, second), "PUT", "/auth/password", token=kept,
                             body=change).status in (200, 204)
    assert request_on_worker(server, second, (first, second), "GET", "/auth/me", token=ended).status == 401
    assert request_on_worker(server, second, (first, second), "GET", "/auth/me", token=kept).status == 200
    login = {"username": USERNAME, "password": PASSWORD}
    assert request_on_worker(server, second, (first, second), "POST", "/auth/login", body=login).status == 401


def test_an_erasure_on_one_worker_is_honoured_by_the_other_at_once(two_workers):
    server, (first, second) = two_workers
    token = login_pair(server)["accessToken"]
    assert request_on_worker(server, first, (first, second), "DELETE", "/auth/me", token=token,
                             body={"password": PASSWORD}).status == 204
    assert request_on_worker(server, second, (first, second), "GET", "/auth/me", token=token).status == 401
    login = {"username": USERNAME, "password": PASSWORD}
    assert request_on_worker(server, second, (first, second), "POST", "/auth/login", body=login).status == 401


def test_the_login_back_off_counts_failures_on_both_workers_together(two_workers):
    # Five failures are free (handlers/backoff.py), then the name is locked for 1 s, 2 s ...
    # Counted per worker, alternating would give ten free failures, and the first 429
    # would be the eleventh attempt; counted together, it is the sixth (or a little
    # later, if a slow machine let the 1 s and 2 s locks run out before the next try).
    server, workers = two_workers
    wrong = {"username": USERNAME, "password": "not the password"}
    statuses = []
    while 429 not in statuses and len(statuses) < 12:
        statuses.append(request_on_worker(server, workers[len(statuses) % 2], workers, "POST", "/auth/login",
                                          body=wrong).status)
    assert statuses[:5] == [401] * 5 and statuses[-1] == 429 and len(statuses) <= 8, statuses


def test_a_client_gets_its_rate_limit_across_both_workers(deployment):
    # 30 requests an hour (so no token comes back during the test): with a bucket per
    # worker the client would get 60 before a 429.
    server = start_workers(deployment, MEDITRACK_RATE_LIMIT="30/3600", MEDITRACK_REFUSAL_DELAY="0")
    assert until(lambda: len(ready_workers(server)) == 2, timeout=15)

    def client(_):  # a connection per request: the connections land on both workers
        return [requests.get(server.url + "/health", timeout=5).status_code for _ in range(15)]

    with ThreadPoolExecutor(6) as pool:
        statuses = [status for answers in pool.map(client, range(6)) for status in answers]
    allowed = statuses.count(200)
    assert 27 <= allowed <= 33, (allowed, statuses.count(429))  # the issue's ±10 %
    assert until(lambda: len(serving_pids(server)) == 2, timeout=5)  # and both workers answered


def test_with_workers_a_store_that_cannot_open_stops_start_up_with_status_1(tmp_path):
    # The parent opens the store once before it forks: the same answer as one process
    # gives, not workers dying one after another.
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    started = subprocess.run([sys.executable, "meditrack.py", "--workers", "2", "--port", "0",
                              "--data-dir", str(not_a_directory)], cwd=ROOT, capture_output=True, text=True,
                             timeout=PROCESS_EXIT)
    assert started.returncode == 1, started.stderr
    assert "meditrack: cannot start" in started.stderr and "worker" not in started.stderr
