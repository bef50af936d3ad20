"""The HTTP/1.1 layer against a live server: framing, keep-alive, limits, refusals.

`requests` hides exactly what these tests are about (where one message ends, whether a
connection stays open, whether a 100 Continue was sent), so most of them speak HTTP over
a raw socket. `RawConnection` (tests/support/raw_http.py) sends bytes and reads one
whole response at a time: the status line, the header section, and exactly
Content-Length bytes of body. Because it never reads past a response, several requests
can share one connection, and a server that frames a message wrongly shows up as
garbage where the next status line should be. The limits tested are imported from the
code that enforces them, so the tests follow when a limit changes.

Every socket has a timeout, so a server that hangs fails a test instead of the suite;
no test sleeps. Rules are cited from RFC 9112 (HTTP/1.1 messages) and RFC 9110
(HTTP semantics).
"""

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from settings import Settings
from tests.support.defaults import default_of
from tests.support.problems import assert_problem
from tests.support.raw_http import RawConnection, RawResponse, assert_still_serving, exchange, http_request
from web.http11 import MAX_HEADER_BYTES, MAX_HEADER_COUNT, MAX_QUERY_FIELDS, MAX_REQUEST_LINE

DEFAULT_MAX_JSON_BYTES = default_of(Settings, "max_json_bytes")
OPENAPI_BYTES = (Path(__file__).resolve().parent.parent / "openapi.json").read_bytes()


# -- helpers for this file's requests ----------------------------------------------------

def is_health_body(server, body: bytes) -> bool:
    """The whole of a /health answer: JSON that parses, from its first byte to its last."""
    health = json.loads(body)
    return health["status"] == "ok" and health["store"] == server.store.name and set(health) == {
        "status", "store", "reportStorage", "audit"}


def register_json(username: str, password: str = "correct horse battery") -> bytes:
    return json.dumps({"username": username, "password": password}).encode("utf-8")


# -- the endpoints that need no account ----------------------------------------------

def test_health_answers_ok_with_the_store_name(live_server):
    response = exchange(live_server, http_request("GET", "/health"))
    assert response.status == 200
    assert response.header("Content-Type") == "application/json; charset=utf-8"
    assert response.json().items() >= {"status": "ok", "store": live_server.store.name}.items()


def test_openapi_json_serves_the_contract(live_server):
    response = exchange(live_server, http_request("GET", "/openapi.json"))
    assert response.status == 200
    assert response.header("Content-Type").startswith("application/json")
    assert "openapi" in response.json()
    assert response.body == OPENAPI_BYTES


def test_docs_serves_an_html_page(live_server):
    response = exchange(live_server, http_request("GET", "/docs"))
    assert response.status == 200
    assert response.header("Content-Type").startswith("text/html")
    assert b"<html" in response.body.lower()


# -- keep-alive and pipelining (RFC 9112 §9.3) ---------------------------------------

def test_two_requests_share_one_connection(live_server):
    with RawConnection(live_server) as connection:
        first = connection.request(http_request("GET", "/health"))
        second = connection.request(http_request("GET", "/openapi.json"))
    assert first.status == 200 and first.json().items() >= {"status": "ok", "store": live_server.store.name}.items()
    assert second.status == 200 and second.body == OPENAPI_BYTES
    assert first.header("Connection") is None and second.header("Connection") is None


def test_twenty_requests_on_one_connection_each_have_an_exact_body(live_server):
    with RawConnection(live_server) as connection:
        for number in range(20):
            if number % 2:
                response = connection.request(http_request("GET", "/openapi.json"))
                assert response.body == OPENAPI_BYTES
            else:
                response = connection.request(http_request("GET", "/health"))
                assert is_health_body(live_server, response.body)
            assert response.status == 200
            assert int(response.header("Content-Length")) == len(response.body)
            assert response.header("Connection") is None


def test_pipelined_requests_are_answered_in_order(live_server):
    with RawConnection(live_server) as connection:
        connection.send(http_request("GET", "/health") + http_request("GET", "/no-such-thing")
                        + http_request("PATCH", "/patients"))
        statuses = [connection.read_response().status for _ in range(3)]
        assert statuses == [200, 404, 405]
        # ...and the connection is still in step for a fourth request.
        assert connection.request(http_request("GET", "/health")).status == 200


