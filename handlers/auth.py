"""Accounts and tokens: register, log in, who am I; and `authenticate` for protected routes.

Passwords are stored only as bcrypt hashes. A login answers with an HS256 JWT
(`web/jwt.py`) that the client sends back as `Authorization: Bearer <token>`
(RFC 6750 §2.1).

`Accounts` holds what these handlers depend on; each handler takes it as its first
argument (bound when the route table is built), so its dependencies are in plain sight.
"""

import os
import threading
import time
import unicodedata

import bcrypt

from handlers.inputs import read_json
from storage.base import Store
from storage.ids import is_object_id
from web import jwt
from web.backoff import FailureBackoff
from web.http11 import Headers
from web.messages import Request, Response, json_response
from web.problems import TooManyRequests, Unauthorized
from web.ratelimit import retry_after_header
from web.validation import SchemaValidator, ValidationError

ISSUER = "meditrack"
BCRYPT_MAX_BYTES = 72  # bcrypt reads at most 72 bytes of a password and ignores the rest


# NOTE: bcrypt releases the GIL, so N hashes at once keep N cores busy for a quarter of
# a second each. Letting at most half the cores hash at any moment keeps the other half
# for everyone else during a login storm; logins queue for a slot instead.
HASHING_CONCURRENCY = max(1, (os.cpu_count() or 2) // 2)


def public_user(user: dict) -> dict:
    return {"id": user["id"], "username": user["username"], "createdAt": user["createdAt"]}


class VerifiedTokens:
    """Tokens that have passed `jwt.verify`, so a client's token is checked once, not on
    every request it makes.

    NOTE: the key is the whole token — header, claims and signature — so a hit means
    these exact bytes were verified with our key before; `exp` is still compared with
    the clock on every hit, so a cached token expires exactly when it would have. Only
    verified tokens are stored, at most `max_size` of them (the oldest go first), so a
    flood of forged tokens neither fills the cache nor skips a check.
    """

    def __init__(self, key: bytes, *, max_size: int = 10_000):
        self._key = key
        self._max_size = max_size
        self._claims: dict[str, dict] = {}  # insertion-ordered: the first is the oldest
        self._lock = threading.Lock()

    def claims(self, token: str, now: float) -> dict:
        claims = self._claims.get(token)
        if claims is not None and now < claims["exp"]:
            return claims
        claims = jwt.verify(token, self._key, now=now, issuer=ISSUER, require=("exp", "iat", "sub"))
        with self._lock:
            if len(self._claims) >= self._max_size:
                del self._claims[next(iter(self._claims))]
            self._claims[token] = claims
        return claims


class Accounts:
    """Everything accounts need, in one place: the store, the key that signs tokens and
    the tokens already verified, the per-username back-off, the slots that bound how
    many passwords are hashed at once, and the dummy hash an unknown username is
    checked against."""

    def __init__(self, store: Store, validator: SchemaValidator, *, jwt_key: bytes, token_ttl: int,
                 bcrypt_rounds: int, clock=time.time, backoff: FailureBackoff | None = None):
        self.store = store
        self.validator = validator
        self.jwt_key = jwt_key
        self.token_ttl = token_ttl
        self.bcrypt_rounds = bcrypt_rounds
        self.clock = clock
        self.backoff = backoff or FailureBackoff()
        self.verified_tokens = VerifiedTokens(jwt_key)
        self.hashing_slots = threading.BoundedSemaphore(HASHING_CONCURRENCY)
        # What a login for an unknown username is checked against (see `login`).
        self.dummy_password_hash = bcrypt.hashpw(b"not a real password", bcrypt.gensalt(bcrypt_rounds))

    def hash_password(self, password: bytes) -> bytes:
        with self.hashing_slots:
            return bcrypt.hashpw(password, bcrypt.gensalt(rounds=self.bcrypt_rounds))

    def password_matches(self, password: bytes, password_hash: bytes) -> bool:
        with self.hashing_slots:
            return bcrypt.checkpw(password, password_hash)

    def read_credentials(self, request) -> tuple[str, bytes]:
        body = read_json(request)
        if isinstance(body, dict) and isinstance(body.get("username"), str):
            # NFKC folds look-alikes ("ａｌｉｃｅ" in full-width letters is "alice") before the
            # pattern and the uniqueness check see the name, so no one can register a
            # second "alice" that reads the same on screen.
            body["username"] = unicodedata.normalize("NFKC", body["username"])
        self.validator.validate(body, "Credentials")
        password = body["password"].encode("utf-8")
        if len(password) > BCRYPT_MAX_BYTES:
            # Refused rather than cut: two passwords that differ only after byte 72 would
            # otherwise be the same password.
            raise ValidationError([("password", f"must be at most {BCRYPT_MAX_BYTES} bytes in UTF-8")])
        return body["username"], password

    def issue_token(self, user: dict) -> str:
        now = int(self.clock())
        return jwt.sign({"sub": user["id"], "iat": now, "exp": now + self.token_ttl, "iss": ISSUER}, self.jwt_key)

    def authenticate(self, headers: Headers) -> dict:
        """The user a request's bearer token names; 401 for no token, a bad one, or a
        token whose user no longer exists."""
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        # RFC 9110 §11.1: the auth scheme is case-insensitive.
        if scheme.lower() != "bearer" or not token.strip():
            # RFC 6750 §3.1: a request without credentials gets a bare challenge.
            raise Unauthorized("a bearer token is required", headers=(("WWW-Authenticate", "Bearer"),))
        claims = self.verified_tokens.claims(token.strip(), self.clock())
        user = self.store.get_user(claims["sub"]) if is_object_id(claims["sub"]) else None
        if user is None:
            raise Unauthorized("the token's user no longer exists",
                               headers=(("WWW-Authenticate", 'Bearer error="invalid_token"'),))
        return user


def register(accounts: Accounts, request: Request) -> Response:
    username, password = accounts.read_credentials(request)
    password_hash = accounts.hash_password(password)
    user = accounts.store.create_user(username, password_hash)  # Conflict → 409
    return json_response(public_user(user), 201)


def login(accounts: Accounts, request: Request) -> Response:
    username, password = accounts.read_credentials(request)
    backoff, key = accounts.backoff, username.lower()
    # Checked before bcrypt, and for unknown usernames too: a locked name costs no
    # hashing, and whether a name is locked says nothing about whether it exists.
    wait = backoff.wait(key)
    if wait > 0:
        raise TooManyRequests("too many failed logins for this username; try again later",
                              headers=(("Retry-After", retry_after_header(wait)),))
    user = accounts.store.find_user(username)
    # NOTE: an unknown username still pays for one bcrypt check against a dummy hash
    # of the same cost, so the response time does not reveal which usernames exist;
    # and both failures get the same message.
    stored_hash = user["passwordHash"] if user else accounts.dummy_password_hash
    if not accounts.password_matches(password, stored_hash) or user is None:
        backoff.failed(key)
        raise Unauthorized("the username or password is wrong", headers=(("WWW-Authenticate", "Bearer"),))
    backoff.succeeded(key)
    return json_response({"accessToken": accounts.issue_token(user), "tokenType": "Bearer",
                          "expiresIn": accounts.token_ttl})


def me(request: Request) -> Response:
    return json_response(public_user(request.user))
