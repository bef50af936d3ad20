"""HS256 JSON Web Tokens: sign a claims dict, verify a token and return its claims.

A JWT (RFC 7519) in JWS compact serialization (RFC 7515 §3.1) is three base64url
segments (RFC 4648 §5, no padding) joined by dots:

    BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature)

The signature is HMAC-SHA256 (RFC 7518 §3.2) over the ASCII bytes of the first two
segments and the dot between them, the "JWS Signing Input".

`verify` checks a token in a fixed order, one small function per step, and raises one
precise `TokenError` subclass at the first failure:

    shape (three strict base64url segments)  ->  header is a JSON object
    ->  alg is HS256, no `crit`, `kid` a string  ->  signature
    ->  payload is a JSON object  ->  required claims  ->  sub and jti are strings
    ->  exp, nbf, iat  ->  iss  ->  no aud

NOTE: the payload is parsed only after the signature has been checked, so nothing an
attacker writes there is even read until the key holder is known to have signed it.
The header must be read first (it names the algorithm), which is why the token length
is capped and every parsing failure is an ordinary `MalformedToken`.

This module knows nothing about HTTP: another module maps these exceptions to statuses.
Time is a parameter (`now`), so tests never sleep.
"""

import base64
import hashlib
import hmac
import json
import re

from web.jsonbody import InvalidJSON, parse_json


class TokenError(Exception):
    """Base class: every failure of `verify` raises a subclass of this."""


class MalformedToken(TokenError):
    """The token is not three strict base64url segments of JSON objects."""


class UnsupportedAlgorithm(TokenError):
    """The header asks for anything but HS256, or for extensions we do not understand."""


class BadSignature(TokenError):
    """The signature does not match the header and payload under our key."""


class TokenExpired(TokenError):
    """The current time is at or after the token's `exp`."""


class MissingClaim(TokenError):
    """A claim the caller requires is absent."""


class InvalidClaim(TokenError):
    """A claim is present but wrong: the wrong type, not yet valid, the wrong issuer,
    or an audience we are not."""


_ALGORITHM = "HS256"
_HEADER = {"alg": _ALGORITHM, "typ": "JWT"}

# RFC 4648 §5: the base64url alphabet. Padding '=' is excluded on purpose, because
# RFC 7515 §2 strips it; a fullmatch also refuses line breaks and spaces.
_BASE64URL_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def sign(claims: dict, key: bytes) -> str:
    """Return a compact HS256 JWT carrying `claims`."""
    _require_key(key)
    header_segment = _encode_base64url(_dump_json(_HEADER))
    payload_segment = _encode_base64url(_dump_json(claims))
    signing_input = f"{header_segment}.{payload_segment}"
    return f"{signing_input}.{_encode_base64url(_hmac_sha256(key, signing_input))}"


def verify(token: str, key: bytes, *, now: float, issuer: str | None = None,
           require: tuple[str, ...] = ("exp",), leeway: float = 0,
           max_length: int = 8192) -> dict:
    """Return the claims of `token` if it is a valid HS256 JWT signed with `key`.

    `now` is the current time in seconds since the epoch; `leeway` (seconds) forgives
    clock skew in exp, nbf and iat. `exp` is always required; `require` names more.
    When `issuer` is given, the token's `iss` must equal it.
    """
    _require_key(key)
    signing_input, header_bytes, payload_bytes, signature = _split(token, max_length)
    header = _parse_json_object(header_bytes, "header")
    _check_algorithm(header)
    _check_no_critical_extensions(header)
    _check_key_id(header)
    _check_signature(key, signing_input, signature)
    claims = _parse_json_object(payload_bytes, "payload")
    _check_required_claims(claims, require)
    _check_string_claims(claims)
    _check_expiry(claims, now, leeway)
    _check_not_before(claims, now, leeway)
    _check_issued_at(claims, now, leeway)
    _check_issuer(claims, issuer)
    _check_no_audience(claims)
    return claims


