"""Tests for web/dispatch.py: which address a client is counted as, and the request pipeline.

The Dispatcher is driven directly with a tiny Router and hand-built `IncomingRequest`
values: no socket, no server. Rate limiters run on a fake clock that never moves, so a bucket
that is empty stays empty.
"""

import io

import pytest

from tests.support.clock import FakeClock
from tests.support.problems import assert_problem
from web import jwt
from web.dispatch import Dispatcher, client_address
from web.http11 import Headers
from web.messages import IncomingRequest, Request, Response
from web.problems import status_for
from web.ratelimit import RateLimiter
from web.router import Router

PEER = "198.51.100.7"
PROXY = "10.0.0.1"
OTHER_PROXY = "10.0.0.2"
CLIENT = "203.0.113.9"


# --- client_address ---------------------------------------------------------------


def test_forwarded_for_is_ignored_when_the_peer_is_not_a_trusted_proxy():
    assert client_address(PEER, CLIENT, frozenset({PROXY})) == PEER


def test_forwarded_for_is_ignored_when_no_proxy_is_trusted():
    assert client_address(PROXY, CLIENT, frozenset()) == PROXY


def test_trusted_proxy_passes_on_the_forwarded_client():
    assert client_address(PROXY, CLIENT, frozenset({PROXY})) == CLIENT


def test_forwarded_for_is_read_right_to_left_skipping_trusted_proxies():
    # The client made up the first entry; our proxies appended the last two.
    header = f"1.2.3.4, {CLIENT}, {OTHER_PROXY}"
    assert client_address(PROXY, header, frozenset({PROXY, OTHER_PROXY})) == CLIENT


def test_the_rightmost_untrusted_hop_wins_over_anything_a_client_prepends():
    assert client_address(PROXY, f"6.6.6.6, 7.7.7.7, {CLIENT}", frozenset({PROXY})) == CLIENT


def test_hops_may_be_ipv6():
    assert client_address(PROXY, "2001:db8::1", frozenset({PROXY})) == "2001:db8::1"


def test_spaces_around_hops_are_ignored():
    assert client_address(PROXY, f"  {CLIENT}  ,{OTHER_PROXY} ", frozenset({PROXY, OTHER_PROXY})) == CLIENT


@pytest.mark.parametrize("header", [
    "not-an-address",
    f"{CLIENT}, garbage",
    f"{CLIENT}:4711",
    f"{CLIENT}, ",
    ",",
    "unknown",
    "999.1.1.1",
])
def test_a_malformed_hop_falls_back_to_the_peer(header):
    assert client_address(PROXY, header, frozenset({PROXY})) == PROXY


def test_a_malformed_hop_left_of_the_client_is_never_reached():
    assert client_address(PROXY, f"garbage, {CLIENT}", frozenset({PROXY})) == CLIENT


def test_all_hops_trusted_gives_the_peer():
    assert client_address(PROXY, f"{OTHER_PROXY}, {PROXY}", frozenset({PROXY, OTHER_PROXY})) == PROXY


@pytest.mark.parametrize("header", ["", None])
def test_empty_or_missing_header_gives_the_peer(header):
    assert client_address(PROXY, header, frozenset({PROXY})) == PROXY


# --- the Dispatcher -----------------------------------------------------------------



def make_request(method: str = "GET", path: str = "/things", *, client: str = PEER,
                 content_length: int = 0, headers: dict | None = None) -> IncomingRequest:
    message = Headers()
    for name, value in (headers or {}).items():
        message.add(name, value)
    return IncomingRequest(method=method, path=path, query={}, headers=message, body=io.BytesIO(b""),
                           content_length=content_length, peer=client)


class Calls:
    """Handlers that record each request they see and answer 200 with their name."""

    def __init__(self):
        self.seen: list[tuple[str, Request]] = []

    def handler(self, name: str):
        def handle(request: Request) -> Response:
            self.seen.append((name, request))
            return Response(200, name.encode())
        return handle

    def names(self) -> list[str]:
        return [name for name, _ in self.seen]


USER = {"id": "5f0c0ffee0c0ffee0c0ffee0", "username": "ada", "createdAt": "2026-01-01T00:00:00.000Z"}


