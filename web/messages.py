"""The values a request and its answer travel as: `IncomingRequest`, `Request`, `Response`.

The server (`web/server.py`) turns bytes into an `IncomingRequest`; the dispatcher
(`web/dispatch.py`) routes it, authenticates it and builds the `Request` a handler
gets; the handler returns a `Response`, which the server writes back. Handlers never
touch the socket, so a handler can be tested without a network.
"""

import json
import random
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable

from web.http11 import Headers


@dataclass(frozen=True)
class IncomingRequest:
    """A request as the server read it: the head's values, the body as a stream, the peer."""
    method: str
    path: str                       # the path, still percent-encoded, without the query
    query: dict[str, list[str]]     # as urllib.parse.parse_qs gives it: every name maps to a list
    headers: Headers                # case-insensitive look-ups
    body: BinaryIO                  # reads at most the declared body, never past it
    content_length: int             # the declared body size (0 when there is none)
    peer: str                       # the address of the other end of the connection


@dataclass(frozen=True)
class Request:
    """A request as a handler sees it: what arrived, and what the pipeline learned about
    it on the way (`web/dispatch.py`). Built once, when all of that is known."""
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Headers
    body: BinaryIO
    content_length: int
    client: str                     # the address rate limits count: the peer, or the client behind a trusted proxy
    route: str                      # the matched path template, e.g. /patients/{patientId}
    params: dict[str, str]          # path parameters, percent-decoded
    user: dict | None               # the authenticated user on routes that require one, else None
    request_id: str = ""            # X-Request-Id: follows the request through logs and the audit trail
    # What only the handler learns and the audit event needs ("userId": whom a login was
    # for, "resourceId": what a POST created). The one mutable part of a request.
    facts: dict = field(default_factory=dict)


@dataclass
class Response:
    status: int
    body: bytes | Iterable[bytes] = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    # For a streamed body (an iterable of chunks): its length, if known up front, is
    # sent as Content-Length; None sends it chunked (RFC 9112 §7.1), for a body whose
    # length is only known once the last byte is made (an export).
    content_length: int | None = None


JSON_TYPE = "application/json; charset=utf-8"


def new_request_id() -> str:
    """A fresh X-Request-Id: 128 random bits in hex, unique without coordination.

    NOTE: an id is no secret, so the `random` module's generator serves (it reseeds in
    a forked child). `secrets`/`os.urandom` would ask the kernel on every call: a system
    call on every request, for nothing.
    """
    return f"{random.getrandbits(128):032x}"


def encode_json(data: Any) -> bytes:
    """Compact UTF-8 JSON; `allow_nan=False` because NaN is not JSON (RFC 8259 §6)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def json_response(data: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, encode_json(data), [("Content-Type", JSON_TYPE), *headers])
