"""The audit trail over HTTP, on both stores: one event per audited request with the
right fields, who may read which event, what an event never holds, X-Request-Id, and
the audit API itself.

Each request's event is found by the X-Request-Id of its response; the events are read
from the store itself (every stored field, every chain), so "exactly one" and "never
holds" are checked against what is really kept, not against what GET /audit shows.
"""

import json
import re

import pytest

from tests.conftest import LiveServer
from tests.support.api import ApiClient
from tests.support.problems import assert_problem
from tests.support.raw_http import exchange
from tests.support.records import PATIENT
from tests.support.uploads import MULTIPART, PDF, file_part, multipart, part

REQUEST_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, store_kind):
    """A server of this module's own, so its audit trail holds only this module's events."""
    started = LiveServer(tmp_path_factory.mktemp("audit"), store_kind)
    yield started
    started.stop()


def all_events(server) -> list[dict]:
    assert server.audit_writer.flush(timeout=10)
    store = server.store
    return [event for chain in store.audit_chain_ids() for event in store.audit_events(chain)]


def events_of(server, response) -> list[dict]:
    request_id = response.headers["X-Request-Id"]
    return [event for event in all_events(server) if event["requestId"] == request_id]


def the_event(server, response) -> dict:
    """The one event a response's request left; its fields as the contract names them."""
    (event,) = events_of(server, response)
    return {name: event[name] for name in ("action", "outcome", "userId", "resourceType", "resourceId",
                                           "patientId", "clientAddress")}


def expected(action, outcome, user_id, resource_type, resource_id=None, patient_id=None) -> dict:
    return {"action": action, "outcome": outcome, "userId": user_id, "resourceType": resource_type,
            "resourceId": resource_id, "patientId": patient_id, "clientAddress": "127.0.0.1"}


def upload(client, patient_id, filename="scan.pdf", description=b"a scan"):
    body = multipart(file_part(PDF, filename), part("description", description))
    return client.post(f"/patients/{patient_id}/reports", data=body, headers={"Content-Type": MULTIPART})


def test_every_audited_request_leaves_exactly_one_event_with_the_right_fields(server):
    client = ApiClient(server.url)
    credentials = {"username": "audited-alice", "password": "correct horse battery"}
    registered = client.post("/auth/register", json=credentials)
    user = registered.json()["id"]
    assert the_event(server, registered) == expected("create", 201, user, "Account", user)

    wrong = client.post("/auth/login", json={**credentials, "password": "wrong password"})
    assert the_event(server, wrong) == expected("login-failed", 401, user, "Session")
    unknown = client.post("/auth/login", json={**credentials, "username": "nobody-by-this-name"})
    assert the_event(server, unknown) == expected("login-failed", 401, None, "Session")

    login = client.post("/auth/login", json=credentials)
    session = login.json()["refreshToken"].split(".")[0]
    assert the_event(server, login) == expected("login", 200, user, "Session", session)
    client.session.headers["Authorization"] = f"Bearer {login.json()['accessToken']}"

    created = client.post("/patients", json=PATIENT)
    patient = created.json()["id"]
    assert the_event(server, created) == expected("create", 201, user, "Patient", patient, patient)
    assert the_event(server, client.get("/patients?q=love")) == expected("search", 200, user, "Patient")
    assert the_event(server, client.get(f"/patients/{patient}")) == expected(
        "read", 200, user, "Patient", patient, patient)
    assert the_event(server, client.put(f"/patients/{patient}", json=PATIENT)) == expected(
        "update", 200, user, "Patient", patient, patient)

    uploaded = upload(client, patient)
    report = uploaded.json()["id"]
    assert the_event(server, uploaded) == expected("create", 201, user, "Report", report, patient)
    assert the_event(server, client.get(f"/patients/{patient}/reports")) == expected(
        "read", 200, user, "Report", None, patient)
    assert the_event(server, client.get(f"/patients/{patient}/reports/{report}")) == expected(
        "download", 200, user, "Report", report, patient)
    assert the_event(server, client.delete(f"/patients/{patient}/reports/{report}")) == expected(
        "delete", 204, user, "Report", report, patient)
    assert the_event(server, client.delete(f"/patients/{patient}")) == expected(
        "delete", 204, user, "Patient", patient, patient)
    assert the_event(server, client.get(f"/patients/{patient}")) == expected(
        "read", 404, user, "Patient", patient, patient)

    refreshed = client.post("/auth/refresh", json={"refreshToken": login.json()["refreshToken"]})
    assert the_event(server, refreshed) == expected("refresh", 200, user, "Session", session)
    client.session.headers["Authorization"] = f"Bearer {refreshed.json()['accessToken']}"
    changed = client.put("/auth/password", json={"currentPassword": credentials["password"],
                                                 "newPassword": "another horse battery"})
    assert the_event(server, changed) == expected("password-change", 204, user, "Account", user)

    second = ApiClient(server.url).post("/auth/login", json={**credentials, "password": "another horse battery"})
    other_session = second.json()["refreshToken"].split(".")[0]
    assert the_event(server, client.delete(f"/auth/sessions/{other_session}")) == expected(
        "logout", 204, user, "Session", other_session)
    assert the_event(server, client.delete("/auth/sessions")) == expected("logout", 204, user, "Session")

    third = ApiClient(server.url).post("/auth/login", json={**credentials, "password": "another horse battery"})
    client.session.headers["Authorization"] = f"Bearer {third.json()['accessToken']}"
    assert the_event(server, client.post("/auth/logout")) == expected(
        "logout", 204, user, "Session", third.json()["refreshToken"].split(".")[0])

    fourth = ApiClient(server.url).post("/auth/login", json={**credentials, "password": "another horse battery"})
    client.session.headers["Authorization"] = f"Bearer {fourth.json()['accessToken']}"
    erased = client.delete("/auth/me", json={"password": "another horse battery"})
    assert the_event(server, erased) == expected("account-delete", 204, user, "Account", user)
    # Erasure removes the account and its patients, never its audit events.
    assert any(event["userId"] == user and event["action"] == "create" for event in all_events(server))


