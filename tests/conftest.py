"""Shared fixtures: a live MediTrack server on a free port, and clients that log in to it.

The server runs in this process, in a background thread, on 127.0.0.1 with an
ephemeral port, a temporary data directory and bcrypt at its minimum cost (4) so the
suite stays fast. Tests talk to it over real HTTP with `requests` or raw sockets.

Every server-backed test runs once per store: the embedded SQLite store always, and
MongoDB too when MEDITRACK_TEST_MONGODB_URI names a server (`make test-mongo` starts
one). Each MongoDB-backed server gets a database of its own, dropped afterwards.
"""

import os
import threading
import time
from dataclasses import replace

import pytest

import meditrack
from settings import Settings
from storage.base import Store
from tests.support.api import TEST_SECRET, ApiClient
from tests.support import leftovers
from tests.support.clock import FakeClock
from tests.support.mongodb import MONGODB_URI, drop_mongodb_database, fresh_mongodb_uri
from tests.support.objects import object_store_settings
from tests.support.records import PATIENT
from tests.support.stores import START, open_test_store

# The outage test needs a FerretDB binary it can stop and start; only `make test-mongo`
# provides one, so only then is that file collected (the SQLite suite has no MongoDB).
collect_ignore = [] if os.environ.get("MEDITRACK_FERRETDB_BIN") else ["test_mongo_outage.py",
                                                                "test_ferretdb_harness.py"]
if not MONGODB_URI:
    collect_ignore.append("test_mongo_store.py")  # the MongoDB store's own internals
if not os.environ.get("MEDITRACK_CHROMEDRIVER"):
    collect_ignore.append("browser")  # headless Chromium: `make test-browser` installs it
if not os.environ.get("MEDITRACK_TEST_S3_ENDPOINT"):
    collect_ignore.append("test_s3.py")  # an S3-compatible server: `make test-s3` starts one
if not os.environ.get("MEDITRACK_FHIR_VALIDATOR"):
    collect_ignore.append("test_fhir_validation.py")  # HL7's validator: `make test-fhir` fetches it

STORES = ["sqlite", "mongodb"] if MONGODB_URI else ["sqlite"]


def pytest_sessionstart(session):
    leftovers.mark_this_run()  # before any test starts a process: each inherits the mark


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if a process it started still runs, or a socket of its own still
    listens: a test that starts something must stop it, whatever happens."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not leftovers.can_look():
        reporter.write_line("leftovers: not checked (no /proc on this system)")
        return
    found = leftovers.left_behind(leftovers.this_run())
    if found:
        reporter.ensure_newline()
        reporter.write_sep("=", "left behind by the tests (now killed)", red=True)
    for line in found:
        reporter.write_line(line, red=True)
    if found:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


class LiveServer:
    """A running server: its base URL, settings and store, and a way to stop it."""

    def __init__(self, data_dir, store_kind: str = "sqlite", *, clock=time.time, keep_database: bool = False,
                 **overrides):
        base = Settings(port=0, data_dir=data_dir, bcrypt_rounds=4, jwt_secret=TEST_SECRET,
                        rate_limit=None, auth_rate_limit=None, socket_timeout=5,
                        refusal_delay=0)  # 429s at once: the delay has its own test
        if store_kind == "mongodb":
            overrides.setdefault("mongodb_uri", fresh_mongodb_uri())
        if "s3_endpoint" not in overrides:
            overrides.update(object_store_settings())  # under `make test-s3`: report bytes in a bucket
        self.settings = replace(base, **overrides)
        # `clock`: the time the handlers and the store see (a FakeClock moves it by hand);
        # `keep_database`: a second server on the same MongoDB database leaves it to the first.
        self.keep_database = keep_database
        self.store = meditrack.open_configured_store(self.settings, clock=clock)
        self.audit_writer = meditrack.open_audit_writer(self.settings, self.store, clock=clock)
        self.server = meditrack.make_server(self.settings, self.store, self.audit_writer, clock=clock)
        self.host, self.port = self.server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.audit_writer.close()
        self.store.close()
        if self.settings.mongodb_uri and not self.keep_database:
            drop_mongodb_database(self.settings.mongodb_uri)


@pytest.fixture(scope="session", params=STORES)
def store_kind(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, store_kind):
    server = LiveServer(tmp_path_factory.mktemp("data"), store_kind)
    yield server
    server.stop()


@pytest.fixture
def start_server(tmp_path, store_kind):
    """Start a server with its own settings (e.g. a rate limit) for one test."""
    started = []

    def start(**overrides) -> LiveServer:
        data_dir = overrides.pop("data_dir", tmp_path / f"data{len(started)}")
        server = LiveServer(data_dir, store_kind, **overrides)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def clock() -> FakeClock:
    """The time a `store` sees; tests move it by hand."""
    return FakeClock(START)


@pytest.fixture
def store(store_kind, tmp_path, clock) -> Store:
    """A fresh store of the kind under test, on `clock`, for tests of the Store interface."""
    store = open_test_store(store_kind, tmp_path, clock)
    yield store
    store.close()
    if store_kind == "mongodb":
        drop_mongodb_database(store.uri)


@pytest.fixture
def anonymous(live_server) -> ApiClient:
    return ApiClient(live_server.url)


@pytest.fixture
def client(live_server) -> ApiClient:
    """A client logged in as a fresh user."""
    return ApiClient(live_server.url).register_and_login()


@pytest.fixture
def other_client(live_server) -> ApiClient:
    """A second user, to prove that users cannot see each other's records."""
    return ApiClient(live_server.url).register_and_login()


@pytest.fixture
def patient(client) -> dict:
    response = client.post("/patients", json=PATIENT)
    assert response.status_code == 201, response.text
    return response.json()
