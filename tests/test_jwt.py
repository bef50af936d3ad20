"""Tests for web/jwt.py: the RFC 7515 A.1 vector, then every way a token can be wrong.

Forged tokens are built here byte by byte (`_forge`) and signed with a correct HMAC,
so each test fails for exactly the one reason its name gives.
"""

import base64
import hashlib
import hmac
import json

import pytest

from web.jwt import (
    BadSignature,
    InvalidClaim,
    MalformedToken,
    MissingClaim,
    TokenError,
    TokenExpired,
    UnsupportedAlgorithm,
    sign,
    verify,
)

# RFC 7515 Appendix A.1: the JWS Signing Input's header is {"typ":"JWT",\r\n "alg":"HS256"}.
RFC_TOKEN = (
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)
RFC_JWK_K = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
RFC_EXP = 1300819380

KEY = b"a test key of thirty-two bytes!!"
NOW = 1_700_000_000
HS256_HEADER = b'{"alg":"HS256","typ":"JWT"}'


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _forge(header: bytes, payload: bytes, key: bytes = KEY) -> str:
    """A token made of these exact header and payload bytes, correctly HS256-signed."""
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _claims(**extra) -> bytes:
    return json.dumps({"sub": "u1", "exp": NOW + 60, **extra}).encode()


def _with_segment(token: str, index: int, segment: str) -> str:
    segments = token.split(".")
    segments[index] = segment
    return ".".join(segments)


# --- known answer and round trip --------------------------------------------------

def test_rfc7515_appendix_a1_vector():
    assert _unb64(RFC_TOKEN.split(".")[0]) == b'{"typ":"JWT",\r\n "alg":"HS256"}'
    claims = verify(RFC_TOKEN, _unb64(RFC_JWK_K), now=RFC_EXP - 1, issuer="joe")
    assert claims == {"iss": "joe", "exp": RFC_EXP, "http://example.com/is_root": True}


@pytest.mark.parametrize("now", [RFC_EXP, RFC_EXP + 1])
def test_rfc7515_appendix_a1_vector_expires_at_exp(now):
    with pytest.raises(TokenExpired):
        verify(RFC_TOKEN, _unb64(RFC_JWK_K), now=now)


def test_sign_then_verify_round_trip():
    claims = {"sub": "64b7f0c2a1e4d3b2c1a09f8e", "iat": NOW, "exp": NOW + 3600, "iss": "meditrack"}
    assert verify(sign(claims, KEY), KEY, now=NOW, issuer="meditrack") == claims


def test_sign_writes_compact_hs256_header_and_payload():
    header, payload, _ = sign({"exp": NOW, "sub": "u1"}, KEY).split(".")
    assert _unb64(header) == HS256_HEADER
    assert _unb64(payload) == b'{"exp":1700000000,"sub":"u1"}'


def test_sign_produces_the_same_token_as_an_independent_hmac():
    assert sign({"exp": NOW}, KEY) == _forge(HS256_HEADER, b'{"exp":1700000000}')


@pytest.mark.parametrize("use", ["sign", "verify"])
def test_empty_key_is_a_programming_error(use):
    with pytest.raises(ValueError):
        if use == "sign":
            sign({"exp": NOW}, b"")
        else:
            verify(sign({"exp": NOW + 60}, KEY), b"", now=NOW)


def test_sign_refuses_nan_claims():
    with pytest.raises(ValueError):
        sign({"exp": float("nan")}, KEY)


@pytest.mark.parametrize("error", [MalformedToken, UnsupportedAlgorithm, BadSignature,
                                   TokenExpired, MissingClaim, InvalidClaim])
def test_every_failure_is_a_token_error(error):
    assert issubclass(error, TokenError)


# --- algorithm ------------------------------------------------------------------------

def test_alg_none_is_rejected():
    unsigned_header = _b64(b'{"alg":"none","typ":"JWT"}')
    token = f"{unsigned_header}.{_b64(_claims())}."
    with pytest.raises(UnsupportedAlgorithm):
        verify(token, KEY, now=NOW)


