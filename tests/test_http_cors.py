"""CORS against a live server (MEDITRACK_CORS_ORIGINS): a preflight and the real request
as a browser sends them, from an allowed origin and from another one."""

import pytest

from tests.support.api import ApiClient
from tests.support.records import PATIENT

APP = "http://127.0.0.1:5173"


@pytest.fixture(scope="module")
def server(tmp_path_factory, store_kind):
    from tests.conftest import LiveServer
    started = LiveServer(tmp_path_factory.mktemp("cors"), store_kind, cors_origins=frozenset({APP}))
    yield started
    started.stop()


@pytest.fixture
def client(server) -> ApiClient:
    return ApiClient(server.url).register_and_login()


def preflight(client, path: str, method: str, headers: str, origin: str = APP):
    return client.session.options(client.url + path, timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers})


def test_a_browsers_preflight_for_a_json_post_with_a_token_is_allowed(client):
    response = preflight(client, "/patients", "POST", "authorization,content-type")
    assert response.status_code == 204 and response.content == b""
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert set(response.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "HEAD", "POST"}
    allowed = response.headers["Access-Control-Allow-Headers"].split(", ")
    assert {"Authorization", "Content-Type", "If-Match", "If-None-Match"} <= set(allowed)  # the contract's four
    assert response.headers["Access-Control-Max-Age"] == "600" and response.headers["Vary"] == "Origin"


def test_the_real_request_exposes_location_etag_and_the_request_id(client):
    response = client.post("/patients", json=PATIENT, headers={"Origin": APP})
    assert response.status_code == 201
    assert response.headers["Access-Control-Allow-Origin"] == APP
    exposed = set(response.headers["Access-Control-Expose-Headers"].split(", "))
    assert {"Location", "ETag", "Retry-After", "X-Request-Id"} <= exposed  # the contract's four
    assert "Access-Control-Allow-Credentials" not in response.headers  # tokens, never cookies


def test_another_origin_gets_no_cors_header_at_all(client):
    for response in (preflight(client, "/patients", "POST", "authorization", origin="http://evil.example"),
                     client.get("/patients", headers={"Origin": "http://evil.example"})):
        assert not [name for name in response.headers if name.lower().startswith("access-control")]
        assert response.headers["Vary"] == "Origin"


def test_a_preflight_naming_a_header_the_api_does_not_take_gets_no_permission(client):
    response = preflight(client, "/patients", "POST", "authorization,x-debug")
    assert response.status_code == 204 and "Access-Control-Allow-Origin" not in response.headers


def test_an_error_to_the_allowed_origin_is_readable_by_its_page(client):
    response = client.get("/patients/0123456789abcdef01234567", headers={"Origin": APP})
    assert response.status_code == 404 and response.headers["Access-Control-Allow-Origin"] == APP


def test_without_the_setting_options_is_405_and_there_are_no_cors_headers(live_server):
    anonymous = ApiClient(live_server.url)
    response = preflight(anonymous, "/patients", "POST", "content-type")
    assert response.status_code == 405
    assert not [name for name in response.headers if name.lower().startswith("access-control")]


def test_a_resumed_download_from_the_allowed_origin_may_send_range_and_if_range(client):
    response = preflight(client, "/patients/0123456789abcdef01234567/reports/0123456789abcdef01234567", "GET",
                         "authorization,range,if-range")
    assert response.headers["Access-Control-Allow-Origin"] == APP
