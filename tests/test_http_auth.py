"""HTTP tests for /auth/register, /auth/login, /auth/me and bearer authentication."""

import threading
import time

import pytest

from settings import Settings
from storage.ids import new_id
from tests.support.api import TEST_SECRET, ApiClient
from tests.support.defaults import default_of
from tests.support.problems import assert_problem
from web import jwt

PASSWORD = "correct horse battery"


def test_register_answers_201_with_the_public_user(anonymous):
    response = anonymous.post("/auth/register", json={"username": "grace.h-1_x", "password": PASSWORD})
    assert response.status_code == 201
    user = response.json()
    assert set(user) == {"id", "username", "createdAt"}
    assert user["username"] == "grace.h-1_x" and len(user["id"]) == 24


def test_username_taken_ignoring_case_is_409(anonymous):
    assert anonymous.post("/auth/register", json={"username": "CaseUser", "password": PASSWORD}).status_code == 201
    assert_problem(anonymous.post("/auth/register", json={"username": "caseuser", "password": PASSWORD}), 409)


@pytest.mark.parametrize("body, field", [
    ({"username": "ab", "password": PASSWORD}, "username"),
    ({"username": "x" * 33, "password": PASSWORD}, "username"),
    ({"username": "has space", "password": PASSWORD}, "username"),
    ({"username": "émile", "password": PASSWORD}, "username"),
    ({"username": "shortpw", "password": "1234567"}, "password"),
    ({"username": "longpw", "password": "p" * 73}, "password"),
    # 40 characters, 80 bytes in UTF-8: bcrypt would silently ignore the last 8 bytes.
    ({"username": "bytespw", "password": "é" * 40}, "password"),
    ({"username": "nopw"}, "password"),
    ({"password": PASSWORD}, "username"),
    ({"username": "extra", "password": PASSWORD, "admin": True}, "admin"),
    ({"username": 12345, "password": PASSWORD}, "username"),
])
def test_invalid_credentials_are_400_with_field_errors(anonymous, body, field):
    details = assert_problem(anonymous.post("/auth/register", json=body), 400)
    assert field in [error["field"] for error in details["errors"]]


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'{"username": NaN}', b"\xff\xfe", b'"just a string"',
                                 b'{"username": "nul\\u0000user", "password": "correct horse"}'])
def test_malformed_json_bodies_are_400(anonymous, raw):
    response = anonymous.post("/auth/register", data=raw, headers={"Content-Type": "application/json"})
    assert_problem(response, 400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "",
                                          "application/json; charset=latin-1"])
def test_a_body_that_is_not_utf8_json_is_415(anonymous, content_type):
    response = anonymous.post("/auth/register", data=b'{"username":"x","password":"y"}',
                              headers={"Content-Type": content_type})
    assert_problem(response, 415)


