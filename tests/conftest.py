"""Shared fixtures: a live MediTrack server on a free port, and clients that log in to it.

The server runs in this process, in a background thread, on 127.0.0.1 with an
ephemeral port, a temporary data directory and bcrypt at its minimum cost (4) so the
suite stays fast. Tests talk to it over real HTTP with `requests` or raw sockets.

Every server-backed test runs once per store: the embedded SQLite store always, and
MongoDB too when MEDITRACK_TEST_MONGODB_URI names a server (`make test-mongo` starts
one). Each MongoDB-backed server gets a database of its own, dropped afterwards.
"""

import itertools
import os
import secrets
import threading
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

import meditrack
from storage import open_store

# The outage test needs a FerretDB binary it can stop and start; only `make test-mongo`
# provides one, so only then is that file collected (the SQLite suite has no MongoDB).
collect_ignore = [] if os.environ.get("MEDITRACK_FERRETDB_BIN") else ["test_mongo_outage.py"]

TEST_SECRET = b"test-secret-that-is-at-least-32-bytes-long"
MONGODB_URI = os.environ.get("MEDITRACK_TEST_MONGODB_URI")
STORES = ["sqlite", "mongodb"] if MONGODB_URI else ["sqlite"]
_usernames = itertools.count()


def fresh_mongodb_uri() -> str:
    """MEDITRACK_TEST_MONGODB_URI with a new database name of its own as the path."""
    parts = urlsplit(MONGODB_URI)
    return urlunsplit(parts._replace(path=f"/meditrack_test_{secrets.token_hex(6)}"))


def drop_mongodb_database(uri: str) -> None:
    import pymongo
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        client.drop_database(client.get_default_database())


class FakeClock:
    """A clock that moves only when a test says so: `advance(seconds)`, or set `now`.
    Safe to read and advance from many threads (the concurrency tests do)."""

    def __init__(self, start: float = 1000.0):
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    @property
    def now(self) -> float:
        return self()

    @now.setter
    def now(self, value: float) -> None:
        with self._lock:
            self._now = value

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class LiveServer:
    """A running server: its base URL, settings and store, and a way to stop it."""

    def __init__(self, data_dir, store_kind: str = "sqlite", **overrides):
        base = meditrack.Settings(port=0, data_dir=data_dir, bcrypt_rounds=4, jwt_secret=TEST_SECRET,
                                  rate_limit=None, auth_rate_limit=None, socket_timeout=5,
                                  refusal_delay=0)  # 429s at once: the delay has its own test
        if store_kind == "mongodb":
            overrides.setdefault("mongodb_uri", fresh_mongodb_uri())
        self.settings = replace(base, **overrides)
        self.store = open_store(self.settings.data_dir, self.settings.mongodb_uri)
        self.server = meditrack.make_server(self.settings, self.store)
        self.host, self.port = self.server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.store.close()
        if self.settings.mongodb_uri:
            drop_mongodb_database(self.settings.mongodb_uri)


class ApiClient:
    """A requests.Session bound to one server, optionally logged in as one user."""

    def __init__(self, url: str):
        self.url = url
        self.session = requests.Session()
        self.user = None

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.url + path, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def put(self, path, **kwargs):
        return self.request("PUT", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def register_and_login(self, username: str | None = None, password: str = "correct horse battery"):
        username = username or f"user{next(_usernames)}"
        registered = self.post("/auth/register", json={"username": username, "password": password})
        assert registered.status_code == 201, registered.text
        login = self.post("/auth/login", json={"username": username, "password": password})
        assert login.status_code == 200, login.text
        self.session.headers["Authorization"] = f"Bearer {login.json()['accessToken']}"
        self.user = registered.json()
        return self


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
        server = LiveServer(tmp_path / f"data{len(started)}", store_kind, **overrides)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


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


PATIENT = {"firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1815-12-10"}


@pytest.fixture
def patient(client) -> dict:
    response = client.post("/patients", json=PATIENT)
    assert response.status_code == 201, response.text
    return response.json()