def test_connection_close_is_honoured(live_server):
    with RawConnection(live_server) as connection:
        response = connection.request(http_request("GET", "/health", headers={"Connection": "close"}))
        assert response.status == 200
        assert response.header("Connection") == "close"
        assert connection.server_closed()


def test_http_1_0_request_is_answered_and_the_connection_closed(live_server):
    with RawConnection(live_server) as connection:
        response = connection.request(http_request("GET", "/health", version="HTTP/1.0"))
        assert response.status == 200
        assert response.json().items() >= {"status": "ok", "store": live_server.store.name}.items()
        assert response.header("Connection") == "close"
        assert connection.server_closed()


def test_head_response_has_no_body_so_the_connection_stays_in_step(live_server):
    # RFC 9112 §6.3: a response to HEAD ends with its header section, whatever its
    # status; a body written after it would be read as the next response.
    with RawConnection(live_server) as connection:
        connection.request(http_request("HEAD", "/health"), head=True)
        following = connection.request(http_request("GET", "/health"))
    assert following.status == 200
    assert following.json().items() >= {"status": "ok", "store": live_server.store.name}.items()


# -- headers every response carries --------------------------------------------------

EVERY_KIND_OF_RESPONSE = {
    "200 health": http_request("GET", "/health"),
    "200 openapi": http_request("GET", "/openapi.json"),
    "200 docs": http_request("GET", "/docs"),
    "400 bad JSON": http_request("POST", "/auth/login", headers={"Content-Type": "application/json"},
                                 body=b"{not json"),
    "400 malformed request line": b"GARBAGE\r\n\r\n",
    "401 no token": http_request("GET", "/auth/me"),
    "404 unknown path": http_request("GET", "/no-such-thing"),
    "405 wrong method": http_request("PATCH", "/patients"),
    "415 wrong content type": http_request("POST", "/auth/login", headers={"Content-Type": "text/plain"},
                                           body=b"hello"),
}


@pytest.mark.parametrize("request_bytes", EVERY_KIND_OF_RESPONSE.values(), ids=EVERY_KIND_OF_RESPONSE.keys())
def test_every_response_has_length_nosniff_no_store_and_a_plain_server_header(live_server, request_bytes):
    response = exchange(live_server, request_bytes)
    assert int(response.header("Content-Length")) == len(response.body)
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert response.header("Cache-Control") == "no-store"
    assert response.header("Server") == "MediTrack"
    assert response.header("Date") is not None  # RFC 9110 §6.6.1


def test_server_header_does_not_mention_python(live_server):
    response = exchange(live_server, http_request("GET", "/health"))
    assert "python" not in response.header("Server").lower()
    assert not any("python" in value.lower() for _, value in response.headers)


def test_no_content_response_has_no_content_length_and_keeps_the_connection(client, patient, live_server):
    authorization = client.session.headers["Authorization"]
    with RawConnection(live_server) as connection:
        deleted = connection.request(http_request("DELETE", f"/patients/{patient['id']}",
                                                  headers={"Authorization": authorization}))
        assert deleted.status == 204
        # RFC 9110 §8.6: a server MUST NOT send Content-Length in a 204.
        assert deleted.header("Content-Length") is None
        assert deleted.header("X-Content-Type-Options") == "nosniff"
        assert deleted.header("Cache-Control") == "no-store"
        assert deleted.header("Server") == "MediTrack"
        # No body followed the 204: the next response starts where it should.
        assert connection.request(http_request("GET", "/health")).status == 200


# -- 404 and 405 (RFC 9110 §15.5.5, §15.5.6) -----------------------------------------

@pytest.mark.parametrize("target", ["/no-such-thing", "/patients/x/y/z", "/healthz", "/"])
def test_unknown_path_is_404_problem(live_server, target):
    assert_problem(exchange(live_server, http_request("GET", target)), 404)


