"""The two values every handler deals in: a parsed `Request` and the `Response` it returns.

Handlers are plain functions `handler(request) -> Response`. They never touch the
socket: the server adapter (`web/server.py`) turns bytes into a `Request`, calls the
handler, and writes the `Response` back, so a handler can be tested without a network.
"""

import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable


class Headers:
    """Request header fields: names compared without case (RFC 9110 §5.1), each name
    with its values in the order they came.

    A plain dict of lists: the standard library's `http.client.HTTPMessage` would do,
    but it parses with the email package and costs more than everything else a
    request needs to read its headers.
    """

    def __init__(self):
        self._fields: dict[str, list[str]] = {}
        self.count = 0

    def add(self, name: str, value: str) -> None:
        self._fields.setdefault(name.lower(), []).append(value)
        self.count += 1

    def get(self, name: str, default=None):
        """The first value of a field, or `default` when there is none."""
        values = self._fields.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str] | None:
        """Every value of a field, or None when there is none."""
        return self._fields.get(name.lower())


@dataclass
class Request:
    method: str
    path: str                       # the decoded path, without the query string
    query: dict[str, list[str]]     # from urllib.parse.parse_qs: every name maps to a list
    headers: Headers                # case-insensitive look-ups
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