def test_versions_and_conditional_writes_are_audited_with_their_outcome(server):
    client = ApiClient(server.url).register_and_login()
    user = client.user["id"]
    patient = client.post("/patients", json=PATIENT).json()["id"]
    client.put(f"/patients/{patient}", json=PATIENT)
    stale = client.put(f"/patients/{patient}", json=PATIENT, headers={"If-Match": '"1"'})
    assert the_event(server, stale) == expected("update", 412, user, "Patient", patient, patient)
    patched = client.request("PATCH", f"/patients/{patient}", json={"notes": "x"},
                             headers={"Content-Type": "application/merge-patch+json", "If-Match": '"2"'})
    assert the_event(server, patched) == expected("update", 200, user, "Patient", patient, patient)
    assert the_event(server, client.get(f"/patients/{patient}/versions")) == expected(
        "read", 200, user, "Patient", patient, patient)
    assert the_event(server, client.get(f"/patients/{patient}/versions/1")) == expected(
        "read", 200, user, "Patient", patient, patient)
    not_modified = client.get(f"/patients/{patient}", headers={"If-None-Match": '"3"'})
    assert the_event(server, not_modified) == expected("read", 304, user, "Patient", patient, patient)
    report = upload(client, patient).json()["id"]
    ranged = client.get(f"/patients/{patient}/reports/{report}", headers={"Range": "bytes=0-3"})
    assert the_event(server, ranged) == expected("download", 206, user, "Report", report, patient)


def test_a_write_refused_for_want_of_if_match_is_audited_as_428(start_server):
    strict = start_server(require_if_match=True)
    client = ApiClient(strict.url).register_and_login()
    patient = client.post("/patients", json=PATIENT).json()["id"]
    refused = client.delete(f"/patients/{patient}")
    assert the_event(strict, refused) == expected("delete", 428, client.user["id"], "Patient", patient, patient)


def test_requests_that_touch_no_patient_data_leave_no_event(server):
    client = ApiClient(server.url).register_and_login()
    for response in (client.get("/auth/me"), client.get("/auth/sessions"), client.get("/health"),
                     client.get("/openapi.json"), client.get("/audit"), client.get("/nowhere")):
        assert events_of(server, response) == [], response.request.path_url


