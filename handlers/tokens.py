"""The two tokens a session hands out: what they look like, and how each is checked.

- The **access token** is an HS256 JWT (`web/jwt.py`) with `sub` (the user), `sid` (the
  session), `jti` (this token), `iat`, `exp` and `iss`. It is short-lived, and verified
  by signature on every request (`verify_access_token`).
- The **refresh token** is opaque to the client: `<session id>.<secret>`, the secret 32
  random bytes in base64url (RFC 4648 §5). The store keeps only the SHA-256 of the
  secret, so a copy of the database lets no one refresh, and a presented token is
  compared by that hash. The session id in front says which session it claims to be,
  so a token that is no longer the current one (already used) can end its session.
"""

import hashlib
import re
import secrets

from storage.ids import is_object_id
from web import jwt
from web.problems import Unauthorized, bearer_challenge

ISSUER = "meditrack"
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
        raise Unauthorized("the refresh token is malformed", headers=bearer_challenge())
    return match[1], match[2]


def verify_access_token(token: str, key: bytes, now: float) -> dict:
    """The claims of a valid access token, or one of web/jwt.py's errors (a 401): its
    signature, algorithm, issuer and expiry are checked there, and the user and the
    session it names must be store ids."""
    claims = jwt.verify(token, key, now=now, issuer=ISSUER, require=("exp", "iat", "sub", "sid"))
    if not (is_object_id(claims["sub"]) and is_object_id(claims["sid"])):
        raise jwt.InvalidClaim("sub and sid must be ids")
    return claims