def _require_key(key: bytes) -> None:
    # An empty key is a configuration bug, not a bad token: fail loudly, and never
    # sign or accept tokens that anyone could forge with HMAC(b"", ...).
    if not key:
        raise ValueError("the HS256 key must not be empty")


def _hmac_sha256(key: bytes, signing_input: str) -> bytes:
    # RFC 7515 §5.1 step 5: the signing input is ASCII(header "." payload).
    return hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()


# --- shape: three strict base64url segments ---------------------------------------

def _split(token: str, max_length: int) -> tuple[str, bytes, bytes, bytes]:
    """Return the signing input and the decoded header, payload and signature bytes."""
    if not isinstance(token, str):
        raise MalformedToken(f"token must be a str, not {type(token).__name__}")
    # NOTE: the cap comes before any decoding, so an enormous header costs nothing.
    if len(token) > max_length:
        raise MalformedToken(f"token is longer than {max_length} characters")
    segments = token.split(".")
    # RFC 7515 §3.1 / RFC 7519 §7.2 step 1: a JWS has exactly three segments
    # (five would be a JWE, which we do not accept).
    if len(segments) != 3:
        raise MalformedToken(f"token has {len(segments)} segments, expected 3")
    header_segment, payload_segment, signature_segment = segments
    return (
        f"{header_segment}.{payload_segment}",
        _decode_base64url(header_segment, "header"),
        _decode_base64url(payload_segment, "payload"),
        _decode_base64url(signature_segment, "signature"),
    )


def _encode_base64url(data: bytes) -> str:
    # RFC 7515 §2: base64url with all trailing '=' removed.
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode_base64url(segment: str, name: str) -> bytes:
    # NOTE: base64.urlsafe_b64decode silently discards characters outside its
    # alphabet, so "ab+c" and "abc" would decode alike. Validate the alphabet first
    # (RFC 7515 §2: no line breaks, whitespace or other additional characters).
    if not _BASE64URL_ALPHABET.fullmatch(segment):
        raise MalformedToken(f"{name} is not unpadded base64url")
    # RFC 4648 §4: a final quantum of one character cannot encode a whole byte.
    if len(segment) % 4 == 1:
        raise MalformedToken(f"{name} has an impossible base64url length")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    # RFC 4648 §3.5: decoders MAY reject data whose unused trailing bits are not zero.
    # NOTE: we do, so that one token has exactly one spelling; re-encoding must give
    # back the segment unchanged.
    if _encode_base64url(data) != segment:
        raise MalformedToken(f"{name} is not canonical base64url (non-zero trailing bits)")
    return data


# --- JSON ----------------------------------------------------------------------------

def _dump_json(value: dict) -> bytes:
    # allow_nan=False: never sign a token that `verify` would call malformed.
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("ascii")


def _parse_json_object(data: bytes, name: str) -> dict:
    # RFC 7515 §5.2 step 3 / RFC 7519 §7.2 step 10: the octets must be UTF-8 and a
    # completely valid JSON object. The strict parser that reads request bodies serves
    # here too: no NaN or Infinity, no overflowing numbers, no deep nesting, and no
    # duplicate member names (RFC 7515 §4 lets us reject them).
    # NOTE: the header is parsed before the signature is checked, so an attacker
    # controls it: every one of those must be a clean rejection, never a crash; and
    # rejecting duplicates means no other parser can read a different "alg" or "sub"
    # from the same bytes.
    try:
        value = parse_json(data)
    except InvalidJSON as error:
        raise MalformedToken(f"{name}: {error}") from None
    if not isinstance(value, dict):
        raise MalformedToken(f"{name} is not a JSON object")
    return value


# --- header ----------------------------------------------------------------------------