@pytest.mark.parametrize("header", [
    b'{"alg":"HS512","typ":"JWT"}',
    b'{"alg":"RS256","typ":"JWT"}',
    b'{"alg":"hs256","typ":"JWT"}',
    b'{"typ":"JWT"}',
    b'{"alg":256}',
    b'{"alg":null}',
    b'{"alg":["HS256"]}',
], ids=["HS512", "RS256", "lower-case", "missing", "number", "null", "list"])
def test_any_alg_but_hs256_is_rejected_even_when_correctly_signed(header):
    with pytest.raises(UnsupportedAlgorithm):
        verify(_forge(header, _claims()), KEY, now=NOW)


def test_crit_header_is_rejected():
    token = _forge(b'{"alg":"HS256","crit":["exp"],"exp":1}', _claims())
    with pytest.raises(UnsupportedAlgorithm):
        verify(token, KEY, now=NOW)


# --- signature ------------------------------------------------------------------------

def test_tampered_payload_is_rejected():
    token = sign({"sub": "u1", "exp": NOW + 60}, KEY)
    tampered = _with_segment(token, 1, _b64(_claims(sub="admin")))
    with pytest.raises(BadSignature):
        verify(tampered, KEY, now=NOW)


def test_every_flipped_signature_byte_is_rejected():
    token = sign({"exp": NOW + 60}, KEY)
    signature = _unb64(token.split(".")[2])
    for index in range(len(signature)):
        flipped = bytearray(signature)
        flipped[index] ^= 0x01
        with pytest.raises(BadSignature):
            verify(_with_segment(token, 2, _b64(bytes(flipped))), KEY, now=NOW)


@pytest.mark.parametrize("signature", ["", "AAAA"], ids=["empty", "too-short"])
def test_signature_of_the_wrong_length_is_rejected(signature):
    with pytest.raises(BadSignature):
        verify(_with_segment(sign({"exp": NOW + 60}, KEY), 2, signature), KEY, now=NOW)


def test_wrong_key_is_rejected():
    with pytest.raises(BadSignature):
        verify(sign({"exp": NOW + 60}, b"another key entirely"), KEY, now=NOW)


def test_payload_is_not_parsed_before_the_signature_is_checked():
    token = _with_segment(sign({"exp": NOW + 60}, KEY), 1, _b64(b"not json"))
    with pytest.raises(BadSignature):
        verify(token, KEY, now=NOW)


# --- claims ---------------------------------------------------------------------------

def test_missing_exp_is_rejected_even_when_not_listed_in_require():
    token = _forge(HS256_HEADER, b'{"sub":"u1"}')
    with pytest.raises(MissingClaim):
        verify(token, KEY, now=NOW, require=())


def test_require_adds_claims_that_must_be_present():
    token = sign({"exp": NOW + 60}, KEY)
    with pytest.raises(MissingClaim):
        verify(token, KEY, now=NOW, require=("exp", "sub"))


def test_exp_in_the_past_is_rejected():
    with pytest.raises(TokenExpired):
        verify(sign({"exp": NOW - 1}, KEY), KEY, now=NOW)


def test_exp_equal_to_now_is_rejected():
    with pytest.raises(TokenExpired):
        verify(sign({"exp": NOW}, KEY), KEY, now=NOW)


def test_exp_just_after_now_is_accepted():
    assert verify(sign({"exp": NOW + 0.5}, KEY), KEY, now=NOW) == {"exp": NOW + 0.5}


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["1700000060", True, False, None, [NOW], {}],
                         ids=["string", "true", "false", "null", "list", "object"])
def test_non_numeric_dates_are_rejected(claim, value):
    claims = {"exp": NOW + 60, claim: value}
    with pytest.raises(InvalidClaim):
        verify(sign(claims, KEY), KEY, now=NOW)


def test_nbf_in_the_future_is_rejected():
    with pytest.raises(InvalidClaim):
        verify(sign({"exp": NOW + 60, "nbf": NOW + 1}, KEY), KEY, now=NOW)


def test_nbf_equal_to_now_is_accepted():
    claims = {"exp": NOW + 60, "nbf": NOW}
    assert verify(sign(claims, KEY), KEY, now=NOW) == claims


def test_iat_in_the_future_is_rejected():
    with pytest.raises(InvalidClaim):
        verify(sign({"exp": NOW + 60, "iat": NOW + 1}, KEY), KEY, now=NOW)


def test_iat_equal_to_now_is_accepted():
    claims = {"exp": NOW + 60, "iat": NOW}
    assert verify(sign(claims, KEY), KEY, now=NOW) == claims