def failing_handler(request: Request) -> Response:
    raise RuntimeError("SELECT * FROM users WHERE password_hash = 'secret'")


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def login_limit() -> RateLimiter:
    """The stricter limit of the route where passwords are checked: one request per 4 s."""
    return RateLimiter(1, 4, clock=FakeClock())


@pytest.fixture
def routes(calls, login_limit) -> Router:
    router = Router()
    router.add("GET", "/things", calls.handler("list_things"))
    router.add("GET", "/things/{thingId}", calls.handler("get_thing"))
    router.add("PUT", "/things/{thingId}", calls.handler("put_thing"), max_body=10)
    router.add("DELETE", "/things/{thingId}", calls.handler("delete_thing"))
    router.add("GET", "/me", calls.handler("me"), auth=True)
    router.add("POST", "/login", calls.handler("login"), rate_limit=login_limit)
    router.add("GET", "/boom", failing_handler)
    return router


@pytest.fixture
def authenticated():
    """An authenticate function that records the requests it was asked about."""
    asked = []

    def authenticate(headers):
        asked.append(headers)
        return USER
    authenticate.asked = asked
    return authenticate


def dispatcher(routes, authenticate=None, **options):
    """A Dispatcher, called the way the server calls it; returns only the response
    (the route template it also returns has a test of its own)."""
    options.setdefault("max_body", 1024)
    options.setdefault("sleep", lambda seconds: None)  # refusals are answered at once here
    pipeline = Dispatcher(routes, authenticate=authenticate or (lambda headers: pytest.fail("authenticate was called")),
                          **options)
    return lambda incoming: pipeline(incoming)[0]


def header(response: Response, name: str) -> str | None:
    values = [value for key, value in response.headers if key.lower() == name.lower()]
    return values[0] if values else None


def test_request_is_routed_to_its_handler_with_params(routes, calls):
    response = dispatcher(routes)(make_request("GET", "/things/caf%C3%A9"))
    assert response.status == 200 and response.body == b"get_thing"
    (name, request), = calls.seen
    assert request.params == {"thingId": "café"}
    assert request.route == "/things/{thingId}"
    assert request.client == PEER and request.user is None


def test_the_request_a_handler_gets_is_built_once_and_cannot_be_changed(routes, calls):
    dispatcher(routes)(make_request("GET", "/things/1"))
    (name, request), = calls.seen
    with pytest.raises(AttributeError):
        request.user = USER


def test_the_dispatcher_names_the_route_that_answered_for_the_access_log(routes):
    pipeline = Dispatcher(routes, max_body=1024, authenticate=lambda headers: USER)
    assert pipeline(make_request("GET", "/things/7"))[1].template == "/things/{thingId}"
    assert pipeline(make_request("GET", "/nothing"))[1].template == "-"
    assert pipeline(make_request("POST", "/things/7"))[1].template == "-"  # 405: no route answered


def test_the_applications_exceptions_get_the_status_it_gives_them(calls):
    class RecordMissing(Exception):
        pass

    def missing(request):
        raise RecordMissing("no such thing")

    router = Router()
    router.add("GET", "/things/{thingId}", missing)
    assert dispatcher(router)(make_request("GET", "/things/1")).status == 500
    response = dispatcher(router, exception_statuses={RecordMissing: 404})(make_request("GET", "/things/1"))
    assert assert_problem(response, 404)["detail"] == "no such thing"


def test_routes_that_require_authentication_need_an_authenticate_function(routes):
    with pytest.raises(ValueError):
        Dispatcher(routes, max_body=1024)


def test_unknown_path_is_a_404_problem(routes, calls):
    response = dispatcher(routes)(make_request("GET", "/nothing"))
    assert response.status == 404
    assert_problem(response, 404)
    assert calls.seen == []


def test_known_path_with_wrong_method_is_a_405_problem_with_allow(routes, calls):
    response = dispatcher(routes)(make_request("POST", "/things/1"))
    assert response.status == 405
    assert_problem(response, 405)
    assert header(response, "Allow") == "DELETE, GET, HEAD, PUT"
    assert calls.seen == []


