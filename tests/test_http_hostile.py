"""Hostile clients against live servers: each gets a clear 4xx (or is hung up on), and
the server goes on serving everyone else.

What a public server meets sooner or later: a flood of connections that never send a
byte, a "slowloris" that sends its request head a byte at a time, method-override
headers, JSON built to break parsers, user names that look like someone else's,
password guessing, and the hope that an error or a log line will leak something.

Raw sockets (`RawConnection`, tests/support/raw_http.py) show what `requests` would
hide; every socket has a timeout. Only the slow-drip tests pace themselves in real
time, because pacing is what they are about; every other wait is for something the
server does, and is bounded by a timeout generous enough for a loaded machine (see
"time" below).
"""

import json
import logging
import re
import secrets
import select
import socket
import threading
import time

import pytest

from settings import Settings
from tests.support.api import ApiClient
from tests.support.defaults import default_of
from tests.support.problems import assert_problem
from tests.support.raw_http import RawConnection, assert_still_serving, exchange, http_request
from tests.support.records import PATIENT
from tests.support.uploads import MULTIPART, PDF, file_part, multipart, part
from handlers.backoff import FailureBackoff

PASSWORD = "correct horse battery"
JSON = {"Content-Type": "application/json"}
DEFAULT_MAX_JSON_BYTES = default_of(Settings, "max_json_bytes")


def fresh_username(prefix: str = "hostile") -> str:
    """A name no other test uses: the session server keeps every account and lock."""
    return f"{prefix}{secrets.token_hex(4)}"


def register(server, username: str, password: str = PASSWORD):
    return ApiClient(server.url).post("/auth/register", json={"username": username, "password": password})


def login(server, username: str, password: str = PASSWORD):
    return ApiClient(server.url).post("/auth/login", json={"username": username, "password": password})


def retry_after_seconds(value: str | None) -> int:
    # RFC 9110 §10.2.3: delay-seconds is a non-negative decimal integer.
    assert value is not None and value.isascii() and value.isdigit(), value
    return int(value)


# -- time ---------------------------------------------------------------------------------
#
# The server ends silent and slow clients on its own timers: a request head must arrive
# within header_timeout, a body by its deadline, and a housekeeping pass checks both
# about twice a second. Those timers run on the server's real clock (make_server takes
# no clock from a test), so the tests below measure real time. Each bound is generous,
# PROMPTLY, so that a loaded CI machine that runs a pass or a thread late does not fail
# a test; a bound still proves something because nothing else could end a connection
# (or free its place) that soon: these servers' other timeouts are LONG_TIMEOUT, and
# were a server to ignore the header_timeout it is given, Settings' default (10 s) is
# beyond PROMPTLY too.

HEADER_TIMEOUT = 1    # seconds: the header_timeout of the servers that test it
LONG_TIMEOUT = 30     # seconds: every other timeout of these servers, far beyond PROMPTLY
PROMPTLY = 8.0        # seconds: the bound on what should take HEADER_TIMEOUT and a pass, or less


# -- the connection cap -------------------------------------------------------------------

CAP = 4


def capped_server(start_server, **settings):
    """A server with CAP places, none of which any timer of its own frees within PROMPTLY."""
    return start_server(**{"max_connections": CAP, "socket_timeout": LONG_TIMEOUT,
                           "header_timeout": LONG_TIMEOUT, **settings})


def open_idle(server, count: int, timeout: float = PROMPTLY) -> list[socket.socket]:
    """TCP connections that never send a byte."""
    return [socket.create_connection((server.host, server.port), timeout=timeout) for _ in range(count)]


def close_and_wait_for_release(sock: socket.socket) -> None:
    """Close as a client does, by sending FIN. The server, reading end of stream,
    releases the connection's place and only then closes its own side; so once this
    socket reads end of stream the place is free, with no retry loop or sleep."""
    sock.shutdown(socket.SHUT_WR)
    assert sock.recv(1) == b""                  # bounded by the socket's timeout
    sock.close()