def test_another_users_refused_attempt_shows_in_the_owners_audit_and_in_their_own(server):
    owner = ApiClient(server.url).register_and_login()
    intruder = ApiClient(server.url).register_and_login()
    bystander = ApiClient(server.url).register_and_login()
    patient = owner.post("/patients", json=PATIENT).json()["id"]

    refused = intruder.get(f"/patients/{patient}")
    assert refused.status_code == 403
    request_id = refused.headers["X-Request-Id"]
    seen_by_owner = owner.get(f"/patients/{patient}/audit").json()["items"]
    assert [event["requestId"] for event in seen_by_owner][:1] == [request_id]
    assert seen_by_owner[0]["userId"] == intruder.user["id"] and seen_by_owner[0]["outcome"] == 403
    assert request_id in [event["requestId"] for event in owner.get("/audit").json()["items"]]
    assert request_id in [event["requestId"] for event in intruder.get("/audit").json()["items"]]
    assert bystander.get("/audit").json()["items"] == [event for event in bystander.get("/audit").json()["items"]
                                                      if event["userId"] == bystander.user["id"]]
    assert request_id not in json.dumps(bystander.get("/audit?limit=100").json())
    # The intruder may not read the patient's audit either.
    assert_problem(intruder.get(f"/patients/{patient}/audit"), 403)


def test_a_request_without_a_token_is_recorded_against_the_patient_it_tried(server):
    owner = ApiClient(server.url).register_and_login()
    patient = owner.post("/patients", json=PATIENT).json()["id"]
    anonymous = ApiClient(server.url).get(f"/patients/{patient}")
    assert anonymous.status_code == 401
    assert the_event(server, anonymous) == expected("read", 401, None, "Patient", patient, patient)
    assert anonymous.headers["X-Request-Id"] in [
        event["requestId"] for event in owner.get(f"/patients/{patient}/audit").json()["items"]]


def test_no_event_holds_a_name_a_filename_a_description_a_search_term_or_a_token(server):
    client = ApiClient(server.url).register_and_login(username="zyxwuser", password="Pa55-zyxwvut-secret")
    secrets = {"Zyxwvutsrq", "Qponmlkjih", "zyxwvut@example.org", "+44 20 7946 0999", "Zyxw Street 9",
               "Zyxwville", "secret-diagnosis-zyxw", "private-note-zyxw", "mri-zyxwvut.pdf", "about-zyxwvut",
               "Pa55-zyxwvut-secret", "zyxwuser"}
    patient = client.post("/patients", json={
        "firstName": "Zyxwvutsrq", "lastName": "Qponmlkjih", "dateOfBirth": "1990-01-01",
        "email": "zyxwvut@example.org", "phone": "+44 20 7946 0999",
        "address": {"line": "Zyxw Street 9", "city": "Zyxwville"},
        "allergies": ["secret-diagnosis-zyxw"], "notes": "private-note-zyxw"}).json()["id"]
    client.get("/patients?q=Zyxwvutsrq")
    client.get("/patients/Zyxwvutsrq")  # a name where an id belongs
    upload(client, patient, filename="mri-zyxwvut.pdf", description=b"about-zyxwvut")
    client.post("/auth/login", json={"username": "zyxwuser", "password": "wrong-zyxwvut-guess"})
    client.post("/auth/login", json={"username": "nozyxwuser", "password": "Pa55-zyxwvut-secret"})
    secrets |= {"wrong-zyxwvut-guess", "nozyxwuser", client.session.headers["Authorization"].split()[1]}

    stored = json.dumps(all_events(server), ensure_ascii=False).casefold()
    for secret in secrets:
        assert secret.casefold() not in stored, f"{secret!r} is in the audit trail"


