"""Download links (handlers/report_links.py): a URL that opens one report with a plain GET.

Made with the owner's token, opened with none, as a browser's `<img src>` would. Every
refusal case: a tampered token (each part), one moved onto another report, one whose
session ended in each of the four ways a session ends (logout, logout everywhere, a
password change, the account's erasure), one that expired (410, on the server's
injected clock) — and every refusal's body is the same, saying nothing of the file.
On both stores, and with report bytes in the object store under `make test-s3`. (In
headless Chromium as <img src>: tests/browser/.)
"""

import os
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.api import ApiClient
from tests.support.clock import FakeClock
from tests.support.problems import assert_problem
from tests.support.records import PATIENT
from tests.support.uploads import MULTIPART, PNG, file_part, multipart

DATA = b"%PDF-1.4\n" + os.urandom(40_000)


@pytest.fixture
def clock():
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def server(start_server, clock):
    return start_server(clock=clock)


def owner_with_report(server, data=DATA, filename="scan.pdf", content_type="application/pdf"):
    client = ApiClient(server.url).register_and_login()
    patient = client.post("/patients", json=PATIENT).json()
    body = multipart(file_part(data, filename, content_type))
    report = client.post(f"/patients/{patient['id']}/reports", data=body, headers={"Content-Type": MULTIPART}).json()
    return client, patient, report


def make_link(client, patient, report) -> dict:
    made = client.post(f"/patients/{patient['id']}/reports/{report['id']}/link")
    assert made.status_code == 201, made.text
    return made.json()


def plain_get(url: str, **headers):
    """A GET with no Authorization, as a browser opening <img src> sends it."""
    import requests
    return requests.get(url, headers=headers, timeout=10)


def with_token(url: str, token: str) -> str:
    return url.split("?token=")[0] + "?token=" + token


def test_a_link_opens_the_report_with_no_token_until_it_expires(server, clock):
    client, patient, report = owner_with_report(server)
    link = make_link(client, patient, report)
    assert link["expiresAt"] == "2027-01-15T08:05:00.000Z"  # the clock's now + 300 s
    parts = urlsplit(link["url"])
    assert parts.path == f"/patients/{patient['id']}/reports/{report['id']}/link"
    assert f"{parts.scheme}://{parts.netloc}" == server.url.replace("127.0.0.1", parts.hostname)
    opened = plain_get(link["url"])
    assert opened.status_code == 200 and opened.content == DATA
    assert opened.headers["Content-Type"] == "application/pdf"
    assert opened.headers["ETag"] == f'"{report["sha256"]}"'
    assert opened.headers["Cache-Control"] == "no-store" and opened.headers["X-Content-Type-Options"] == "nosniff"
    assert opened.headers["Content-Disposition"].startswith("attachment;")
    part = plain_get(link["url"], Range="bytes=10-19")
    assert part.status_code == 206 and part.content == DATA[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(DATA)}"
    assert plain_get(link["url"], **{"If-None-Match": f'"{report["sha256"]}"'}).status_code == 304
    clock.advance(299)
    assert plain_get(link["url"]).status_code == 200
    clock.advance(1)
    expired = assert_problem(plain_get(link["url"]), 410)
    assert "expired" in expired["detail"]


def test_the_link_lifetime_is_a_setting(start_server, clock):
    server = start_server(clock=clock, link_ttl=60)
    client, patient, report = owner_with_report(server)
    assert make_link(client, patient, report)["expiresAt"] == "2027-01-15T08:01:00.000Z"


def test_a_public_url_is_the_links_base(start_server, clock):
    server = start_server(clock=clock, public_url="https://records.example.org")
    client, patient, report = owner_with_report(server)
    assert make_link(client, patient, report)["url"].startswith(
        f"https://records.example.org/patients/{patient['id']}/reports/{report['id']}/link?token=")


def refusal_detail(response, status=403) -> str:
    return assert_problem(response, status)["detail"]