def served_and_released(server) -> int:
    """One request that closes its connection, waiting until its place is released."""
    with RawConnection(server, timeout=PROMPTLY) as connection:
        response = connection.request(http_request("GET", "/health", headers={"Connection": "close"}))
        assert connection.server_closed()
    return response.status


def refused_on_connect(server, timeout: float = PROMPTLY):
    """Connect, send nothing, and read what the server says (a refusal comes unasked)."""
    with RawConnection(server, timeout) as connection:
        response = connection.read_response()
        assert connection.server_closed()
    return response


def test_a_connection_over_the_cap_gets_a_quick_503_with_retry_after_and_close(start_server):
    server = capped_server(start_server)
    idle = open_idle(server, CAP)
    try:
        started = time.monotonic()
        response = refused_on_connect(server)
        # Within PROMPTLY, while no place can have come free: the 503 was sent at once,
        # without waiting for a request or a place.
        assert time.monotonic() - started < PROMPTLY
        assert_problem(response, 503)
        assert retry_after_seconds(response.header("Retry-After")) >= 1
        assert response.header("Connection") == "close"
        assert response.header("X-Content-Type-Options") == "nosniff"
    finally:
        for sock in idle:
            sock.close()


def test_closing_an_idle_connection_frees_its_place_for_a_new_one(start_server):
    server = capped_server(start_server)
    idle = open_idle(server, CAP)
    try:
        assert_problem(refused_on_connect(server), 503)
        close_and_wait_for_release(idle[-1])   # closing it again in `finally` is harmless
        assert served_and_released(server) == 200
        # ...and the place is taken again by the next idle client.
        idle.append(open_idle(server, 1)[0])
        assert_problem(refused_on_connect(server), 503)
    finally:
        for sock in idle:
            sock.close()


def test_refusing_fifty_connections_over_the_cap_starts_no_threads(start_server):
    server = capped_server(start_server)
    threads_before = threading.active_count()
    idle = open_idle(server, CAP)
    flood = []
    try:
        assert_problem(refused_on_connect(server), 503)  # so the four have their threads
        flood = open_idle(server, 50)
        for sock in flood:
            connection_file = sock.makefile("rb")
            status_line = connection_file.readline(1024)  # the 503 comes without a request
            connection_file.close()
            assert status_line.startswith(b"HTTP/1.1 503 "), status_line
        # The flood is still connected, and still costs the server no thread.
        assert threading.active_count() <= threads_before + CAP
        for sock in flood:
            sock.close()
        # Refusals never took a place: closing the four idle connections gives them all back.
        for sock in idle:
            close_and_wait_for_release(sock)
        assert_still_serving(server)
    finally:
        for sock in idle + flood:
            sock.close()


# -- slow clients -------------------------------------------------------------------

DRIP_INTERVAL = 0.2                                # seconds between a slow client's bytes
DRIP_BYTES = int(PROMPTLY / DRIP_INTERVAL) + 10    # enough to drip for longer than PROMPTLY
SLOW_REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-Drip: " + b"a" * DRIP_BYTES


def disconnected(sock: socket.socket) -> bool:
    """Read what the server sent: end of stream or a reset means it hung up."""
    try:
        data = sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return True
    if data == b"":
        return True
    # Anything the server says before hanging up must be a refusal, and then the end.
    assert re.match(rb"HTTP/1\.1 4\d\d ", data), data[:100]
    return True


@pytest.mark.parametrize("sent_at_once", [0, len(b"GET /health HTTP/1.1\r\n")],
                         ids=["drip from the request line", "drip after the request line"])