def test_the_audit_filters_by_patient_and_action_and_pages_newest_first(server):
    client = ApiClient(server.url).register_and_login()
    first = client.post("/patients", json=PATIENT).json()["id"]
    second = client.post("/patients", json=PATIENT).json()["id"]
    reads = [client.get(f"/patients/{first}").headers["X-Request-Id"] for _ in range(5)]
    client.get(f"/patients/{second}")

    seen, cursor = [], None
    while True:
        page = client.get("/audit", params={"patientId": first, "action": "read", "limit": 2,
                                            **({"cursor": cursor} if cursor else {})}).json()
        seen += [event["requestId"] for event in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == reads[::-1]
    only_second = client.get(f"/patients/{second}/audit").json()["items"]
    assert [event["action"] for event in only_second] == ["read", "create"]
    assert {event["patientId"] for event in only_second} == {second}


@pytest.mark.parametrize("query", ["action=peek", "patientId=not-an-id", "cursor=zzz", "limit=0", "limit=101",
                                   "action=read&action=search"])
def test_a_malformed_audit_query_is_400(server, query):
    client = ApiClient(server.url).register_and_login()
    assert_problem(client.get(f"/audit?{query}"), 400)


def test_a_patients_audit_is_404_for_no_such_patient_and_401_without_a_token(server):
    client = ApiClient(server.url).register_and_login()
    assert_problem(client.get("/patients/0123456789abcdef01234567/audit"), 404)
    assert_problem(ApiClient(server.url).get("/audit"), 401)


# -- X-Request-Id --------------------------------------------------------------------------

def test_every_response_carries_a_fresh_request_id(server):
    client = ApiClient(server.url)
    responses = [client.get("/health"), client.get("/nowhere"), client.post("/health"),
                 client.get("/patients"), client.get("/docs")]
    ids = [response.headers["X-Request-Id"] for response in responses]
    assert all(REQUEST_ID.fullmatch(request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)
    refused = exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    assert refused.status == 400 and REQUEST_ID.fullmatch(refused.header("X-Request-Id"))


def test_a_clients_own_request_id_is_not_believed(server):
    response = ApiClient(server.url).get("/health", headers={"X-Request-Id": "chosen-by-the-client"})
    assert REQUEST_ID.fullmatch(response.headers["X-Request-Id"])


def test_a_trusted_proxys_request_id_is_used_when_well_formed(start_server):
    server = start_server(trusted_proxies=frozenset({"127.0.0.1"}))
    client = ApiClient(server.url).register_and_login()
    response = client.get("/patients", headers={"X-Request-Id": "proxy-7f3a:41"})
    assert response.headers["X-Request-Id"] == "proxy-7f3a:41"
    assert events_of(server, response)[0]["action"] == "search"
    for unusable in ("x" * 129, "has space", "tab\there", "é"):
        response = client.get("/health", headers={"X-Request-Id": unusable.encode("utf-8")})
        assert REQUEST_ID.fullmatch(response.headers["X-Request-Id"]), unusable


# -- refusals and back-pressure ----------------------------------------------------------

def test_a_rate_limited_login_is_recorded_as_a_failed_login(start_server):
    server = start_server(auth_rate_limit=(1, 60.0))
    client = ApiClient(server.url)
    client.post("/auth/login", json={"username": "nobody1", "password": "whatever-it-is"})
    limited = client.post("/auth/login", json={"username": "nobody1", "password": "whatever-it-is"})
    assert limited.status_code == 429
    assert the_event(server, limited) == expected("login-failed", 429, None, "Session")


def test_a_login_refused_by_the_username_lock_names_the_account_it_tried(start_server):
    server = start_server()
    owner = ApiClient(server.url).register_and_login(username="locked-out-owner")
    guesser = ApiClient(server.url)
    for _ in range(5):  # the back-off locks a username after five failures
        guesser.post("/auth/login", json={"username": "locked-out-owner", "password": "a wrong guess"})
    locked = guesser.post("/auth/login", json={"username": "locked-out-owner", "password": "a wrong guess"})
    assert locked.status_code == 429
    assert the_event(server, locked) == expected("login-failed", 429, owner.user["id"], "Session")
    assert locked.headers["X-Request-Id"] in [event["requestId"] for event in owner.get("/audit").json()["items"]]


def test_while_the_audit_queue_is_full_audited_requests_are_refused_and_the_rest_served(start_server):
    server = start_server()
    client = ApiClient(server.url).register_and_login()
    patient = client.post("/patients", json=PATIENT).json()["id"]
    server.audit_writer.max_backlog = 0  # as if the store had refused events for a long while
    refused = client.get(f"/patients/{patient}")
    assert_problem(refused, 503)
    assert refused.headers["Retry-After"]
    health = client.get("/health").json()
    assert health["audit"]["dropped"] >= 1  # the refusal's own event could not be queued either
    server.audit_writer.max_backlog = 1000
    assert client.get(f"/patients/{patient}").status_code == 200


def test_health_reports_the_audit_backlog(server):
    assert server.audit_writer.flush(timeout=10)
    assert ApiClient(server.url).get("/health").json()["audit"] == {"backlog": 0, "dropped": 0, "quarantined": 0}
