"""The two tokens a session hands out: what they look like, and how each is checked.

- The **access token** is an HS256 JWT (`web/jwt.py`) with `sub` (the user), `sid` (the
  session), `jti` (this token), `iat`, `exp` and `iss`. It is short-lived, and verified
  by signature; `VerifiedTokens` remembers the ones already verified.
- The **refresh token** is opaque to the client: `<session id>.<secret>`, the secret 32
  random bytes in base64url (RFC 4648 §5). The store keeps only the SHA-256 of the
  secret, so a copy of the database lets no one refresh, and a presented token is
  compared by that hash. The session id in front says which session it claims to be,
  so a token that is no longer the current one (already used) can end its session.
"""

import hashlib
import re
import secrets
import threading

from storage.ids import is_object_id
from web import jwt
from web.problems import Unauthorized

ISSUER = "meditrack"
# RFC 7235 §3.1 / RFC 6750 §3: a 401 names the scheme that would work.
BEARER_CHALLENGE = (("WWW-Authenticate", "Bearer"),)
REFRESH_SECRET_BYTES = 32
# 24 hex digits (an ObjectId), a dot, and 43 base64url characters (32 bytes, no padding).
_REFRESH_TOKEN = re.compile(r"([0-9a-f]{24})\.([A-Za-z0-9_-]{43})")


def new_refresh_secret() -> str:
    return secrets.token_urlsafe(REFRESH_SECRET_BYTES)


def refresh_digest(secret: str) -> str:
    """What the store keeps of a refresh token: the SHA-256 of its secret, in hex."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def parse_refresh_token(token: str) -> tuple[str, str]:
    """(session id, secret) of a well-formed refresh token; 401 for anything else,
    an access token included."""
    match = _REFRESH_TOKEN.fullmatch(token)
    if match is None:
        raise Unauthorized("the refresh token is malformed", headers=BEARER_CHALLENGE)
    return match[1], match[2]


class VerifiedTokens:
    """Tokens that have passed `jwt.verify` (and whose `sub` and `sid` are ids), so a
    client's token is checked once, not on every request it makes.

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
        claims = jwt.verify(token, self._key, now=now, issuer=ISSUER, require=("exp", "iat", "sub", "sid"))
        # Checked once here, not on every hit: the user and the session are store ids.
        if not (is_object_id(claims["sub"]) and is_object_id(claims["sid"])):
            raise jwt.InvalidClaim("sub and sid must be ids")
        with self._lock:
            if len(self._claims) >= self._max_size:
                del self._claims[next(iter(self._claims))]
            self._claims[token] = claims
        return claims
