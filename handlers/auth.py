"""Accounts: register, log in, who am I, change the password, erase the account; and
`authenticate` for protected routes.

Passwords are stored only as bcrypt hashes. A login starts a *session* and answers
with a pair of tokens: a short-lived HS256 JWT (`web/jwt.py`) that the client sends
back as `Authorization: Bearer <token>` (RFC 6750 §2.1), and an opaque refresh token
that buys the next pair (`handlers/sessions.py`). Every request checks that its
token's session is still alive, so ending a session ends its tokens at once.

`Accounts` holds what these handlers depend on; each handler takes it as its first
argument (bound when the route table is built), so its dependencies are in plain sight.
"""

import hashlib
import hmac
import secrets
import threading
import time
import unicodedata
from datetime import datetime

import bcrypt

import system
from handlers.backoff import FailureBackoff
from handlers.inputs import read_json
from handlers.tokens import ISSUER, new_refresh_secret, parse_refresh_token, refresh_digest, verify_access_token
from storage.base import Store, utc_timestamp
from web import jwt
from web.http11 import Headers
from web.messages import Request, Response, json_response
from web.problems import Forbidden, TooManyRequests, Unauthorized, bearer_challenge
from web.ratelimit import retry_after_header
from web.validation import SchemaValidator, ValidationError

BCRYPT_MAX_BYTES = 72  # bcrypt reads at most 72 bytes of a password and ignores the rest
PASSWORD_FIELDS = {"password", "currentPassword", "newPassword"}
WRONG_CREDENTIALS = "the username or password is wrong"  # the same for an unknown name and a wrong password
LAST_USED_PRECISION = 60  # seconds: a session's lastUsedAt is written at most this often


