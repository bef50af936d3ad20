"""HTTP tests for sessions: refresh rotation and reuse, logout, the session list, password
change and account erasure, on every store.

Each attack on the session mechanism has a test here: a retired refresh token replayed,
sixteen refreshes racing with one token, a refresh token that expired, is malformed, or
is sent where an access token belongs (and the other way round), a token used after
logout on another MediTrack process, another user's session id.
"""

import threading
import time

import pytest

from tests.support.api import ApiClient
from tests.support.clock import FakeClock
from tests.support.defaults import default_of
from tests.support.problems import assert_problem
from tests.support.records import PATIENT
from tests.support.stores import user_row_exists
from tests.support.uploads import PDF
from handlers.backoff import FailureBackoff

PASSWORD = "correct horse battery"
NEW_PASSWORD = "tr0ub4dor & 3 staples"
_names = iter(range(10**6))


def register(server, username: str | None = None) -> str:
    username = username or f"session{next(_names)}"
    response = ApiClient(server.url).post("/auth/register", json={"username": username, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return username


def login(server, username: str, password: str = PASSWORD) -> dict:
    response = ApiClient(server.url).post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def as_bearer(server, pair: dict) -> ApiClient:
    client = ApiClient(server.url)
    client.session.headers["Authorization"] = f"Bearer {pair['accessToken']}"
    return client


def refresh(server, refresh_token):
    return ApiClient(server.url).post("/auth/refresh", json={"refreshToken": refresh_token})


def status_of_me(server, pair: dict) -> int:
    return as_bearer(server, pair).get("/auth/me").status_code


@pytest.fixture
def user(live_server) -> tuple[str, dict]:
    """A fresh username and the token pair of its first login."""
    username = register(live_server)
    return username, login(live_server, username)


# --- refresh ----------------------------------------------------------------------------


def test_refresh_gives_a_new_pair_for_the_same_session_and_retires_the_old_token(live_server, user):
    _, pair = user
    response = refresh(live_server, pair["refreshToken"])
    assert response.status_code == 200
    fresh = response.json()
    assert fresh.keys() == pair.keys() and fresh["refreshToken"] != pair["refreshToken"]
    assert fresh["refreshToken"].split(".")[0] == pair["refreshToken"].split(".")[0]  # the same session
    assert status_of_me(live_server, fresh) == 200
    assert refresh(live_server, fresh["refreshToken"]).status_code == 200  # the new one works, once


def test_a_reused_refresh_token_is_an_event_in_its_owners_audit_trail(live_server, user):
    # The theft signal: the owner must see it, so the event names the owner, whoever sent it.
    username, pair = user
    refresh(live_server, pair["refreshToken"])
    assert refresh(live_server, pair["refreshToken"]).status_code == 401  # reuse: the session ends
    forged = pair["refreshToken"].split(".")[0] + "." + "A" * 43
    assert refresh(live_server, forged).status_code == 401                # never issued: no one's
    assert live_server.audit_writer.flush(timeout=10)
    owner = as_bearer(live_server, login(live_server, username))
    events = [event for event in owner.get("/audit?action=refresh").json()["items"]]
    assert [(event["outcome"], event["userId"]) for event in events] == [
        (401, owner.get("/auth/me").json()["id"]), (200, owner.get("/auth/me").json()["id"])]


def test_rfc9700_a_retired_refresh_token_presented_again_ends_the_whole_session(live_server, user):
    _, pair = user
    fresh = refresh(live_server, pair["refreshToken"]).json()
    replayed = refresh(live_server, pair["refreshToken"])  # the thief, or the owner after a thief
    assert_problem(replayed, 401)
    # Every token of the session is dead: the newest access token and refresh token too.
    assert status_of_me(live_server, fresh) == 401
    assert_problem(refresh(live_server, fresh["refreshToken"]), 401)


def test_sixteen_refreshes_racing_with_one_token_yield_exactly_one_new_pair(live_server, user):
    _, pair = user
    start, statuses = threading.Barrier(16), []

    def race():
        start.wait()
        statuses.append(refresh(live_server, pair["refreshToken"]).status_code)

    threads = [threading.Thread(target=race) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [200] + [401] * 15
    # The losers were reuse: the session has ended, the winner's pair with it.
    assert status_of_me(live_server, pair) == 401


@pytest.mark.parametrize("token", [
    "", "not-a-token", "0" * 24, "0" * 24 + "." + "A" * 42, "0" * 24 + "." + "A" * 44,
    "0" * 24 + ".A" + "*" * 42, "0" * 23 + "g." + "A" * 43,
], ids=["empty", "words", "id-only", "short-secret", "long-secret", "bad-alphabet", "bad-id"])
def test_a_malformed_refresh_token_is_401_and_changes_nothing(live_server, user, token):
    _, pair = user
    assert_problem(refresh(live_server, token), 401)
    assert status_of_me(live_server, pair) == 200


def test_a_forged_secret_for_a_real_session_is_401_and_does_not_end_the_session(live_server, user):
    # A session id is no secret (ids are ObjectIds, which can be guessed): knowing one
    # must not be enough to log its owner out. Only a token the session did issue, used
    # a second time, ends it.
    _, pair = user
    session_id = pair["refreshToken"].split(".")[0]
    assert_problem(refresh(live_server, f"{session_id}.{'A' * 43}"), 401)
    assert status_of_me(live_server, pair) == 200
    assert refresh(live_server, pair["refreshToken"]).status_code == 200


def test_an_access_token_sent_as_a_refresh_token_is_401_and_changes_nothing(live_server, user):
    _, pair = user
    assert_problem(refresh(live_server, pair["accessToken"]), 401)
    assert status_of_me(live_server, pair) == 200
    assert refresh(live_server, pair["refreshToken"]).status_code == 200


def test_a_refresh_token_sent_as_a_bearer_token_is_401_and_changes_nothing(live_server, user):
    _, pair = user
    response = as_bearer(live_server, {"accessToken": pair["refreshToken"]}).get("/auth/me")
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert refresh(live_server, pair["refreshToken"]).status_code == 200


@pytest.mark.parametrize("body", [{}, {"refreshToken": 5}, {"refreshToken": "x", "extra": 1}])
def test_a_refresh_body_that_breaks_the_schema_is_400(live_server, body):
    assert_problem(ApiClient(live_server.url).post("/auth/refresh", json=body), 400)


def test_an_expired_refresh_token_is_401_and_its_session_is_over(start_server):
    clock = FakeClock(time.time())
    # An access token that outlives its session's refresh token, to see the session end.
    server = start_server(clock=clock, refresh_ttl=3600, token_ttl=7200)
    pair = login(server, register(server))
    clock.advance(3599)
    assert status_of_me(server, pair) == 200
    clock.advance(1)
    assert_problem(refresh(server, pair["refreshToken"]), 401)
    assert status_of_me(server, pair) == 401


def test_refreshing_never_extends_a_session_past_its_login_plus_the_refresh_ttl(start_server):
    clock = FakeClock(time.time())
    server = start_server(clock=clock, refresh_ttl=3600, token_ttl=600)
    pair = login(server, register(server))
    clock.advance(3000)
    fresh = refresh(server, pair["refreshToken"]).json()
    assert fresh["refreshExpiresIn"] == 600  # what is left of the hour, not a new hour
    clock.advance(600)
    assert_problem(refresh(server, fresh["refreshToken"]), 401)
    assert status_of_me(server, fresh) == 401


def test_last_used_moves_at_most_once_a_minute(start_server):
    clock = FakeClock(time.time())
    server = start_server(clock=clock, token_ttl=3600)
    client = as_bearer(server, login(server, register(server)))

    def last_used() -> str:
        return client.get("/auth/sessions").json()["items"][0]["lastUsedAt"]

    first = last_used()
    clock.advance(30)
    assert last_used() == first   # used again within the minute: not written
    clock.advance(31)
    client.get("/auth/me")        # more than a minute after the last write
    assert last_used() > first


# --- logout and the session list ----------------------------------------------------------


def test_logout_makes_the_same_access_token_401_at_once(live_server, user):
    _, pair = user
    client = as_bearer(live_server, pair)
    assert client.post("/auth/logout").status_code == 204
    response = client.get("/auth/me")
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert_problem(refresh(live_server, pair["refreshToken"]), 401)


def test_a_logout_on_one_server_is_honoured_by_another_on_the_same_store(start_server):
    # Two servers with stores of their own (their own connections, token caches and
    # back-off) on one data directory or one MongoDB database: what two processes share.
    first = start_server()
    second = start_server(data_dir=first.settings.data_dir, mongodb_uri=first.settings.mongodb_uri,
                          keep_database=True)
    pair = login(first, register(first))
    assert status_of_me(second, pair) == 200  # the second process knows the session
    assert as_bearer(first, pair).post("/auth/logout").status_code == 204
    assert status_of_me(second, pair) == 401  # ... and that it has ended: no grace period


def test_sessions_lists_each_login_newest_first_and_marks_the_current_one(live_server):
    username = register(live_server)
    older, newer = login(live_server, username), login(live_server, username)
    items = as_bearer(live_server, older).get("/auth/sessions").json()["items"]
    assert [item["id"] for item in items] == [newer["refreshToken"][:24], older["refreshToken"][:24]]
    assert [item["current"] for item in items] == [False, True]
    assert all(item.keys() == {"id", "createdAt", "lastUsedAt", "current"} for item in items)


def test_ending_one_session_leaves_the_others(live_server):
    username = register(live_server)
    laptop, phone = login(live_server, username), login(live_server, username)
    response = as_bearer(live_server, phone).delete(f"/auth/sessions/{laptop['refreshToken'][:24]}")
    assert response.status_code == 204
    assert status_of_me(live_server, laptop) == 401 and status_of_me(live_server, phone) == 200


def test_another_users_session_is_404_and_is_not_ended(live_server, user):
    _, pair = user
    stranger = login(live_server, register(live_server))
    response = as_bearer(live_server, stranger).delete(f"/auth/sessions/{pair['refreshToken'][:24]}")
    assert_problem(response, 404)
    assert status_of_me(live_server, pair) == 200


def test_a_malformed_session_id_is_400(live_server, user):
    assert_problem(as_bearer(live_server, user[1]).delete("/auth/sessions/not-an-id"), 400)


def test_ending_every_session_ends_this_one_too(live_server):
    username = register(live_server)
    pairs = [login(live_server, username) for _ in range(3)]
    assert as_bearer(live_server, pairs[0]).delete("/auth/sessions").status_code == 204
    assert [status_of_me(live_server, pair) for pair in pairs] == [401, 401, 401]


# --- password change ------------------------------------------------------------------------


def change_password(server, pair, current=PASSWORD, new=NEW_PASSWORD):
    return as_bearer(server, pair).put("/auth/password", json={"currentPassword": current, "newPassword": new})


def test_a_password_change_ends_every_other_session_but_not_this_one(live_server):
    username = register(live_server)
    this, other = login(live_server, username), login(live_server, username)
    assert change_password(live_server, this).status_code == 204
    assert status_of_me(live_server, this) == 200 and status_of_me(live_server, other) == 401
    assert_problem(refresh(live_server, other["refreshToken"]), 401)
    assert ApiClient(live_server.url).post("/auth/login", json={"username": username, "password": PASSWORD}) \
        .status_code == 401
    login(live_server, username, NEW_PASSWORD)


def test_a_wrong_current_password_is_403_changes_nothing_and_counts_as_a_failed_login(start_server):
    server = start_server()
    username = register(server)
    this, other = login(server, username), login(server, username)
    free_failures = default_of(FailureBackoff, "free_failures")
    for _ in range(free_failures):
        assert_problem(change_password(server, this, current="not my password"), 403)
    assert status_of_me(server, other) == 200
    # The failures count against the username, exactly as failed logins do.
    assert_problem(change_password(server, this, current="not my password"), 429)
    assert_problem(ApiClient(server.url).post("/auth/login", json={"username": username, "password": PASSWORD}),
                   429)


@pytest.mark.parametrize("body", [
    {"currentPassword": PASSWORD, "newPassword": "short"},
    {"currentPassword": PASSWORD, "newPassword": "é" * 37},  # 74 bytes in UTF-8
    {"currentPassword": PASSWORD},
    {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD, "username": "x"},
], ids=["too-short", "over-72-bytes", "missing", "unknown-field"])
def test_a_new_password_that_breaks_the_register_rules_is_400(live_server, user, body):
    assert_problem(as_bearer(live_server, user[1]).put("/auth/password", json=body), 400)
    login(live_server, user[0])  # the old password still works


# --- account erasure ---------------------------------------------------------------------------


def everything_of(server, user_id: str, username: str) -> dict:
    """What the store holds for a user: its row, sessions, patients and report bytes."""
    store = server.store
    return {"user": store.find_user(username) is not None, "sessions": len(store.list_sessions(user_id)),
            "patients": len(store.list_patients(user_id, limit=1000)), "reports": store.stored_report_ids()}


def test_erasing_the_account_leaves_no_row_file_or_chunk_and_keeps_other_users_data(live_server):
    neighbour = as_bearer(live_server, login(live_server, register(live_server)))
    neighbour_patient = neighbour.post("/patients", json=PATIENT).json()
    upload = {"file": ("scan.pdf", PDF, "application/pdf")}
    assert neighbour.post(f"/patients/{neighbour_patient['id']}/reports", files=upload).status_code == 201
    username = register(live_server)
    pair = login(live_server, username)
    login(live_server, username)
    client = as_bearer(live_server, pair)
    user_id = client.get("/auth/me").json()["id"]
    reports_before = live_server.store.stored_report_ids()
    for _ in range(3):
        patient = client.post("/patients", json=PATIENT).json()
        for _ in range(2):
            assert client.post(f"/patients/{patient['id']}/reports", files=upload).status_code == 201
    assert everything_of(live_server, user_id, username)["patients"] == 3
    assert len(live_server.store.stored_report_ids()) == len(reports_before) + 6

    assert client.delete("/auth/me", json={"password": PASSWORD}).status_code == 204
    assert everything_of(live_server, user_id, username) == {"user": False, "sessions": 0, "patients": 0,
                                                              "reports": reports_before}
    assert not user_row_exists(live_server.store, user_id)  # gone, not just hidden
    assert status_of_me(live_server, pair) == 401
    assert_problem(ApiClient(live_server.url).post("/auth/login", json={"username": username, "password": PASSWORD}),
                   401)
    assert neighbour.get(f"/patients/{neighbour_patient['id']}").json()["reports"]  # untouched


def test_erasing_with_a_wrong_password_is_403_and_erases_nothing(live_server, user):
    username, pair = user
    client = as_bearer(live_server, pair)
    client.post("/patients", json=PATIENT)
    assert_problem(client.delete("/auth/me", json={"password": "not my password"}), 403)
    assert len(client.get("/patients").json()["items"]) == 1
    assert_problem(client.delete("/auth/me"), 415)  # no body at all: the password is required


def test_an_erased_username_can_be_registered_again_as_a_new_account(live_server, user):
    username, pair = user
    old_id = as_bearer(live_server, pair).get("/auth/me").json()["id"]
    assert as_bearer(live_server, pair).delete("/auth/me", json={"password": PASSWORD}).status_code == 204
    register(live_server, username)
    fresh = as_bearer(live_server, login(live_server, username))
    assert fresh.get("/auth/me").json()["id"] != old_id and fresh.get("/patients").json()["items"] == []
