"""MongoDB goes away and comes back: clients get 503s meanwhile, and service resumes by
itself, without restarting MediTrack.

Runs under `make test-mongo`, which builds FerretDB and says how to start one like its
own (tests/ferretdb.py `own_ferretdb`): this test starts a FerretDB of its own so it can
stop it.
"""

import time

import pytest

from tests.conftest import LiveServer
from tests.ferretdb import own_ferretdb
from tests.support.api import ApiClient
from tests.support.problems import assert_problem
from tests.support.records import PATIENT

FAST_ANSWER = 10.0   # seconds: "a few seconds, never a hang" (server selection waits 3 s)
RECOVERY = 60.0      # seconds the driver may take to find the server again


@pytest.fixture
def outage(tmp_path):
    """A FerretDB of this test's own (so it can stop it) and a server on it, with one user
    and one patient: (ferretdb, server, client, patient)."""
    ferretdb = own_ferretdb(tmp_path / "ferretdb").start()
    server = LiveServer(tmp_path / "data", "mongodb", mongodb_uri=ferretdb.uri + "outage")
    try:
        client = ApiClient(server.url).register_and_login()
        yield ferretdb, server, client, client.post("/patients", json=PATIENT).json()
    finally:
        server.stop()
        ferretdb.stop()


def test_an_outage_gives_503s_and_service_resumes_without_a_restart(outage):
    ferretdb, server, client, patient = outage
    ferretdb.stop()

    for method, path, options in [("GET", "/health", {}), ("GET", f"/patients/{patient['id']}", {}),
                                  ("POST", "/patients", {"json": PATIENT}),
                                  ("POST", "/auth/login", {"json": {"username": "x" * 8, "password": "y" * 8}})]:
        started = time.monotonic()
        details = assert_problem(client.request(method, path, timeout=30, **options), 503)
        assert time.monotonic() - started < FAST_ANSWER, f"{method} {path} took too long"
        assert "pymongo" not in details["detail"] and "Traceback" not in details["detail"]

    ferretdb.start()  # same port, same data
    deadline = time.monotonic() + RECOVERY
    while client.get("/health", timeout=30).status_code != 200:  # each try waits ≤ 3 s itself
        assert time.monotonic() < deadline, "the service did not resume after MongoDB came back"
    assert client.get(f"/patients/{patient['id']}").json() == patient
    assert client.post("/patients", json=PATIENT).status_code == 201


def test_audit_events_of_an_outage_are_recorded_once_it_is_back_and_none_twice(outage):
    ferretdb, server, client, patient = outage
    ferretdb.stop()
    # Requests are still answered (503: the record itself is out of reach), and each
    # leaves an event that waits in the writer's queue.
    during = [client.get(f"/patients/{patient['id']}", timeout=30) for _ in range(3)]
    assert all(response.status_code == 503 for response in during)
    assert client.get("/health", timeout=30).status_code == 503
    assert server.audit_writer.backlog >= 3

    ferretdb.start()
    assert server.audit_writer.flush(timeout=RECOVERY), "the queued events were not committed"
    assert server.audit_writer.dropped == 0
    stored = [event["requestId"] for chain in server.store.audit_chain_ids()
              for event in server.store.audit_events(chain)]
    for response in during:
        assert stored.count(response.headers["X-Request-Id"]) == 1
    assert len(stored) == len(set(stored))