def test_body_over_the_routes_max_body_is_413_and_the_handler_never_runs(routes, calls):
    response = dispatcher(routes, max_body=1_000_000)(make_request("PUT", "/things/1", content_length=11))
    assert response.status == 413
    assert_problem(response, 413)
    assert calls.seen == []


def test_body_exactly_at_the_routes_max_body_is_handled(routes, calls):
    response = dispatcher(routes)(make_request("PUT", "/things/1", content_length=10))
    assert response.status == 200 and calls.names() == ["put_thing"]


def test_routes_without_their_own_limit_use_the_dispatchers_max_body(routes, calls):
    handle = dispatcher(routes, max_body=100)
    assert handle(make_request("GET", "/things", content_length=100)).status == 200
    assert handle(make_request("GET", "/things", content_length=101)).status == 413
    assert calls.names() == ["list_things"]


def test_auth_route_calls_authenticate_and_sets_the_user(routes, calls, authenticated):
    response = dispatcher(routes, authenticated)(make_request("GET", "/me"))
    assert response.status == 200
    (name, request), = calls.seen
    assert request.user == USER
    assert authenticated.asked == [request.headers]


def test_routes_without_auth_never_call_authenticate(routes, calls):
    response = dispatcher(routes)(make_request("GET", "/things"))  # authenticate would fail the test
    assert response.status == 200
    assert calls.seen[0][1].user is None


def test_a_refused_token_is_401_and_the_handler_never_runs(routes, calls):
    def authenticate(headers):
        raise jwt.TokenExpired("the token has expired")

    response = dispatcher(routes, authenticate)(make_request("GET", "/me"))
    assert response.status == 401
    assert header(response, "WWW-Authenticate") == 'Bearer error="invalid_token"'
    assert calls.seen == []


def test_an_oversized_body_is_refused_before_authentication(routes, calls):
    router = Router()
    router.add("POST", "/upload", calls.handler("upload"), auth=True, max_body=5)
    response = dispatcher(router)(make_request("POST", "/upload", content_length=6))
    assert response.status == 413 and calls.seen == []


def test_general_limiter_answers_429_with_retry_after(routes, calls):
    # 2 requests per 8 seconds: a token every 4 seconds, and the fake clock never moves.
    limiter = RateLimiter(2, 8, clock=FakeClock())
    handle = dispatcher(routes, general_limit=limiter)
    assert [handle(make_request()).status for _ in range(2)] == [200, 200]
    response = handle(make_request())
    assert response.status == 429
    assert_problem(response, 429)
    assert header(response, "Retry-After") == "4"
    assert calls.names() == ["list_things", "list_things"]


def test_general_limiter_counts_each_client_separately(routes):
    handle = dispatcher(routes, general_limit=RateLimiter(1, 8, clock=FakeClock()))
    assert handle(make_request(client="192.0.2.1")).status == 200
    assert handle(make_request(client="192.0.2.1")).status == 429
    assert handle(make_request(client="192.0.2.2")).status == 200


def test_general_limiter_counts_the_forwarded_client_behind_a_trusted_proxy(routes, calls):
    handle = dispatcher(routes, general_limit=RateLimiter(1, 8, clock=FakeClock()),
                        trusted_proxies=frozenset({PROXY}))
    first = handle(make_request(client=PROXY, headers={"X-Forwarded-For": "192.0.2.1"}))
    second = handle(make_request(client=PROXY, headers={"X-Forwarded-For": "192.0.2.2"}))
    again = handle(make_request(client=PROXY, headers={"X-Forwarded-For": "192.0.2.1"}))
    assert (first.status, second.status, again.status) == (200, 200, 429)
    assert [request.client for _, request in calls.seen] == ["192.0.2.1", "192.0.2.2"]


def test_forwarded_for_from_an_untrusted_peer_cannot_dodge_the_limit(routes):
    handle = dispatcher(routes, general_limit=RateLimiter(1, 8, clock=FakeClock()),
                        trusted_proxies=frozenset({PROXY}))
    assert handle(make_request(client=PEER, headers={"X-Forwarded-For": "192.0.2.1"})).status == 200
    assert handle(make_request(client=PEER, headers={"X-Forwarded-For": "192.0.2.2"})).status == 429