@pytest.mark.parametrize("method, target, allow", [
    ("PATCH", "/patients", "GET, HEAD, POST"),
    ("DELETE", "/auth/login", "POST"),
    ("GET", "/auth/register", "POST"),
    ("POST", "/health", "GET, HEAD"),
    ("POST", "/patients/0123456789abcdef01234567", "DELETE, GET, HEAD, PATCH, PUT"),
])
def test_wrong_method_is_405_problem_with_allow(live_server, method, target, allow):
    response = exchange(live_server, http_request(method, target))
    assert_problem(response, 405)
    assert response.header("Allow") == allow


# -- request line and header section limits (RFC 9112 §3, §5; RFC 6585 §5) ----------

def request_line_of(length: int) -> bytes:
    """A GET request whose request line, CRLF included, is `length` bytes."""
    padding = length - len(b"GET / HTTP/1.1\r\n")
    return f"GET /{'a' * padding} HTTP/1.1\r\n".encode("ascii")


def test_request_line_at_the_limit_is_read(live_server):
    line = request_line_of(MAX_REQUEST_LINE)
    assert len(line) == MAX_REQUEST_LINE
    response = exchange(live_server, line + b"Host: 127.0.0.1\r\n\r\n")
    assert_problem(response, 404)  # parsed and routed, not refused for its length


def test_request_line_over_the_limit_is_414(live_server):
    response = exchange(live_server, request_line_of(MAX_REQUEST_LINE + 1) + b"Host: 127.0.0.1\r\n\r\n")
    assert_problem(response, 414)
    assert_still_serving(live_server)


def test_much_longer_request_line_is_414(live_server):
    response = exchange(live_server, request_line_of(4 * MAX_REQUEST_LINE) + b"Host: 127.0.0.1\r\n\r\n")
    assert_problem(response, 414)
    assert_still_serving(live_server)


def with_header_fields(count: int) -> bytes:
    """GET /health with exactly `count` header fields, Host included."""
    extra = {f"X-Field-{number}": "value" for number in range(count - 1)}
    return http_request("GET", "/health", headers=extra)


def test_one_hundred_header_fields_are_accepted(live_server):
    assert exchange(live_server, with_header_fields(MAX_HEADER_COUNT)).status == 200


def test_more_than_one_hundred_header_fields_is_431(live_server):
    assert_problem(exchange(live_server, with_header_fields(MAX_HEADER_COUNT + 1)), 431)
    assert_still_serving(live_server)


def test_header_section_over_16_kib_is_431(live_server):
    big = {f"X-Big-{number}": "v" * 1000 for number in range(20)}  # ~20 KiB in 21 fields
    assert_problem(exchange(live_server, http_request("GET", "/health", headers=big)), 431)
    assert_still_serving(live_server)


def test_single_header_line_over_16_kib_is_431(live_server):
    big = {"X-Huge": "v" * (MAX_HEADER_BYTES + 1)}
    assert_problem(exchange(live_server, http_request("GET", "/health", headers=big)), 431)
    assert_still_serving(live_server)


MALFORMED_REQUEST_LINES = {
    "two tokens": b"GET /health\r\nHost: 127.0.0.1\r\n\r\n",
    "lower-case garbage": b"hello there\r\nHost: 127.0.0.1\r\n\r\n",
    "lower-case version": b"get /health http/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "target without slash": b"GET health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "two-digit minor version": b"GET /health HTTP/1.10\r\nHost: 127.0.0.1\r\n\r\n",
    "non-ASCII target": b"GET /h\xc3\xa9alth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "space in target": b"GET /he alth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "two spaces": b"GET  /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "method not a token": b"G(E)T /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED_REQUEST_LINES.values(), ids=MALFORMED_REQUEST_LINES.keys())
def test_malformed_request_line_is_400_and_the_server_keeps_serving(live_server, request_bytes):
    assert_problem(exchange(live_server, request_bytes), 400)
    assert_still_serving(live_server)


# -- the rules a differential test against h11 found us breaking ---------------------------