def test_a_slowloris_head_is_cut_off_after_header_timeout_while_others_are_served(start_server,
                                                                                  sent_at_once):
    server = start_server(header_timeout=HEADER_TIMEOUT, socket_timeout=LONG_TIMEOUT)
    sock = socket.create_connection((server.host, server.port), timeout=PROMPTLY)
    try:
        sock.sendall(SLOW_REQUEST[:sent_at_once])
        started, sent, hung_up = time.monotonic(), 0, False
        for byte in SLOW_REQUEST[sent_at_once:sent_at_once + DRIP_BYTES]:   # longer than PROMPTLY
            # Real-time pacing, on purpose: the client must be slow to be a slowloris.
            # select waits DRIP_INTERVAL between bytes, and wakes early if the server hangs up.
            readable, _, _ = select.select([sock], [], [], DRIP_INTERVAL)
            if readable:
                hung_up = disconnected(sock)
                break
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                hung_up = True
                break
            sent += 1
            if sent == 3:
                # Meanwhile, an ordinary client is served at once.
                assert exchange(server, http_request("GET", "/health"), timeout=PROMPTLY).status == 200
        elapsed = time.monotonic() - started
        assert hung_up, f"the server still listened after {sent} bytes and {elapsed:.1f} s"
        assert sent < DRIP_BYTES
        # HEADER_TIMEOUT and a housekeeping pass, with room for a loaded machine. A byte
        # every DRIP_INTERVAL keeps the socket timeout from ever firing, so only the
        # header timeout can have ended the connection.
        assert elapsed < PROMPTLY
    finally:
        sock.close()
    assert_still_serving(server)


def test_a_slow_post_body_is_cut_off_when_it_falls_behind_the_minimum_rate(start_server):
    # HEADER_TIMEOUT of grace plus 2000 bytes at 1000 bytes/s: the body must be in within 3 s.
    server = start_server(header_timeout=HEADER_TIMEOUT, min_body_rate=1000, socket_timeout=LONG_TIMEOUT)
    client = ApiClient(server.url).register_and_login()
    head = http_request("POST", "/patients", headers={
        "Authorization": client.session.headers["Authorization"], "Content-Type": "application/json",
        "Content-Length": "2000"})
    sock = socket.create_connection((server.host, server.port), timeout=PROMPTLY)
    try:
        sock.sendall(head + b'{"firstName": "')
        started, sent, hung_up = time.monotonic(), 0, False
        for _ in range(DRIP_BYTES):   # longer than PROMPTLY
            # Real-time pacing, on purpose: a slow POST drips its body.
            readable, _, _ = select.select([sock], [], [], DRIP_INTERVAL)
            if readable:
                hung_up = disconnected(sock)
                break
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                hung_up = True
                break
            sent += 1
        elapsed = time.monotonic() - started
        assert hung_up, f"the server still listened after {sent} body bytes and {elapsed:.1f} s"
        # The 3 s deadline and a housekeeping pass, with room for a loaded machine; the
        # drip keeps the socket timeout from firing, so only the body deadline ended it.
        assert elapsed < PROMPTLY
    finally:
        sock.close()
    assert_still_serving(server)


def test_an_idle_keep_alive_connection_is_closed_after_header_timeout(start_server):
    server = start_server(header_timeout=HEADER_TIMEOUT, socket_timeout=LONG_TIMEOUT)
    with RawConnection(server, timeout=PROMPTLY) as connection:
        response = connection.request(http_request("GET", "/health"))
        assert response.status == 200 and response.header("Connection") is None  # kept alive
        idle_since = time.monotonic()
        assert connection.server_closed()        # raises if still open after PROMPTLY
        idle_for = time.monotonic() - idle_since
    # Not closed at once (the connection was kept alive), and long before the socket
    # timeout (LONG_TIMEOUT): it was the header timeout that ended it.
    assert 0.8 * HEADER_TIMEOUT <= idle_for < PROMPTLY
    assert_still_serving(server)


def test_silent_connections_holding_every_place_are_hung_up_after_header_timeout(start_server):
    server = capped_server(start_server, header_timeout=HEADER_TIMEOUT)
    idle = open_idle(server, CAP)
    try:
        assert_problem(refused_on_connect(server), 503)
        for sock in idle:
            assert disconnected(sock)            # bounded by the socket's timeout, PROMPTLY
        # The places come back without our help. The housekeeping pass hangs up first
        # and each connection's own thread releases its place just after, so a new
        # connection may still meet a 503 for a moment: retry until PROMPTLY has passed,
        # each attempt bounded by its socket timeout.
        statuses, deadline = [], time.monotonic() + PROMPTLY
        while not statuses or (statuses[-1] == 503 and time.monotonic() < deadline):
            statuses.append(exchange(server, http_request("GET", "/health"), timeout=PROMPTLY).status)
        assert statuses[-1] == 200, statuses
    finally:
        for sock in idle:
            sock.close()