def test_a_routes_own_limiter_applies_to_its_requests(routes, calls):
    handle = dispatcher(routes)
    assert handle(make_request("POST", "/login")).status == 200
    response = handle(make_request("POST", "/login"))
    assert response.status == 429
    assert header(response, "Retry-After") == "4"
    assert calls.names() == ["login"]


def test_a_routes_own_limiter_does_not_apply_to_other_routes(routes, calls, login_limit):
    handle = dispatcher(routes)
    for _ in range(5):
        assert handle(make_request("GET", "/things")).status == 200
    # The bucket was never touched: the one login request it allows is still there.
    assert handle(make_request("POST", "/login")).status == 200
    assert len(login_limit) == 1


def test_no_limiters_means_no_limit(routes):
    handle = dispatcher(routes)
    assert all(handle(make_request()).status == 200 for _ in range(50))


def test_unexpected_exception_is_a_500_problem_without_its_text(routes, caplog):
    response = dispatcher(routes)(make_request("GET", "/boom"))
    assert response.status == 500
    assert_problem(response, 500)
    assert "SELECT" not in response.body.decode() and "secret" not in response.body.decode()
    # It is logged for the operator, with the route template rather than any data.
    assert any(record.name == "meditrack.errors" and record.exc_info for record in caplog.records)


def test_unexpected_exception_in_authenticate_is_a_500_problem(routes, calls):
    def authenticate(headers):
        raise ValueError("/srv/meditrack/data/jwt-secret is unreadable")

    response = dispatcher(routes, authenticate)(make_request("GET", "/me"))
    assert response.status == 500
    assert "jwt-secret" not in response.body.decode()
    assert calls.seen == []


def test_headers_are_found_without_regard_to_case_and_keep_every_value():
    headers = Headers()
    headers.add("X-Forwarded-For", "10.0.0.1")
    headers.add("x-forwarded-for", "10.0.0.2")
    assert headers.get("X-FORWARDED-FOR") == "10.0.0.1"
    assert headers.get_all("x-Forwarded-for") == ["10.0.0.1", "10.0.0.2"]
    assert headers.get("Missing", "fallback") == "fallback" and headers.get_all("Missing") is None
    assert headers.count == 2


def test_a_refusal_is_held_for_the_refusal_delay_but_never_past_the_wait():
    naps = []
    routes = Router()
    routes.add("GET", "/things", lambda request: Response(200))
    slow = dispatcher(routes, general_limit=RateLimiter(1, 8, clock=FakeClock()), sleep=naps.append,
                      refusal_delay=1.0)
    assert slow(make_request()).status == 200 and naps == []       # allowed: no delay
    assert slow(make_request()).status == 429 and naps == [1.0]    # refused: held 1 s (8 s to wait)
    quick = dispatcher(routes, general_limit=RateLimiter(4, 1, clock=FakeClock()), sleep=naps.append,
                       refusal_delay=1.0)
    for _ in range(4):
        quick(make_request())
    assert quick(make_request()).status == 429 and naps[-1] == 0.25  # never longer than Retry-After's wait


def test_errors_under_a_prefix_take_its_format_and_the_rest_keep_problem_json(routes):
    def plain_text(exc, statuses):
        return Response(status_for(exc, statuses), b"plain", [("Content-Type", "text/plain")])

    routes.add("GET", "/fhir/things/{thingId}", lambda request: Response(200))
    pipeline = dispatcher(routes, error_formats=[("/fhir/", plain_text)])
    for path, status in (("/fhir/nothing", 404), ("/boom", 500), ("/nothing", 404)):
        response = pipeline(make_request("GET", path))
        expected = "text/plain" if path.startswith("/fhir/") else "application/problem+json"
        assert (response.status, header(response, "Content-Type")) == (status, expected), path
    wrong_method = pipeline(make_request("DELETE", "/fhir/things/1"))
    assert (wrong_method.status, wrong_method.body) == (405, b"plain")