def test_rfc9112_3_2_2_an_absolute_form_target_is_accepted_and_routed_by_its_path(live_server):
    target = f"http://{live_server.host}:{live_server.port}/health"
    with RawConnection(live_server) as connection:
        response = connection.request(http_request("GET", target))
        assert response.status == 200 and is_health_body(live_server, response.body)
        # The connection stays in step: a second request on it is answered too.
        assert connection.request(http_request("GET", "/health")).status == 200


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_rfc9112_3_2_more_than_one_host_is_400_in_every_version(live_server, version):
    data = f"GET /health {version}\r\nHost: a.example\r\nHost: b.example\r\n\r\n".encode()
    with RawConnection(live_server) as connection:
        assert_problem(connection.request(data), 400)
        assert connection.server_closed()
    assert_still_serving(live_server)


@pytest.mark.parametrize("request_bytes", [
    b"GET /health HTTP/1.1\rHost: 127.0.0.1\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\r2\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\r\n",
], ids=["as-a-line-end", "in-a-value", "in-the-empty-line"])
def test_rfc9112_2_2_a_bare_cr_in_the_head_is_400_and_the_connection_closed(live_server, request_bytes):
    with RawConnection(live_server) as connection:
        assert_problem(connection.request(request_bytes), 400)
        assert connection.server_closed()
    assert_still_serving(live_server)


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/3.0", "HTTP/0.9"])
def test_rfc9110_2_5_an_unsupported_major_version_is_505_and_the_connection_closed(live_server, version):
    with RawConnection(live_server) as connection:
        response = connection.request(f"GET /health {version}\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert_problem(response, 505)
        assert response.version == "HTTP/1.1"
        assert connection.server_closed()


def test_rfc9110_2_5_http_1_2_is_answered_as_http_1_1_on_a_kept_connection(live_server):
    data = b"GET /health HTTP/1.2\r\nHost: 127.0.0.1\r\n\r\n"
    with RawConnection(live_server) as connection:
        for _ in range(2):
            response = connection.request(data)
            assert response.status == 200 and response.version == "HTTP/1.1"
            assert response.header("Connection") is None


MALFORMED_HEADER_SECTIONS = {
    "no colon": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nNoColonHere\r\n\r\n",
    "space before colon": b"GET /health HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n",
    "tab before colon": b"GET /health HTTP/1.1\r\nHost\t: 127.0.0.1\r\n\r\n",
    "obsolete folding": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: one\r\n two\r\n\r\n",
    "empty name": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n: value\r\n\r\n",
    "NUL in value": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x00b\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED_HEADER_SECTIONS.values(),
                         ids=MALFORMED_HEADER_SECTIONS.keys())
def test_malformed_header_line_is_400_and_the_server_keeps_serving(live_server, request_bytes):
    assert_problem(exchange(live_server, request_bytes), 400)
    assert_still_serving(live_server)


@pytest.mark.parametrize("request_bytes", [
    b"GET /health HTTP/1.1\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: example.org\r\n\r\n",
], ids=["no Host", "two Host"])
def test_http_1_1_request_without_exactly_one_host_is_400(live_server, request_bytes):
    # RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
    # HTTP/1.1 request message that lacks a Host header field and to any request message
    # that contains more than one Host header field line".
    assert_problem(exchange(live_server, request_bytes), 400)


# -- Content-Length and Transfer-Encoding (RFC 9112 §6, RFC 9110 §8.6) --------------

BAD_FRAMING = {
    "plus sign": (b"Content-Length: +5\r\n", 400),
    "hexadecimal": (b"Content-Length: 0x5\r\n", 400),
    "list": (b"Content-Length: 5, 5\r\n", 400),
    "two fields": (b"Content-Length: 5\r\nContent-Length: 5\r\n", 400),
    "negative": (b"Content-Length: -1\r\n", 400),
    "empty": (b"Content-Length: \r\n", 400),
    "chunked with length": (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400),
    "chunked alone": (b"Transfer-Encoding: chunked\r\n", 411),
}


@pytest.mark.parametrize("framing, status", BAD_FRAMING.values(), ids=BAD_FRAMING.keys())
def test_untrustworthy_body_framing_is_refused_and_the_connection_closed(live_server, framing, status):
    request_bytes = (b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\n" + framing + b"\r\n")
    with RawConnection(live_server) as connection:
        response = connection.request(request_bytes)
        assert_problem(response, status)
        # The server cannot know where the body ends, so it must not read a next request.
        assert response.header("Connection") == "close"
        assert connection.server_closed()
    assert_still_serving(live_server)


# -- body limits and Expect: 100-continue (RFC 9110 §10.1.1, §15.5.14) ----------------

@pytest.mark.parametrize("max_json_bytes, declared", [
    (DEFAULT_MAX_JSON_BYTES, DEFAULT_MAX_JSON_BYTES + 1),
    (2048, 2049),
    (2048, 60_000),
], ids=["default limit", "small limit, one byte over", "small limit, far over"])
def test_declared_length_over_the_limit_is_413_before_the_body_is_sent(start_server, max_json_bytes, declared):
    # A long socket timeout on the server: waiting for a body that never comes would
    # show up as this client's timeout, not as a late 413.
    server = start_server(max_json_bytes=max_json_bytes, socket_timeout=30)
    headers = {"Content-Type": "application/json", "Content-Length": str(declared)}
    with RawConnection(server, timeout=3) as connection:
        response = connection.request(http_request("POST", "/auth/register", headers=headers))
        assert_problem(response, 413)
        assert response.header("Connection") == "close"
        assert connection.server_closed()


def test_body_exactly_at_the_limit_is_not_413(start_server):
    server = start_server(max_json_bytes=2048)
    body = register_json("atlimit").ljust(2048, b" ")
    response = exchange(server, http_request("POST", "/auth/register",
                                             headers={"Content-Type": "application/json"}, body=body))
    assert response.status == 201


def test_expect_continue_over_the_limit_is_413_without_100_continue(live_server):
    headers = {"Content-Type": "application/json", "Expect": "100-continue",
               "Content-Length": str(2 * DEFAULT_MAX_JSON_BYTES)}
    with RawConnection(live_server, timeout=3) as connection:
        response = connection.request(http_request("POST", "/auth/register", headers=headers))
        assert response.status != 100
        assert_problem(response, 413)
        assert response.header("Connection") == "close"
        assert connection.server_closed()  # and nothing, no late 100, came after it


def test_expect_continue_with_an_acceptable_body_gets_100_then_201(live_server):
    body = register_json("expectscontinue")
    headers = {"Content-Type": "application/json", "Expect": "100-continue", "Content-Length": str(len(body))}
    with RawConnection(live_server) as connection:
        interim = connection.request(http_request("POST", "/auth/register", headers=headers))
        assert (interim.version, interim.status) == ("HTTP/1.1", 100)
        final = connection.request(body)
        assert final.status == 201
        assert final.json()["username"] == "expectscontinue"
        # The body was read in full, so the connection stays usable.
        assert connection.request(http_request("GET", "/health")).status == 200


def test_expect_continue_on_a_protected_route_without_token_is_401_without_100(live_server):
    headers = {"Content-Type": "application/json", "Expect": "100-continue", "Content-Length": "200"}
    with RawConnection(live_server, timeout=3) as connection:
        response = connection.request(http_request("POST", "/patients", headers=headers))
        assert_problem(response, 401)
        assert response.header("WWW-Authenticate") == "Bearer"
        # The client was never told to send its body, so the server cannot keep reading.
        assert response.header("Connection") == "close"
        assert connection.server_closed()


def test_body_shorter_than_its_length_then_half_close_is_400_or_closed(live_server):
    headers = {"Content-Type": "application/json", "Content-Length": "100"}
    with RawConnection(live_server) as connection:
        connection.send(http_request("POST", "/auth/register", headers=headers) + b'{"username"')
        connection.sock.shutdown(socket.SHUT_WR)  # "that is all the body you will get"
        if connection.rfile.peek(1):
            response = connection.read_response()
            assert_problem(response, 400)
            assert response.header("Connection") == "close"
        assert connection.server_closed()
    assert_still_serving(live_server)


def test_unread_small_body_is_drained_so_the_next_request_works(live_server):
    with RawConnection(live_server) as connection:
        first = connection.request(http_request("GET", "/health", body=b"0123456789"))
        second = connection.request(http_request("GET", "/health"))
    assert first.status == 200 and first.header("Connection") is None
    assert second.status == 200 and second.json().items() >= {"status": "ok", "store": live_server.store.name}.items()


def test_idle_connection_is_closed_after_the_socket_timeout(start_server):
    server = start_server(socket_timeout=1)
    with RawConnection(server, timeout=5) as connection:
        assert connection.request(http_request("GET", "/health")).status == 200
        # Send nothing more: within the server's 1 s (bounded here by our 5 s) it hangs up.
        assert connection.server_closed()


# -- rate limiting (RFC 6585 §4) -----------------------------------------------------

def assert_rate_limited(response: RawResponse) -> None:
    assert_problem(response, 429)
    retry_after = response.header("Retry-After")
    assert retry_after is not None and retry_after.isdigit(), retry_after
    assert int(retry_after) >= 1


def test_fourth_request_over_a_limit_of_three_is_429_with_retry_after(start_server):
    server = start_server(rate_limit=(3, 3600.0))
    statuses = [exchange(server, http_request("GET", "/health")).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert_rate_limited(exchange(server, http_request("GET", "/health")))


def test_forged_x_forwarded_for_does_not_reset_the_limit(start_server):
    server = start_server(rate_limit=(3, 3600.0))
    responses = [exchange(server, http_request("GET", "/health", headers={"X-Forwarded-For": f"203.0.113.{n}"}))
                 for n in range(4)]
    assert [response.status for response in responses[:3]] == [200, 200, 200]
    assert_rate_limited(responses[3])


def test_trusted_proxy_gives_each_forwarded_client_its_own_bucket(start_server):
    server = start_server(rate_limit=(3, 3600.0), trusted_proxies=frozenset({"127.0.0.1"}))

    def get_as(client_ip):
        return exchange(server, http_request("GET", "/health", headers={"X-Forwarded-For": client_ip}))

    assert [get_as("203.0.113.1").status for _ in range(3)] == [200, 200, 200]
    assert_rate_limited(get_as("203.0.113.1"))
    assert [get_as("203.0.113.2").status for _ in range(3)] == [200, 200, 200]
    assert_rate_limited(get_as("203.0.113.2"))


def test_auth_limit_applies_to_login_while_other_routes_answer(start_server):
    server = start_server(auth_rate_limit=(2, 3600.0))
    login = http_request("POST", "/auth/login", headers={"Content-Type": "application/json"},
                         body=register_json("nobody-here", "wrong password"))
    assert [exchange(server, login).status for _ in range(2)] == [401, 401]
    assert_rate_limited(exchange(server, login))
    assert exchange(server, http_request("GET", "/health")).status == 200


# -- query strings -------------------------------------------------------------------

@pytest.mark.parametrize("query", ["q=%ff", "q=%c3%28", "q=%ed%a0%80"], ids=["lone ff", "bad continuation",
                                                                          "surrogate"])
def test_query_that_is_not_utf8_is_400(live_server, query):
    assert_problem(exchange(live_server, http_request("GET", f"/health?{query}")), 400)


def test_fifty_query_fields_are_accepted(live_server):
    query = "&".join(f"f{number}=1" for number in range(MAX_QUERY_FIELDS))
    assert exchange(live_server, http_request("GET", f"/health?{query}")).status == 200


def test_more_than_fifty_query_fields_is_400(live_server):
    query = "&".join(f"f{number}=1" for number in range(MAX_QUERY_FIELDS + 1))
    assert_problem(exchange(live_server, http_request("GET", f"/health?{query}")), 400)


# -- concurrency ---------------------------------------------------------------------

def test_fifty_concurrent_keep_alive_connections_all_succeed(live_server):
    start = threading.Barrier(50, timeout=10)

    def ten_requests_on_one_connection(_):
        with RawConnection(live_server, timeout=10) as connection:
            start.wait()  # open all fifty connections before anyone sends
            return [connection.request(http_request("GET", "/health")) for _ in range(10)]

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(ten_requests_on_one_connection, range(50)))
    responses = [response for batch in results for response in batch]
    assert len(responses) == 500
    assert all(response.status == 200 for response in responses)
    assert all(is_health_body(live_server, response.body) for response in responses)
