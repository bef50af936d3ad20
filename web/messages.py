"""The two values every handler deals in: a parsed `Request` and the `Response` it returns.

Handlers are plain functions `handler(request) -> Response`. They never touch the
socket: the server adapter (`web/server.py`) turns bytes into a `Request`, calls the
handler, and writes the `Response` back, so a handler can be tested without a network.
"""

import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable


@dataclass
class Request:
    method: str
    path: str                       # the decoded path, without the query string
    query: dict[str, list[str]]     # from urllib.parse.parse_qs: every name maps to a list
    headers: Any                    # http.client.HTTPMessage: case-insensitive look-ups
    body: BinaryIO                  # reads at most the declared body, never past it
    content_length: int             # the declared body size (0 when there is none)
    client: str                     # the peer address the rate limiter keys on
    app: Any = None                 # the application: store, settings, validator, keys
    params: dict[str, str] = field(default_factory=dict)  # path parameters from the route
    route: str = ""                 # the matched path template, e.g. /patients/{patientId}
    user: dict | None = None        # the authenticated user, set by the auth step


@dataclass
class Response:
    status: int
    body: bytes | Iterable[bytes] = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    # For a streamed body (an iterable of chunks) the length must be known up front:
    # HTTP/1.1 keep-alive needs Content-Length on every response (RFC 9112 §6.3).
    content_length: int | None = None


JSON_TYPE = "application/json; charset=utf-8"


def encode_json(data: Any) -> bytes:
    """Compact UTF-8 JSON; `allow_nan=False` because NaN is not JSON (RFC 8259 §6)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def json_response(data: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, encode_json(data), [("Content-Type", JSON_TYPE), *headers])