# -- method override headers ------------------------------------------------------------

OVERRIDE_HEADERS = ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"]


@pytest.mark.parametrize("header", OVERRIDE_HEADERS)
def test_a_method_override_header_on_get_does_not_delete(client, patient, header):
    response = client.get(f"/patients/{patient['id']}", headers={header: "DELETE"})
    assert response.status_code == 200
    assert response.json()["id"] == patient["id"]
    assert client.get(f"/patients/{patient['id']}").status_code == 200
    assert patient["id"] in [item["id"] for item in client.get("/patients").json()["items"]]


@pytest.mark.parametrize("header", OVERRIDE_HEADERS)
def test_post_with_a_method_override_to_a_get_only_path_is_still_405(anonymous, header):
    response = anonymous.post("/health", headers={header: "GET"})
    assert_problem(response, 405)
    assert response.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("header", OVERRIDE_HEADERS)
def test_post_with_a_method_override_to_a_patient_is_405_and_changes_nothing(client, patient, header):
    response = client.post(f"/patients/{patient['id']}", headers={header: "DELETE"})
    assert_problem(response, 405)
    assert response.headers["Allow"] == "DELETE, GET, HEAD, PATCH, PUT"
    assert client.get(f"/patients/{patient['id']}").json() == patient


# -- JSON built to break parsers -------------------------------------------------------

# Each abuse is JSON text put where one member's value goes; the member is `notes` in a
# patient and `password` in credentials, so the rest of the body is valid.
JSON_ABUSES = {
    "duplicate key": lambda member: f'"first value here", "{member}": "second value here"',
    "5000-digit number": lambda member: "9" * 5000,
    "5000-digit negative number": lambda member: "-" + "9" * 5000,
    "1e999": lambda member: "1e999",
    "-1e999": lambda member: "-1e999",
    "NaN": lambda member: "NaN",
    "Infinity": lambda member: "Infinity",
    "-Infinity": lambda member: "-Infinity",
    "10,000 arrays deep": lambda member: "[" * 10_000 + "]" * 10_000,
    "10,000 objects deep": lambda member: '{"a":' * 10_000 + "1" + "}" * 10_000,
    "100 deep": lambda member: "[" * 100 + "]" * 100,
    "escaped NUL": lambda member: '"before\\u0000after"',
    "raw NUL byte": lambda member: '"before\x00after"',
    "raw control character": lambda member: '"before\x07after"',
    "lone surrogate escape": lambda member: '"\\ud800 alone"',
}


def body_with(route: str, value: str) -> bytes:
    if route == "/patients":
        text = '{"firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1815-12-10", "notes": %s}'
    else:
        text = '{"username": "%s", "password": %%s}' % fresh_username("json")
    return (text % value).encode("utf-8")


@pytest.fixture
def poster(live_server, client):
    """POST a raw JSON body to a route, as a logged-in user for /patients."""
    def post(route: str, raw: bytes):
        sender = client if route == "/patients" else ApiClient(live_server.url)
        return sender.post(route, data=raw, headers=JSON)
    return post


@pytest.mark.parametrize("route", ["/patients", "/auth/register"])
@pytest.mark.parametrize("abuse", JSON_ABUSES.values(), ids=JSON_ABUSES.keys())
def test_json_the_parser_must_refuse_is_400_and_the_server_keeps_serving(live_server, poster, route, abuse):
    member = "notes" if route == "/patients" else "password"
    response = poster(route, body_with(route, abuse(member)))
    body = assert_problem(response, 400)
    # Refused by the JSON reader itself, before any schema saw a value: no field errors.
    assert "errors" not in body
    assert_still_serving(live_server)