# NOTE: bcrypt releases the GIL, so N hashes at once keep N cores busy for a quarter of
# a second each. Letting at most half the cores hash at any moment keeps the other half
# for everyone else during a login storm; logins queue for a slot instead.
HASHING_CONCURRENCY = max(1, system.cpu_count() // 2)


def public_user(user: dict) -> dict:
    return {"id": user["id"], "username": user["username"], "createdAt": user["createdAt"]}


class Accounts:
    """Everything accounts and sessions need, in one place: the store, the key that
    signs and verifies tokens, the per-username back-off, the slots
    that bound how many passwords are hashed at once, and the dummy hash an unknown
    username is checked against."""

    def __init__(self, store: Store, validator: SchemaValidator, *, jwt_key: bytes, token_ttl: int,
                 refresh_ttl: int, bcrypt_rounds: int, clock=time.time, backoff: FailureBackoff | None = None):
        self.store = store
        self.validator = validator
        self.jwt_key = jwt_key
        self.token_ttl = token_ttl
        self.refresh_ttl = refresh_ttl
        self.bcrypt_rounds = bcrypt_rounds
        self.clock = clock
        # The failures are logged in the store, so every worker (and every instance on
        # one MongoDB) counts them together.
        self.backoff = backoff or FailureBackoff(log=store, clock=clock)
        self.hashing_slots = threading.BoundedSemaphore(HASHING_CONCURRENCY)
        # What a login for an unknown username is checked against (see `verify_password`).
        self.dummy_password_hash = bcrypt.hashpw(b"not a real password", bcrypt.gensalt(bcrypt_rounds))

    # -- passwords -----------------------------------------------------------------
    def hash_password(self, password: bytes) -> bytes:
        with self.hashing_slots:
            return bcrypt.hashpw(password, bcrypt.gensalt(rounds=self.bcrypt_rounds))

    def password_matches(self, password: bytes, password_hash: bytes) -> bool:
        with self.hashing_slots:
            return bcrypt.checkpw(password, password_hash)

    def verify_password(self, username: str, password: bytes, facts: dict | None = None) -> dict | None:
        """The user, if `password` is theirs; None if not (a failed login, counted
        against the username); 429 while the username is locked by the back-off.
        An existing user's id is left in `facts` for the audit trail, right password or
        wrong; an unknown username leaves nothing (and is never recorded)."""
        # NOTE: the store logs failures under an HMAC of the name, not the name itself:
        # failed logins are where mistyped names, and passwords typed into the name
        # field, turn up, and the log keeps them for hours. Keyed with the server's
        # secret, unlike a plain hash, so a dictionary cannot turn them back.
        key = hmac.new(self.jwt_key, username.lower().encode(), hashlib.sha256).hexdigest()
        user = self.store.find_user(username)
        if user is not None and facts is not None:
            # The audit event names whose password was tried, so the owner of a locked
            # account sees the attempts the lock refused too.
            facts["userId"] = user["id"]
        # Checked before bcrypt, and for unknown usernames too: a locked name costs no
        # hashing, and whether a name is locked says nothing about whether it exists.
        wait = self.backoff.wait(key)
        if wait > 0:
            raise TooManyRequests("too many failed logins for this username; try again later",
                                  headers=(("Retry-After", retry_after_header(wait)),))
        # NOTE: an unknown username still pays for one bcrypt check against a dummy hash
        # of the same cost, so the response time does not reveal which usernames exist.
        stored_hash = user["passwordHash"] if user else self.dummy_password_hash
        if not self.password_matches(password, stored_hash) or user is None:
            self.backoff.failed(key)
            return None
        self.backoff.succeeded(key)
        return user

    def read_body(self, request: Request, schema: str) -> dict:
        """A JSON body valid against `schema`, each password field within bcrypt's 72 bytes."""
        body = read_json(request)
        if isinstance(body, dict) and isinstance(body.get("username"), str):
            # NFKC folds look-alikes ("ａｌｉｃｅ" in full-width letters is "alice") before the
            # pattern and the uniqueness check see the name, so no one can register a
            # second "alice" that reads the same on screen.
            body["username"] = unicodedata.normalize("NFKC", body["username"])
        self.validator.validate(body, schema)
        for name in PASSWORD_FIELDS & body.keys():
            if len(body[name].encode("utf-8")) > BCRYPT_MAX_BYTES:
                # Refused rather than cut: two passwords that differ only after byte 72
                # would otherwise be the same password.
                raise ValidationError([(name, f"must be at most {BCRYPT_MAX_BYTES} bytes in UTF-8")])
        return body

    # -- sessions and tokens ----------------------------------------------------------
    def start_session(self, user: dict, facts: dict) -> dict:
        """A new session for a user who has just proved who they are: the token pair.
        The session's id is left in `facts` for the audit trail."""
        secret = new_refresh_secret()
        session = self.store.create_session(user["id"], refresh_digest(secret), self.clock() + self.refresh_ttl,
                                            password_hash=user["passwordHash"])
        if session is None:  # erased, or its password changed, while the login was checked
            raise Unauthorized(WRONG_CREDENTIALS, headers=bearer_challenge())
        facts["resourceId"] = session["id"]
        return self._token_pair(user["id"], session["id"], secret, self.refresh_ttl)

    def refresh(self, refresh_token: str, facts: dict) -> dict:
        """A new token pair for a refresh token, which is retired; 401 if it is not the
        live session's current one (and if it is one the session issued before, the
        session ends: RFC 9700 §4.14.2). The session (and, if it is live, its user) is
        left in `facts` for the audit trail."""
        session_id, secret = parse_refresh_token(refresh_token)  # 401 if malformed
        facts["resourceId"] = session_id
        new_secret = new_refresh_secret()
        session = self.store.rotate_refresh(session_id, refresh_digest(secret), refresh_digest(new_secret))
        if session is None:
            # NOTE: a token this session did hand out, but that is no longer its current
            # one, has been used before: someone other than the owner may hold a copy, so
            # the whole session ends; the thief's next refresh and the owner's both fail,
            # and the owner logs in again (RFC 9700 §4.14.2). A token the session never
            # issued ends nothing: a session id is no secret, and knowing one must not be
            # enough to log its owner out.
            issuer = self.store.refresh_token_issuer(session_id, refresh_digest(secret))
            if issuer is not None:
                facts["userId"] = issuer  # the theft signal belongs in its owner's audit trail
                self.store.end_session(session_id)
            raise Unauthorized("the refresh token is expired, revoked or already used; log in again",
                               headers=bearer_challenge())
        facts["userId"] = session["userId"]
        # NOTE: a session lives MEDITRACK_REFRESH_TTL from its login, however often it is
        # refreshed: a stolen refresh token, kept fresh by its thief, still dies then.
        expires_in = round(datetime.fromisoformat(session["expiresAt"]).timestamp() - self.clock())
        return self._token_pair(session["userId"], session_id, new_secret, max(expires_in, 1))

    def _token_pair(self, user_id: str, session_id: str, refresh_secret: str, refresh_expires_in: int) -> dict:
        now = int(self.clock())
        claims = {"sub": user_id, "sid": session_id, "jti": secrets.token_urlsafe(12), "iat": now,
                  "exp": now + self.token_ttl, "iss": ISSUER}
        return {"accessToken": jwt.sign(claims, self.jwt_key), "tokenType": "Bearer", "expiresIn": self.token_ttl,
                "refreshToken": f"{session_id}.{refresh_secret}", "refreshExpiresIn": refresh_expires_in}

    def authenticate(self, headers: Headers) -> dict:
        """The user a request's bearer token names, with its "sessionId"; 401 for no
        token, a bad one, or one whose session has ended or whose user is gone."""
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        # RFC 9110 §11.1: the auth scheme is case-insensitive.
        if scheme.lower() != "bearer" or not token.strip():
            # RFC 6750 §3.1: a request without credentials gets a bare challenge.
            raise Unauthorized("a bearer token is required", headers=bearer_challenge())
        now = self.clock()
        claims = verify_access_token(token.strip(), self.jwt_key, now)
        # NOTE: a valid signature is not enough: the session may have ended (logout,
        # password change, a reused refresh token) on this or any process sharing the
        # store, and its tokens must stop working at once, not when they expire.
        user = self.store.session_user(claims["sid"], claims["sub"])
        if user is None:
            raise Unauthorized("the session has ended or its user no longer exists",
                               headers=bearer_challenge("invalid_token"))
        # lastUsedAt moves at most once a minute: not a write per request.
        if user["sessionLastUsedAt"] <= utc_timestamp(now - LAST_USED_PRECISION):
            self.store.touch_session(claims["sid"])
        return {"id": user["id"], "username": user["username"], "createdAt": user["createdAt"],
                "sessionId": claims["sid"]}


def register(accounts: Accounts, request: Request) -> Response:
    body = accounts.read_body(request, "Credentials")
    password_hash = accounts.hash_password(body["password"].encode("utf-8"))
    user = accounts.store.create_user(body["username"], password_hash)  # Conflict → 409
    request.facts["userId"] = user["id"]
    return json_response(public_user(user), 201)


def login(accounts: Accounts, request: Request) -> Response:
    body = accounts.read_body(request, "Credentials")
    user = accounts.verify_password(body["username"], body["password"].encode("utf-8"), request.facts)
    if user is None:
        # The same answer for an unknown username and a wrong password.
        raise Unauthorized(WRONG_CREDENTIALS, headers=bearer_challenge())
    return json_response(accounts.start_session(user, request.facts))


def me(request: Request) -> Response:
    return json_response(public_user(request.user))


def change_password(accounts: Accounts, request: Request) -> Response:
    body = accounts.read_body(request, "PasswordChange")
    if accounts.verify_password(request.user["username"], body["currentPassword"].encode("utf-8")) is None:
        raise Forbidden("the current password is wrong")
    accounts.store.set_password(request.user["id"], accounts.hash_password(body["newPassword"].encode("utf-8")))
    # Whoever else holds a session may have learnt the old password: theirs end, this one stays.
    accounts.store.end_sessions(request.user["id"], keep=request.user["sessionId"])
    return Response(204)


def erase_account(accounts: Accounts, request: Request) -> Response:
    body = accounts.read_body(request, "PasswordConfirmation")
    if accounts.verify_password(request.user["username"], body["password"].encode("utf-8")) is None:
        raise Forbidden("the password is wrong")
    accounts.store.erase_user(request.user["id"])
    return Response(204)