def test_issuer_mismatch_is_rejected():
    with pytest.raises(InvalidClaim):
        verify(sign({"exp": NOW + 60, "iss": "evil"}, KEY), KEY, now=NOW, issuer="meditrack")


def test_missing_issuer_is_rejected_when_an_issuer_is_expected():
    with pytest.raises(MissingClaim):
        verify(sign({"exp": NOW + 60}, KEY), KEY, now=NOW, issuer="meditrack")


@pytest.mark.parametrize("claims, error_beyond_leeway", [
    ({"exp": NOW - 5}, TokenExpired),
    ({"exp": NOW + 60, "nbf": NOW + 5}, InvalidClaim),
    ({"exp": NOW + 60, "iat": NOW + 5}, InvalidClaim),
], ids=["exp", "nbf", "iat"])
def test_leeway_is_honoured(claims, error_beyond_leeway):
    token = sign(claims, KEY)
    assert verify(token, KEY, now=NOW, leeway=6) == claims
    with pytest.raises(error_beyond_leeway):
        verify(token, KEY, now=NOW, leeway=4)


def test_leeway_ends_exactly_at_exp_plus_leeway():
    with pytest.raises(TokenExpired):
        verify(sign({"exp": NOW - 5}, KEY), KEY, now=NOW, leeway=5)


# --- shape and base64url ----------------------------------------------------------------

@pytest.mark.parametrize("index", [0, 1, 2], ids=["header", "payload", "signature"])
@pytest.mark.parametrize("character", ["+", "/", "=", " ", "\n", "!", "é"])
def test_non_base64url_characters_are_rejected(index, character):
    token = sign({"exp": NOW + 60}, KEY)
    segment = token.split(".")[index]
    middle = len(segment) // 2
    with pytest.raises(MalformedToken):
        verify(_with_segment(token, index, segment[:middle] + character + segment[middle:]),
               KEY, now=NOW)


# A 16-byte header, 19-byte payload and 32-byte signature all end in a partial
# base64 quantum, so each segment has padding to add and trailing bits to spoil.
PARTIAL_QUANTUM_TOKEN = _forge(b'{"alg":"HS256" }', b'{"exp":9999999999 }')


@pytest.mark.parametrize("index", [0, 1, 2], ids=["header", "payload", "signature"])
def test_padding_is_rejected(index):
    segment = PARTIAL_QUANTUM_TOKEN.split(".")[index]
    padded = segment + "=" * (-len(segment) % 4)
    assert padded != segment
    with pytest.raises(MalformedToken):
        verify(_with_segment(PARTIAL_QUANTUM_TOKEN, index, padded), KEY, now=NOW)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["header", "payload", "signature"])
def test_non_canonical_trailing_bits_are_rejected(index):
    segment = PARTIAL_QUANTUM_TOKEN.split(".")[index]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(segment[-1]) ^ 1]  # flips a bit no byte uses
    spoiled = segment[:-1] + last
    assert _unb64(spoiled) == _unb64(segment)  # a lenient decoder would accept it
    with pytest.raises(MalformedToken):
        verify(_with_segment(PARTIAL_QUANTUM_TOKEN, index, spoiled), KEY, now=NOW)


def test_partial_quantum_token_is_otherwise_valid():
    assert verify(PARTIAL_QUANTUM_TOKEN, KEY, now=NOW) == {"exp": 9999999999}


@pytest.mark.parametrize("index", [0, 1, 2], ids=["header", "payload", "signature"])
def test_segment_length_of_one_more_than_a_multiple_of_four_is_rejected(index):
    token = sign({"exp": NOW + 60}, KEY)
    segment = token.split(".")[index]
    impossible = segment + "A" * ((1 - len(segment)) % 4)
    assert len(impossible) % 4 == 1
    with pytest.raises(MalformedToken):
        verify(_with_segment(token, index, impossible), KEY, now=NOW)


@pytest.mark.parametrize("token", [
    "",
    "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9",
    "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.AAAA.AAAA",
    "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.AAAA.AAAA.AAAA",
], ids=["empty", "two-segments", "four-segments", "five-segments"])
def test_wrong_segment_count_is_rejected(token):
    with pytest.raises(MalformedToken):
        verify(token, KEY, now=NOW)


@pytest.mark.parametrize("token", [sign({"exp": NOW + 60}, KEY).encode(), None, 42],
                         ids=["bytes", "none", "int"])
