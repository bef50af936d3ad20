"""Talking to a running MediTrack the way a client does: `ApiClient`, and `TEST_SECRET`.

`ApiClient` is a `requests.Session` bound to one server's base URL, optionally logged
in as a user of its own. `TEST_SECRET` is the JWT key every server the tests start
signs with (`LiveServer` in conftest, the processes in test_faults), so a test can
forge a token or check one.
"""

import itertools

import requests

TEST_SECRET = b"test-secret-that-is-at-least-32-bytes-long"
_usernames = itertools.count()


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