def test_tampered_moved_or_missing_tokens_are_403_and_say_nothing(server):
    client, patient, report = owner_with_report(server)
    _, _, other_report = owner_with_report(server)
    link = make_link(client, patient, report)
    token = parse_qs(urlsplit(link["url"]).query)["token"][0]
    session, user, expires, tag, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    tampered = {
        "signature": f"{session}.{user}.{expires}.{tag}.{flipped}",
        "expiry moved later": f"{session}.{user}.{int(expires) + 3600}.{tag}.{signature}",
        "another user": f"{session}.{'0' * 24}.{expires}.{tag}.{signature}",
        "another session": f"{'0' * 24}.{user}.{expires}.{tag}.{signature}",
        "another password tag": f"{session}.{user}.{expires}.{'A' * 16}.{signature}",
        "not a token": "hello",
        "empty": "",
    }
    details = set()
    for name, bad in tampered.items():
        details.add(refusal_detail(plain_get(with_token(link["url"], bad))))
    details.add(refusal_detail(plain_get(link["url"].split("?")[0])))  # no token at all
    details.add(refusal_detail(plain_get(link["url"] + "&token=" + token)))  # two tokens
    moved = link["url"].replace(report["id"], other_report["id"])  # onto another report's path
    details.add(refusal_detail(plain_get(moved)))
    assert details == {"this link is not valid, or no longer works; ask for a new one"}
    assert plain_get(link["url"]).status_code == 200  # the real one still works


def test_an_expired_link_that_was_tampered_with_is_403_not_410(server, clock):
    client, patient, report = owner_with_report(server)
    link = make_link(client, patient, report)
    clock.advance(301)
    token = parse_qs(urlsplit(link["url"]).query)["token"][0]
    session, user, expires, tag, signature = token.split(".")
    assert plain_get(with_token(link["url"], f"{session}.{user}.{expires}.{tag}.{signature[::-1]}")).status_code == 403
    assert plain_get(link["url"]).status_code == 410


@pytest.mark.parametrize("ending", ["logout", "logout everywhere", "password change", "erasure"])
def test_a_link_dies_with_its_session(server, ending):
    client, patient, report = owner_with_report(server)
    link = make_link(client, patient, report)
    assert plain_get(link["url"]).status_code == 200
    password = {"password": "correct horse battery"}
    if ending == "logout":
        assert client.post("/auth/logout").status_code == 204
    elif ending == "logout everywhere":
        assert client.delete("/auth/sessions").status_code == 204
    elif ending == "password change":
        changed = client.put("/auth/password", json={"currentPassword": "correct horse battery",
                                                     "newPassword": "a brand new passphrase"})
        assert changed.status_code == 204, changed.text
    else:
        assert client.request("DELETE", "/auth/me", json=password).status_code == 204
    assert refusal_detail(plain_get(link["url"])) == "this link is not valid, or no longer works; ask for a new one"


def test_only_the_owner_makes_a_link_and_a_deleted_report_has_none(server):
    client, patient, report = owner_with_report(server)
    stranger = ApiClient(server.url).register_and_login()
    assert_problem(stranger.post(f"/patients/{patient['id']}/reports/{report['id']}/link"), 403)
    assert_problem(ApiClient(server.url).post(f"/patients/{patient['id']}/reports/{report['id']}/link"), 401)
    assert_problem(client.post(f"/patients/{patient['id']}/reports/{'0' * 24}/link"), 404)
    link = make_link(client, patient, report)
    assert client.delete(f"/patients/{patient['id']}/reports/{report['id']}").status_code == 204
    assert_problem(plain_get(link["url"]), 404)


def test_opening_a_link_leaves_an_audit_event_naming_the_session(server):
    client, patient, report = owner_with_report(server)
    link = make_link(client, patient, report)
    session_id = parse_qs(urlsplit(link["url"]).query)["token"][0].split(".")[0]
    assert [each["id"] for each in client.get("/auth/sessions").json()["items"]] == [session_id]
    assert plain_get(link["url"]).status_code == 200
    events = client.get("/audit", params={"limit": 3}).json()["items"]
    opened, made = events[0], events[1]
    assert (opened["action"], opened["resourceType"], opened["resourceId"], opened["patientId"]) == (
        "download", "Report", report["id"], patient["id"])
    assert (opened["userId"], opened["sessionId"], opened["outcome"]) == (client.user["id"], session_id, 200)
    assert (made["action"], made["resourceType"], made["resourceId"], made["sessionId"]) == (
        "create", "Link", report["id"], session_id)


def test_a_png_link_is_served_as_an_image(server):
    client, patient, report = owner_with_report(server, PNG, "x-ray.png", "image/png")
    opened = plain_get(make_link(client, patient, report)["url"])
    assert opened.status_code == 200 and opened.content == PNG and opened.headers["Content-Type"] == "image/png"
