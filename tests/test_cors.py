"""CORS (WHATWG Fetch, "CORS protocol"): the policy's decisions, and the dispatcher's
preflights and response headers, without a server."""

import io

import pytest

from web.cors import ALLOWED_REQUEST_HEADERS, EXPOSED_HEADERS, CorsPolicy, parse_origins
from web.dispatch import Dispatcher
from web.http11 import Headers
from web.messages import IncomingRequest, Response
from web.router import Router

APP = "https://app.example.org"
POLICY = CorsPolicy(frozenset({APP, "http://127.0.0.1:5173"}))


def test_origins_are_parsed_lower_cased_and_refused_with_a_path_or_slash():
    assert parse_origins(" https://App.Example.org , http://127.0.0.1:5173") == {APP, "http://127.0.0.1:5173"}
    assert parse_origins("") == frozenset()
    for bad in ("app.example.org", "https://app.example.org/", "https://app.example.org/x", "ftp://a.b", "*",
                "https://app.example.org:443", "http://app.example.org:80"):  # a browser never sends a default port
        with pytest.raises(ValueError):
            parse_origins(bad)


def test_fetch_3_2_5_the_origin_is_compared_exactly():
    assert POLICY.allows(APP)
    assert not POLICY.allows("https://app.example.org:443")  # another serialization is another origin
    assert not POLICY.allows("https://evil.example.org") and not POLICY.allows(None) and not POLICY.allows("null")


def test_requested_header_names_are_compared_without_regard_to_case():
    # Fetch: a browser lists them lower-cased; HTTP field names are case-insensitive (RFC 9110 §5.1).
    answer = dict(POLICY.preflight_headers(APP, "GET", "Authorization, RANGE,if-range", ["GET", "HEAD"]))
    assert answer["Access-Control-Allow-Origin"] == APP


def test_a_preflight_from_an_allowed_origin_is_permitted_with_every_header_the_contract_names():
    answer = dict(POLICY.preflight_headers(APP, "PUT", "authorization, content-type, if-match", ["GET", "PUT"]))
    assert answer == {"Access-Control-Allow-Origin": APP, "Access-Control-Allow-Methods": "GET, PUT",
                      "Access-Control-Allow-Headers": ", ".join(ALLOWED_REQUEST_HEADERS),
                      "Access-Control-Max-Age": "600", "Vary": "Origin"}


@pytest.mark.parametrize("origin, method, requested", [
    ("https://evil.example.org", "GET", ""),       # not an allowed origin
    (APP, "DELETE", ""),                           # not a method of this resource
    (APP, "GET", "authorization, x-secret"),        # a header the API does not take
])
def test_a_preflight_that_asks_for_too_much_gets_no_permission(origin, method, requested):
    assert POLICY.preflight_headers(origin, method, requested, ["GET", "HEAD"]) == [("Vary", "Origin")]


def test_responses_to_an_allowed_origin_expose_the_headers_a_client_needs():
    assert dict(POLICY.response_headers(APP)) == {
        "Access-Control-Allow-Origin": APP, "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS),
        "Vary": "Origin"}
    assert POLICY.response_headers("https://evil.example.org") == [("Vary", "Origin")]
    assert POLICY.response_headers(None) == [("Vary", "Origin")]


# -- in the dispatcher -----------------------------------------------------------------------------

def request(method: str, path: str, headers: dict) -> IncomingRequest:
    message = Headers()
    for name, value in headers.items():
        message.add(name, value)
    return IncomingRequest(method=method, path=path, query={}, headers=message, body=io.BytesIO(b""),
                           content_length=0, peer="127.0.0.1")


@pytest.fixture
def handled() -> list:
    return []


def pipeline(handled, cors=POLICY):
    router = Router()
    router.add("GET", "/things", lambda request: handled.append(request) or Response(200, b"[]"))
    router.add("POST", "/things", lambda request: handled.append(request) or Response(201, b"{}"), auth=True)
    dispatcher = Dispatcher(router, max_body=1024, authenticate=lambda headers: {"id": "u"}, cors=cors)
    return lambda incoming: dispatcher(incoming)[0]


def test_a_preflight_is_answered_204_before_authentication_and_no_handler_runs(handled):
    response = pipeline(handled)(request("OPTIONS", "/things", {
        "Origin": APP, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}))
    assert response.status == 204 and handled == []
    assert dict(response.headers)["Access-Control-Allow-Methods"] == "GET, HEAD, POST"


def test_a_preflight_for_a_path_no_route_has_is_404(handled):
    response = pipeline(handled)(request("OPTIONS", "/nothing", {"Origin": APP, "Access-Control-Request-Method": "GET"}))
    assert response.status == 404


def test_without_a_policy_options_stays_a_405_and_no_cors_header_is_sent(handled):
    run = pipeline(handled, cors=None)
    response = run(request("OPTIONS", "/things", {"Origin": APP, "Access-Control-Request-Method": "GET"}))
    assert response.status == 405
    assert not any(name.startswith("Access-Control") or name == "Vary" for name, _ in run(
        request("GET", "/things", {"Origin": APP})).headers)


def test_errors_to_an_allowed_origin_carry_the_cors_headers_too(handled):
    response = pipeline(handled)(request("GET", "/nothing", {"Origin": APP}))
    assert response.status == 404 and dict(response.headers)["Access-Control-Allow-Origin"] == APP