def test_login_returns_a_bearer_token_that_authenticates(anonymous):
    anonymous.post("/auth/register", json={"username": "tokenuser", "password": PASSWORD})
    response = anonymous.post("/auth/login", json={"username": "TokenUser", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    token_ttl, refresh_ttl = default_of(Settings, "token_ttl"), default_of(Settings, "refresh_ttl")
    assert body["tokenType"] == "Bearer" and body["expiresIn"] == token_ttl
    assert body["refreshExpiresIn"] == refresh_ttl and body["refreshToken"]
    claims = jwt.verify(body["accessToken"], TEST_SECRET, now=time.time(), issuer="meditrack")
    me = anonymous.get("/auth/me", headers={"Authorization": f"Bearer {body['accessToken']}"})
    assert me.status_code == 200 and me.json()["username"] == "tokenuser"
    assert claims["sub"] == me.json()["id"] and claims["exp"] - claims["iat"] == token_ttl
    # The session the token belongs to, and the token's own id (RFC 7519 §4.1.7).
    assert body["refreshToken"].startswith(claims["sid"] + ".") and claims["jti"]


def test_wrong_password_and_unknown_user_get_the_same_401(anonymous):
    anonymous.post("/auth/register", json={"username": "knownuser", "password": PASSWORD})
    wrong_password = anonymous.post("/auth/login", json={"username": "knownuser", "password": "wrong password"})
    unknown_user = anonymous.post("/auth/login", json={"username": "nobodyhere", "password": PASSWORD})
    assert assert_problem(wrong_password, 401) == assert_problem(unknown_user, 401)
    assert wrong_password.headers["WWW-Authenticate"] == unknown_user.headers["WWW-Authenticate"]


def test_me_returns_the_logged_in_user(client):
    response = client.get("/auth/me")
    assert response.status_code == 200 and response.json() == client.user


def test_no_token_is_401_with_a_bearer_challenge(anonymous):
    response = anonymous.get("/auth/me")
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


def forged(claims, key=TEST_SECRET):
    return jwt.sign(claims, key)


def valid_claims(**changes):
    now = int(time.time())
    return {"sub": new_id(), "iat": now, "exp": now + 600, "iss": "meditrack", **changes}


@pytest.mark.parametrize("authorization", [
    "Bearer not-a-token",
    "Bearer a.b.c",
    "Basic dXNlcjpwYXNz",
    "Bearer",
    "Bearer " + "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.",  # alg: none
])
def test_bad_authorization_headers_are_401(anonymous, authorization):
    response = anonymous.get("/auth/me", headers={"Authorization": authorization})
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_token_signed_with_another_key_is_401(client):
    claims = valid_claims(sub=client.user["id"])
    response = client.get("/auth/me", headers={"Authorization": "Bearer " + forged(claims, b"k" * 32)})
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_an_expired_token_is_401(client):
    claims = valid_claims(sub=client.user["id"], iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    assert_problem(client.get("/auth/me", headers={"Authorization": "Bearer " + forged(claims)}), 401)


def test_a_token_from_another_issuer_is_401(client):
    claims = valid_claims(sub=client.user["id"], iss="someone-else")
    assert_problem(client.get("/auth/me", headers={"Authorization": "Bearer " + forged(claims)}), 401)


def test_a_token_whose_user_no_longer_exists_is_401(anonymous):
    # A correctly signed token for a user id that is not (or no longer) in the store.
    response = anonymous.get("/auth/me", headers={"Authorization": "Bearer " + forged(valid_claims())})
    assert_problem(response, 401)


def test_the_scheme_name_is_case_insensitive(client):
    token = client.session.headers["Authorization"].split(" ", 1)[1]
    fresh = ApiClient(client.url)
    assert fresh.get("/auth/me", headers={"Authorization": f"bearer {token}"}).status_code == 200


def test_no_more_password_hashes_run_at_once_than_there_are_hashing_slots(monkeypatch):
    from handlers import auth
    accounts = auth.Accounts(store=None, validator=None, jwt_key=TEST_SECRET, token_ttl=60,
                             refresh_ttl=60, bcrypt_rounds=4)
    running, peak, changed = [0], [0], threading.Condition()
    release = threading.Event()

    def slow_checkpw(password, password_hash):
        with changed:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            changed.notify_all()
        release.wait(30)
        with changed:
            running[0] -= 1
        return False

    monkeypatch.setattr(auth.bcrypt, "checkpw", slow_checkpw)
    threads = [threading.Thread(target=accounts.password_matches, args=(b"pw", b"hash")) for _ in range(8)]
    for thread in threads:
        thread.start()
    # Every thread is now either inside checkpw or queued for a slot; once every slot is
    # taken, let them all through. The wait is woken by each entry, not polled, and is
    # long (30 s) only so that a loaded machine cannot end it before the slots fill.
    with changed:
        changed.wait_for(lambda: running[0] >= auth.HASHING_CONCURRENCY, timeout=30)
    release.set()
    for thread in threads:
        thread.join(timeout=10)
    assert peak[0] == auth.HASHING_CONCURRENCY