def test_non_str_token_is_rejected(token):
    with pytest.raises(MalformedToken):
        verify(token, KEY, now=NOW)


def test_overlong_token_is_rejected():
    token = sign({"exp": NOW + 60, "pad": "x" * 8192}, KEY)
    with pytest.raises(MalformedToken):
        verify(token, KEY, now=NOW)


def test_max_length_is_a_parameter_and_inclusive():
    token = sign({"exp": NOW + 60}, KEY)
    assert verify(token, KEY, now=NOW, max_length=len(token)) == {"exp": NOW + 60}
    with pytest.raises(MalformedToken):
        verify(token, KEY, now=NOW, max_length=len(token) - 1)


# --- JSON -------------------------------------------------------------------------------

BAD_JSON = {
    "truncated": b'{"alg":"HS256","exp":1',
    "empty": b"",
    "array": b'["HS256"]',
    "string": b'"HS256"',
    "number": b"42",
    "null": b"null",
    "invalid-utf8": b'{"alg":"HS256","x":"\xc3\x28"}',
    "utf16": '{"alg":"HS256"}'.encode("utf-16"),
    "utf8-bom": b'\xef\xbb\xbf{"alg":"HS256"}',
    "NaN": b'{"alg":"HS256","exp":NaN}',
    "Infinity": b'{"alg":"HS256","exp":Infinity}',
    "-Infinity": b'{"alg":"HS256","exp":-Infinity}',
    "overflowing-float": b'{"alg":"HS256","exp":1e400}',
    "too-many-digits": b'{"alg":"HS256","exp":' + b"1" * 5000 + b"}",
    "duplicate-name": b'{"alg":"HS256","alg":"HS256","exp":1}',
    "deep-nesting": b"[" * 5000,
}


@pytest.mark.parametrize("segment", list(BAD_JSON.values()), ids=list(BAD_JSON))
def test_bad_json_header_is_rejected(segment):
    with pytest.raises(MalformedToken):
        verify(_forge(segment, _claims()), KEY, now=NOW)


@pytest.mark.parametrize("segment", list(BAD_JSON.values()), ids=list(BAD_JSON))
def test_bad_json_payload_is_rejected(segment):
    with pytest.raises(MalformedToken):
        verify(_forge(HS256_HEADER, segment), KEY, now=NOW)


# --- audience and claim types (RFC 7519 §4.1, RFC 7515 §4.1.4) ---------------------------

@pytest.mark.parametrize("audience", ["meditrack", ["meditrack"], "", [], None],
                         ids=["our-name", "list-with-our-name", "empty", "empty-list", "null"])
def test_rfc7519_4_1_3_a_token_naming_any_audience_is_rejected(audience):
    # We issue no `aud` and identify with none, so a token carrying one was meant for
    # another recipient, whatever it names.
    with pytest.raises(InvalidClaim, match="aud"):
        verify(_forge(HS256_HEADER, _claims(aud=audience)), KEY, now=NOW)


@pytest.mark.parametrize("claim", ["sub", "jti"])
@pytest.mark.parametrize("value", [42, 1.5, True, None, ["u1"], {"id": "u1"}],
                         ids=["int", "float", "bool", "null", "list", "object"])
def test_rfc7519_sub_and_jti_must_be_strings(claim, value):
    with pytest.raises(InvalidClaim, match=claim):
        verify(_forge(HS256_HEADER, _claims(**{claim: value})), KEY, now=NOW)


def test_string_sub_and_jti_are_accepted():
    claims = verify(_forge(HS256_HEADER, _claims(jti="a1b2")), KEY, now=NOW)
    assert claims["sub"] == "u1" and claims["jti"] == "a1b2"


@pytest.mark.parametrize("kid", [b"1", b"null", b'["k1"]', b'{"k":1}', b"true"])
def test_rfc7515_4_1_4_kid_must_be_a_string(kid):
    header = b'{"alg":"HS256","typ":"JWT","kid":' + kid + b"}"
    with pytest.raises(MalformedToken, match="kid"):
        verify(_forge(header, _claims()), KEY, now=NOW)


def test_a_string_kid_is_accepted():
    assert verify(_forge(b'{"alg":"HS256","typ":"JWT","kid":"k1"}', _claims()), KEY, now=NOW)["sub"] == "u1"