NOT_OBJECTS = [b"[]", b'[{"firstName": "Ada"}]', b'"a string"', b"42", b"null", b"true"]


@pytest.mark.parametrize("route", ["/patients", "/auth/register"])
@pytest.mark.parametrize("raw", NOT_OBJECTS, ids=[raw.decode() for raw in NOT_OBJECTS])
def test_valid_json_that_is_not_an_object_is_400(live_server, poster, route, raw):
    assert_problem(poster(route, raw), 400)
    assert_still_serving(live_server)


CONTROL_USERNAMES = {
    "newline at the end": "alice\n",
    "carriage return": "ali\rce",
    "tab": "ali\tce",
    "bell": "alice\x07",
    "escape": "\x1balice",
    "delete": "alice\x7f",
    "NUL": "alice\x00",
    "right-to-left override": "\u202ealice",
    "zero-width space": "ali\u200bce",
}


@pytest.mark.parametrize("username", CONTROL_USERNAMES.values(), ids=CONTROL_USERNAMES.keys())
def test_a_username_with_a_control_character_is_400(live_server, username):
    # json.dumps escapes every one of these, so the body itself is valid JSON.
    response = register(live_server, username)
    assert_problem(response, 400)
    assert login(live_server, username).status_code == 400
    assert_still_serving(live_server)


# -- look-alike usernames (NFKC) --------------------------------------------------------

def full_width(text: str) -> str:
    """ASCII letters and digits as their full-width forms (U+FF01..U+FF5E)."""
    return "".join(chr(ord(char) + 0xFEE0) if char.isascii() and char.isalnum() else char for char in text)


def mathematical_bold(text: str) -> str:
    """Letters and digits in the Mathematical Alphanumeric Symbols block."""
    def bold(char):
        if "a" <= char <= "z":
            return chr(0x1D41A + ord(char) - ord("a"))
        if "A" <= char <= "Z":
            return chr(0x1D400 + ord(char) - ord("A"))
        if "0" <= char <= "9":
            return chr(0x1D7CE + ord(char) - ord("0"))
        return char
    return "".join(map(bold, text))


LOOK_ALIKES = {
    "full-width": full_width,
    "full-width upper case": lambda name: full_width(name.upper()),
    "mathematical bold": mathematical_bold,
}


@pytest.fixture
def alice(live_server) -> dict:
    """A fresh account in the spirit of "alice2x": letters and digits only."""
    username = f"alice2x{secrets.token_hex(3)}"
    response = register(live_server, username)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize("look_alike", LOOK_ALIKES.values(), ids=LOOK_ALIKES.keys())
def test_registering_a_look_alike_of_a_taken_username_is_409(live_server, alice, look_alike):
    disguised = look_alike(alice["username"])
    assert disguised != alice["username"]
    assert_problem(register(live_server, disguised, "another good password"), 409)


@pytest.mark.parametrize("look_alike", LOOK_ALIKES.values(), ids=LOOK_ALIKES.keys())
def test_logging_in_with_a_look_alike_username_reaches_the_same_account(live_server, alice, look_alike):
    response = login(live_server, look_alike(alice["username"]))
    assert response.status_code == 200, response.text
    me = ApiClient(live_server.url).get(
        "/auth/me", headers={"Authorization": f"Bearer {response.json()['accessToken']}"})
    assert me.status_code == 200
    assert me.json() == alice


OUTSIDE_THE_PATTERN = {
    "full-width at sign": "alice＠home",          # U+FF20 → "@"
    "ideographic space": "ａｌｉｃｅ　ｘ",           # U+3000 → " "
    "vulgar fraction": "alice½",                  # → "1⁄2", with U+2044 FRACTION SLASH
    "full-width solidus": "ａｌｉｃｅ／ｘ",          # U+FF0F → "/"
}


