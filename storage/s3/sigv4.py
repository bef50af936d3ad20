"""AWS Signature Version 4 for S3 requests, in the `Authorization` header.

An S3-compatible server knows who sent a request, and that nothing in it changed on
the way, by recomputing an HMAC-SHA256 over a canonical form of the request with the
sender's secret key. Four steps, one function each:

1. **Canonical request** (`canonical_request`): six lines,

       METHOD
       /the/path            each segment URI-encoded once (S3 does not normalise
                            or double-encode paths, unlike the other AWS services)
       a=1&b=2              query parameters, URI-encoded, sorted by name then value
       name:value           each signed header, lower-cased, trimmed, sorted, one
       ...                  per line, then an empty line
       host;x-amz-date      the signed header names, sorted, joined by ";"
       <payload hash>       SHA-256 of the body in hex (S3 asks for it in
                            x-amz-content-sha256 too, and checks the body against it)

2. **String to sign** (`string_to_sign`): the algorithm, the request's time
   (`x-amz-date`, e.g. 20130524T000000Z), the credential scope
   (`20130524/us-east-1/s3/aws4_request`) and the SHA-256 of the canonical request.
3. **Signing key** (`signing_key`): the secret key, HMAC'd with the date, then the
   region, the service and "aws4_request" in turn: a key good for one day, one region
   and one service, so a leaked derived key is worth little.
4. **Signature**: HMAC-SHA256 of the string to sign under that key, in hex, sent as
   `Authorization: AWS4-HMAC-SHA256 Credential=<access key>/<scope>,
   SignedHeaders=<names>,Signature=<hex>` (`authorization`).

The known answers are the four header-authentication examples in Amazon S3's API
reference ("Signature Calculations for the Authorization Header", 2013-05-24, the
example credentials): tests/test_sigv4.py computes each byte for byte. This module
knows nothing about sockets; `storage/s3/client.py` sends what it signs.
"""

import hashlib
import hmac
from datetime import datetime, timezone
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
EMPTY_PAYLOAD = hashlib.sha256(b"").hexdigest()


def uri_encode(text: str, *, keep_slash: bool) -> str:
    """RFC 3986 percent-encoding as SigV4 asks: every byte but the unreserved
    characters (A-Z a-z 0-9 - . _ ~) is %XX, upper-case hex; "/" is kept in a path only."""
    return quote(text, safe="/~" if keep_slash else "~")


def canonical_query(parameters: list[tuple[str, str]]) -> str:
    """name=value pairs, each encoded, sorted by name then value ("lifecycle=" for a
    parameter without a value)."""
    encoded = sorted((uri_encode(name, keep_slash=False), uri_encode(value, keep_slash=False))
                     for name, value in parameters)
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_headers(headers: dict[str, str]) -> tuple[str, str]:
    """(the header lines, the signed header names): names lower-cased and sorted,
    values with their ends trimmed and inner runs of spaces made one."""
    lowered = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    names = sorted(lowered)
    return "".join(f"{name}:{lowered[name]}\n" for name in names), ";".join(names)


def canonical_request(method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str],
                      payload_hash: str) -> str:
    lines, signed = canonical_headers(headers)
    return "\n".join((method, uri_encode(path, keep_slash=True), canonical_query(query), lines, signed,
                      payload_hash))


def scope(day: str, region: str) -> str:
    return f"{day}/{region}/{SERVICE}/aws4_request"


def string_to_sign(amz_date: str, region: str, canonical: str) -> str:
    return "\n".join((ALGORITHM, amz_date, scope(amz_date[:8], region),
                      hashlib.sha256(canonical.encode("utf-8")).hexdigest()))


def signing_key(secret_key: str, day: str, region: str) -> bytes:
    key = ("AWS4" + secret_key).encode("utf-8")
    for part in (day, region, SERVICE, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def authorization(method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str],
                  payload_hash: str, *, access_key: str, secret_key: str, region: str) -> str:
    """The Authorization header's value for a request whose `headers` are every header
    to sign: `host` and `x-amz-date` at least, and `x-amz-content-sha256` for S3."""
    amz_date = next(value for name, value in headers.items() if name.lower() == "x-amz-date")
    canonical = canonical_request(method, path, query, headers, payload_hash)
    signature = hmac.new(signing_key(secret_key, amz_date[:8], region),
                         string_to_sign(amz_date, region, canonical).encode("utf-8"), hashlib.sha256).hexdigest()
    signed = canonical_headers(headers)[1]
    return (f"{ALGORITHM} Credential={access_key}/{scope(amz_date[:8], region)},SignedHeaders={signed},"
            f"Signature={signature}")


def amz_date(seconds: float) -> str:
    """The time as x-amz-date writes it: ISO 8601 basic format in UTC, e.g. 20130524T000000Z."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