def _check_algorithm(header: dict) -> None:
    # NOTE: the header must never choose the algorithm (RFC 8725 §3.1): we know we
    # use HS256, so anything else, "none" above all, is refused before any crypto.
    if "alg" not in header:
        raise UnsupportedAlgorithm("header has no alg")
    if header["alg"] != _ALGORITHM:
        raise UnsupportedAlgorithm(f"alg {header['alg']!r} is not allowed, only {_ALGORITHM}")


def _check_no_critical_extensions(header: dict) -> None:
    # RFC 7515 §4.1.11: if a "crit" extension is not understood, the JWS is invalid.
    # We understand none, so any "crit" is refused.
    if "crit" in header:
        raise UnsupportedAlgorithm("header lists critical extensions (crit), none are supported")


def _check_key_id(header: dict) -> None:
    # RFC 7515 §4.1.4: "kid" is a case-sensitive string. We keep one key and never
    # look it up by kid, but a kid of another type is a malformed header (PyJWT agrees).
    if "kid" in header and not isinstance(header["kid"], str):
        raise MalformedToken("header parameter 'kid' must be a string")


def _check_signature(key: bytes, signing_input: str, signature: bytes) -> None:
    # RFC 7518 §3.2: the comparison MUST be constant-time.
    # NOTE: `==` stops at the first differing byte, so its timing would tell an
    # attacker how many leading bytes of a forged signature are right.
    if not hmac.compare_digest(_hmac_sha256(key, signing_input), signature):
        raise BadSignature("signature does not match")


# --- claims (RFC 7519 §4.1) --------------------------------------------------------------

def _check_required_claims(claims: dict, require: tuple[str, ...]) -> None:
    # NOTE: exp is required whatever the caller passes: a token without one, once
    # stolen, would stay valid forever.
    for name in dict.fromkeys(("exp", *require)):
        if name not in claims:
            raise MissingClaim(f"claim {name!r} is required")


def _check_string_claims(claims: dict) -> None:
    # RFC 7519 §4.1.2: "sub" is a StringOrURI; §4.1.7: "jti" is a case-sensitive
    # string. A number or an object there is not a token we issued.
    for name in ("sub", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise InvalidClaim(f"claim {name!r} must be a string")


def _numeric_date(claims: dict, name: str) -> float:
    # RFC 7519 §2: a NumericDate is a JSON number. Python's bool is an int, but
    # JSON true is not a number.
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidClaim(f"claim {name!r} must be a number")
    return value


def _check_expiry(claims: dict, now: float, leeway: float) -> None:
    # RFC 7519 §4.1.4: the current time MUST be before exp.
    if now >= _numeric_date(claims, "exp") + leeway:
        raise TokenExpired("token has expired")


def _check_not_before(claims: dict, now: float, leeway: float) -> None:
    # RFC 7519 §4.1.5: the current time MUST be at or after nbf.
    if "nbf" in claims and now + leeway < _numeric_date(claims, "nbf"):
        raise InvalidClaim("token is not valid yet (nbf)")


def _check_issued_at(claims: dict, now: float, leeway: float) -> None:
    # RFC 7519 §4.1.6 only defines iat; like PyJWT we refuse a token issued in the
    # future, which no honest issuer produces.
    if "iat" in claims and now + leeway < _numeric_date(claims, "iat"):
        raise InvalidClaim("token was issued in the future (iat)")


def _check_issuer(claims: dict, issuer: str | None) -> None:
    # RFC 7519 §4.1.1: iss is an application-specific check; we do it when asked.
    if issuer is None:
        return
    if "iss" not in claims:
        raise MissingClaim("claim 'iss' is required")
    if claims["iss"] != issuer:
        raise InvalidClaim("token has the wrong issuer (iss)")


def _check_no_audience(claims: dict) -> None:
    # RFC 7519 §4.1.3: if the principal processing the claim does not identify itself
    # with a value in "aud", the token MUST be rejected. We issue no audience and claim
    # none, so a token that names any audience, even an empty one, was meant for
    # someone else.
    if "aud" in claims:
        raise InvalidClaim("token names an audience (aud); tokens for this server carry none")