@pytest.mark.parametrize("username", OUTSIDE_THE_PATTERN.values(), ids=OUTSIDE_THE_PATTERN.keys())
def test_a_username_that_nfkc_maps_outside_the_allowed_pattern_is_400(live_server, username):
    body = assert_problem(register(live_server, username), 400)
    assert "username" in [error["field"] for error in body["errors"]]


# -- password guessing --------------------------------------------------------------------

# The server's login backoff is a FailureBackoff with its defaults: this many wrong
# passwords are answered 401, and no lock is ever longer than MAX_LOCK seconds.
FREE_FAILURES = default_of(FailureBackoff, "free_failures")
MAX_LOCK = default_of(FailureBackoff, "max_delay")


def fail_logins(server, username: str, times: int) -> list:
    return [login(server, username, "wrong password!") for _ in range(times)]


def assert_login_locked(response) -> int:
    body = assert_problem(response, 429)
    assert "accessToken" not in body
    seconds = retry_after_seconds(response.headers.get("Retry-After"))
    assert 1 <= seconds <= MAX_LOCK
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    return seconds


def test_after_five_wrong_passwords_even_the_right_one_is_429(live_server):
    username = fresh_username("guessed")
    assert register(live_server, username).status_code == 201
    for response in fail_logins(live_server, username, FREE_FAILURES):
        assert_problem(response, 401)
    # The sixth attempt is refused before the password is looked at: an attacker who
    # guesses right now learns nothing, and the real owner waits Retry-After seconds.
    assert_login_locked(login(live_server, username, PASSWORD))
    assert_still_serving(live_server)


def test_a_locked_username_does_not_lock_another(live_server):
    locked, other = fresh_username("locked"), fresh_username("other")
    assert register(live_server, locked).status_code == 201
    assert register(live_server, other).status_code == 201
    fail_logins(live_server, locked, FREE_FAILURES)
    assert_login_locked(login(live_server, locked))
    assert login(live_server, other).status_code == 200


def test_unknown_usernames_are_throttled_exactly_like_real_ones(live_server):
    real, unknown = fresh_username("real"), fresh_username("nosuch")
    assert register(live_server, real).status_code == 201
    real_failures = fail_logins(live_server, real, FREE_FAILURES)
    unknown_failures = fail_logins(live_server, unknown, FREE_FAILURES)
    # Same status and same words for both: nothing says which name exists.
    assert [assert_problem(r, 401) for r in real_failures] == [assert_problem(r, 401) for r in unknown_failures]
    real_locked, unknown_locked = login(live_server, real), login(live_server, unknown)
    assert_login_locked(real_locked)
    assert_login_locked(unknown_locked)
    assert real_locked.json() == unknown_locked.json()


def test_failures_under_look_alike_spellings_count_against_one_username(live_server):
    username = fresh_username("spelled")
    assert register(live_server, username).status_code == 201
    spellings = [username, username.upper(), full_width(username), full_width(username.upper()),
                 mathematical_bold(username)]
    for spelling in spellings:
        assert_problem(login(live_server, spelling, "wrong password!"), 401)
    assert_login_locked(login(live_server, username))


# -- hygiene: headers on every response, nothing leaked by a crash -----------------------

def bearer(client: ApiClient) -> dict:
    return {"Authorization": client.session.headers["Authorization"]}


def raw_patient_json(**changes) -> bytes:
    return json.dumps({**PATIENT, **changes}).encode("utf-8")


def upload_request(client: ApiClient, patient_id: str) -> bytes:
    body = multipart(file_part(PDF), part("description", b"a scan"))
    return http_request("POST", f"/patients/{patient_id}/reports", body=body,
                        headers={**bearer(client), "Content-Type": MULTIPART})


def uploaded_report(server, client: ApiClient, patient_id: str) -> dict:
    response = exchange(server, upload_request(client, patient_id))
    assert response.status == 201, response.body
    return response.json()


def new_patient_id(client: ApiClient) -> str:
    response = client.post("/patients", json=PATIENT)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def locked_login(server, client, patient_id) -> bytes:
    username = fresh_username("hygiene")
    fail_logins(server, username, FREE_FAILURES)
    return http_request("POST", "/auth/login", headers=JSON, body=json.dumps(
        {"username": username, "password": PASSWORD}).encode())


# Each builds one request (setting up what it needs); the status is the one it must get.
KINDS_OF_RESPONSE = {
    "200 health": (200, lambda server, client, pid: http_request("GET", "/health")),
    "200 patient": (200, lambda server, client, pid: http_request("GET", f"/patients/{pid}",
                                                                   headers=bearer(client))),
    "200 patient list": (200, lambda server, client, pid: http_request("GET", "/patients?q=Ada",
                                                                        headers=bearer(client))),
    "200 patient replaced": (200, lambda server, client, pid: http_request(
        "PUT", f"/patients/{pid}", headers={**bearer(client), **JSON}, body=raw_patient_json(notes="x"))),
    "200 report list": (200, lambda server, client, pid: http_request("GET", f"/patients/{pid}/reports",
                                                                       headers=bearer(client))),
    "200 report download": (200, lambda server, client, pid: http_request(
        "GET", f"/patients/{pid}/reports/{uploaded_report(server, client, pid)['id']}", headers=bearer(client))),
    "201 patient": (201, lambda server, client, pid: http_request(
        "POST", "/patients", headers={**bearer(client), **JSON}, body=raw_patient_json())),
    "201 report": (201, lambda server, client, pid: upload_request(client, pid)),
    "201 register": (201, lambda server, client, pid: http_request(
        "POST", "/auth/register", headers=JSON,
        body=json.dumps({"username": fresh_username(), "password": PASSWORD}).encode())),
    "204 patient deleted": (204, lambda server, client, pid: http_request(
        "DELETE", f"/patients/{new_patient_id(client)}", headers=bearer(client))),
    "204 report deleted": (204, lambda server, client, pid: http_request(
        "DELETE", f"/patients/{pid}/reports/{uploaded_report(server, client, pid)['id']}",
        headers=bearer(client))),
    "400 bad JSON": (400, lambda server, client, pid: http_request(
        "POST", "/patients", headers={**bearer(client), **JSON}, body=b"{")),
    "401 no token": (401, lambda server, client, pid: http_request("GET", f"/patients/{pid}")),
    "404 no such patient": (404, lambda server, client, pid: http_request(
        "GET", "/patients/0123456789abcdef01234567", headers=bearer(client))),
    "404 no such path": (404, lambda server, client, pid: http_request("GET", "/admin")),
    "405 wrong method": (405, lambda server, client, pid: http_request("POST", f"/patients/{pid}",
                                                                       headers=bearer(client))),
    "413 declared too large": (413, lambda server, client, pid: http_request(
        "POST", "/patients", headers={**bearer(client), **JSON, "Content-Length": str(2 * DEFAULT_MAX_JSON_BYTES)})),
    "415 wrong type": (415, lambda server, client, pid: http_request(
        "POST", "/patients", headers={**bearer(client), "Content-Type": "text/plain"}, body=b"Ada")),
    "429 login locked": (429, locked_login),
}


@pytest.mark.parametrize("status, build", KINDS_OF_RESPONSE.values(), ids=KINDS_OF_RESPONSE.keys())
def test_every_response_says_nosniff_and_no_store(live_server, client, patient, status, build):
    response = exchange(live_server, build(live_server, client, patient["id"]))
    assert response.status == status, response.body
    assert response.header("X-Content-Type-Options") == "nosniff"
    # Patient data must never sit in a shared or browser cache.
    assert response.header("Cache-Control") == "no-store"


def test_a_crash_in_a_handler_is_a_500_that_reveals_nothing(live_server, client, patient, monkeypatch):
    def boom(patient_id):
        raise RuntimeError("SELECT * FROM secrets WHERE password = 'hunter2'")

    monkeypatch.setattr(live_server.store, "get_patient", boom)
    response = exchange(live_server, http_request("GET", f"/patients/{patient['id']}", headers=bearer(client)))
    body = assert_problem(response, 500)
    text = response.body.decode("utf-8")
    for secret in ("SELECT", "secrets", "hunter2", "Traceback", "RuntimeError", "boom", ".py"):
        assert secret not in text
    assert body["detail"]
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert response.header("Cache-Control") == "no-store"
    assert_still_serving(live_server)


# -- logs -----------------------------------------------------------------------------

ACCESS_LINE = re.compile(r"(?P<method>[A-Z]+) (?P<route>/\S*|-) (?P<status>\d{3}) \d+\.\dms (?P<request_id>[0-9a-f]{32})")


class AccessLines(logging.Handler):
    """Collects access-log lines and lets a test wait, bounded, for the n-th one: the
    server writes a request's line just after sending its response, on its own thread.

    That thread may still be writing the line for an earlier test's last request when
    this test begins, so lines from threads that were already running are not ours."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.addFilter(logging.Filter("meditrack.access"))
        self.earlier_threads = {thread.name for thread in threading.enumerate()}  # names are never reused
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self._arrived = threading.Condition()

    def emit(self, record):
        if record.threadName in self.earlier_threads:
            return
        with self._arrived:
            self.records.append(record)
            self.lines.append(record.getMessage())
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[str]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.lines) >= count, timeout)
            return list(self.lines)


def test_logs_hold_one_line_per_request_and_no_patient_data_or_secrets(start_server, caplog):
    caplog.set_level(logging.INFO, logger="meditrack")
    # On the root logger, after caplog's own handler: when a line reaches this one, it
    # has reached caplog too.
    access = AccessLines()
    logging.getLogger().addHandler(access)
    try:
        server = start_server()
        api = ApiClient(server.url)
        username, password = fresh_username("logged"), "secret-password-987"
        assert api.post("/auth/register", json={"username": username, "password": password}).status_code == 201
        assert api.post("/auth/login", json={"username": username, "password": "wrong-password-654"}
                        ).status_code == 401
        login_response = api.post("/auth/login", json={"username": username, "password": password})
        assert login_response.status_code == 200
        token = login_response.json()["accessToken"]
        api.session.headers["Authorization"] = f"Bearer {token}"
        created = api.post("/patients", json={**PATIENT, "firstName": "Zyxwvut", "lastName": "Qwertyson",
                                              "email": "zyxwvut@example.org", "notes": "secret-diagnosis-123"})
        assert created.status_code == 201
        patient_id = created.json()["id"]
        assert api.get("/patients", params={"q": "Zyxw"}).status_code == 200
        assert api.get(f"/patients/{patient_id}").status_code == 200
        upload = api.post(f"/patients/{patient_id}/reports", files={"file": ("mri-zyxwvut.pdf", PDF)},
                          data={"description": "private-note-456"})
        assert upload.status_code == 201
        assert api.get(f"/patients/{patient_id}/reports/{upload.json()['id']}").status_code == 200
        expected = [("POST", "/auth/register", "201"), ("POST", "/auth/login", "401"),
                    ("POST", "/auth/login", "200"), ("POST", "/patients", "201"),
                    ("GET", "/patients", "200"), ("GET", "/patients/{patientId}", "200"),
                    ("POST", "/patients/{patientId}/reports", "201"),
                    ("GET", "/patients/{patientId}/reports/{reportId}", "200")]
        lines = access.wait_for(len(expected))
    finally:
        logging.getLogger().removeHandler(access)

    for secret in (password, "wrong-password-654", token, token.split(".")[2], "Zyxw", "Qwertyson",
                   "zyxwvut@example.org", "secret-diagnosis-123", "private-note-456", "mri-zyxwvut",
                   "q=", patient_id):
        assert secret not in caplog.text, f"{secret!r} is in the log"
    assert all(ACCESS_LINE.fullmatch(line) for line in lines), lines
    assert [(m["method"], m["route"], m["status"]) for m in map(ACCESS_LINE.fullmatch, lines)] == expected
    # caplog saw the same lines (its handler runs before ours on the root logger).
    assert set(access.records) <= set(caplog.records)
