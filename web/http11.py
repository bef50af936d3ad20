"""HTTP/1.1 as a sans-I/O codec: request heads in, response heads out (RFC 9112).

"Sans-I/O" means this module never touches a socket. It is handed bytes and gives
back values, or raises; the server (`web/server.py`) owns the connection and decides
when to read and write. So every rule below can be tested by feeding bytes, one at a
time if need be, and read without thinking about networks at all. (h11 is the
well-known Python codec built this way.)

A request on the wire is a *head* and then, maybe, a body (RFC 9112 §2.1):

    GET /patients?limit=5 HTTP/1.1\\r\\n          request-line  (§3)
    Host: example.org\\r\\n                       header fields (§5)
    Authorization: Bearer eyJ...\\r\\n
    \\r\\n                                        an empty line ends the head
    ...Content-Length bytes of body...          framing       (§6)

`RequestHeadReader.feed(data)` collects a head however it arrives and returns a
`RequestHead` once the empty line is in, with its limits checked as the bytes come:
a request line over `MAX_REQUEST_LINE` is 414, a header section over
`MAX_HEADER_BYTES` or `MAX_HEADER_COUNT` fields is 431. The head then answers the
framing questions: how long is the body, does the client wait for `100 Continue`,
does the connection stay open. `response_head` writes the other direction.

Every refusal is a `ProtocolError`; after one, the connection cannot be trusted to be
in step any more, so the server answers and closes it. Statuses are assigned in
`web/problems.py`, like every other exception's.
"""

import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Iterable
from urllib.parse import parse_qs

from web.grammar import TOKEN_BYTES

MAX_REQUEST_LINE = 8192          # bytes, CRLF included; longer → 414 (RFC 9112 §3)
MAX_HEADER_COUNT = 100           # more header fields → 431 (RFC 6585 §5)
MAX_HEADER_BYTES = 16 * 1024     # the whole header section, empty line included → 431
MAX_QUERY_FIELDS = 50

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # RFC 9110 §15.2.1: the interim "send your body"


class ProtocolError(Exception):
    """The request head breaks HTTP/1.1: answer it, then close the connection. `path` is
    the target's path when the request line was read before the fault was found, so the
    answer can be in the format that path's clients read."""
    path: str | None = None


class RequestLineTooLong(ProtocolError):
    """The request line is longer than `max_request_line` bytes."""


class HeaderSectionTooLarge(ProtocolError):
    """The header section holds more than `max_header_bytes` bytes or `max_headers` fields."""


class VersionNotSupported(ProtocolError):
    """The request's major version is not 1 (HTTP/2 and HTTP/3 are not spoken over this text form)."""


class ChunkedBodyRefused(ProtocolError):
    """The body is sent with Transfer-Encoding; we require Content-Length."""


class IncompleteMessage(ProtocolError):
    """The connection ended, or failed, in the middle of a request."""


class Headers:
    """Header fields: names compared without case (RFC 9110 §5.1), each name with its
    values in the order they came.

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


@dataclass(frozen=True)
class RequestHead:
    """A parsed request head and the framing it implies."""
    method: str
    target: str                      # the request-target exactly as sent
    path: str                        # its path, still percent-encoded
    query: dict[str, list[str]]      # its query, decoded: every name maps to a list
    version: tuple[int, int]         # (1, 0) or (1, 1)
    headers: Headers
    content_length: int              # the body's length; 0 when there is none

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request after this one."""
        tokens = {token.strip().lower() for token in self.headers.get("Connection", "").split(",")}
        # RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 closes (we do not
        # implement its old keep-alive extension).
        return self.version == (1, 1) and "close" not in tokens

    @property
    def expects_continue(self) -> bool:
        """RFC 9110 §10.1.1: the client waits for `100 Continue` before sending its body."""
        return (self.version == (1, 1) and self.content_length > 0
                and self.headers.get("Expect", "").lower() == "100-continue")


# RFC 9112 §2.2: lines end in CRLF, and a recipient MAY accept a bare LF. The head
# ends at the first empty line.
_END_OF_HEAD = re.compile(rb"\n\r?\n")
# RFC 9112 §2.2: a bare CR (not followed by LF) must be refused or replaced; a parser
# downstream that read it as a line end would see different headers than we did.
_BARE_CR = re.compile(rb"\r(?!\n)")
# RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
# RFC 9112 §3.2: a target, as sent, is visible ASCII (anything else is percent-encoded).
_VISIBLE_ASCII = re.compile(rb"[\x21-\x7e]+")
# RFC 9112 §3.2.2: absolute-form = absolute-URI; for an http(s) URI, scheme "://"
# authority path-abempty [ "?" query ]. The scheme is case-insensitive (RFC 3986 §3.1).
_ABSOLUTE_FORM = re.compile(rb"(?i:https?)://([^/?#]+)(/[^?#]*)?(\?[^#]*)?(#.*)?")
# RFC 9110 §8.6: Content-Length = 1*DIGIT, and no sign or spaces.
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
# RFC 9110 §5.5: CR, LF and NUL are never valid inside a field value.
_FORBIDDEN_IN_VALUE = re.compile(rb"[\r\n\x00]")


class RequestHeadReader:
    """Collects the bytes of one request head, however they are split, and parses it.

    `feed(data)` returns `(head, used)`: the head once its empty line has arrived (else
    None), and how many bytes of `data` belong to it — the rest is the body or the next
    request, and stays with the caller. `end_of_stream()` says the peer closed.
    """

    def __init__(self, *, max_request_line: int = MAX_REQUEST_LINE, max_header_bytes: int = MAX_HEADER_BYTES,
                 max_headers: int = MAX_HEADER_COUNT, max_query_fields: int = MAX_QUERY_FIELDS):
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.max_query_fields = max_query_fields
        self._buffer = b""

    def feed(self, data: bytes) -> tuple[RequestHead | None, int]:
        before = len(self._buffer)
        buffer = self._buffer = self._buffer + data
        # RFC 9112 §2.2: a server SHOULD ignore at least one empty line received before
        # the request line (some clients send an extra CRLF after a POST body).
        start = 2 if buffer.startswith(b"\r\n") else 1 if buffer.startswith(b"\n") else 0
        # Search again only where a new end could be: the last two old bytes onwards.
        end = _END_OF_HEAD.search(buffer, max(start, before - 2))
        self._check_limits(buffer, start, end.end() if end else len(buffer))
        self._refuse_bare_cr(buffer, max(start, before - 1), end.end() if end else len(buffer))
        if end is None:
            return None, len(data)
        self._buffer = b""
        return self._parse(buffer[start:end.end()]), end.end() - before

    def end_of_stream(self) -> None:
        """The peer closed the connection: fine between requests, an error inside one."""
        if self._buffer.strip(b"\r\n"):
            raise IncompleteMessage("the connection closed in the middle of the request head")

    def _check_limits(self, buffer: bytes, start: int, end: int) -> None:
        line_end = buffer.find(b"\n", start, end)
        request_line = (line_end if line_end >= 0 else end) - start
        if request_line > self.max_request_line - (1 if line_end >= 0 else 0):
            raise RequestLineTooLong(f"the request line is longer than {self.max_request_line} bytes")
        if line_end >= 0 and end - (line_end + 1) > self.max_header_bytes:
            raise HeaderSectionTooLarge(f"the header section is larger than {self.max_header_bytes} bytes")

    @staticmethod
    def _refuse_bare_cr(buffer: bytes, position: int, end: int) -> None:
        cr = _BARE_CR.search(buffer, position, end)
        # A CR in the very last byte received may yet be followed by its LF.
        if cr is not None and cr.start() < len(buffer) - 1:
            raise ProtocolError("the request head contains a CR that does not end a line")

    def _parse(self, head: bytes) -> RequestHead:
        request_line, *field_lines = head.replace(b"\r\n", b"\n").split(b"\n")[:-2]
        method, target, version = parse_request_line(request_line)
        try:
            if len(field_lines) > self.max_headers:
                raise HeaderSectionTooLarge(f"more than {self.max_headers} header fields")
            headers = Headers()
            for line in field_lines:
                headers.add(*parse_field_line(line))
            _check_host(headers, version)
            path, query = split_target(target, self.max_query_fields)
        except ProtocolError as error:
            error.path = target.partition("?")[0]
            raise
        return RequestHead(method, target, path, query, version, headers, body_length(headers))


def parse_request_line(line: bytes) -> tuple[str, str, tuple[int, int]]:
    """RFC 9112 §3: request-line = method SP request-target SP HTTP-version."""
    parts = line.split(b" ")
    if len(parts) != 3 or not TOKEN_BYTES.fullmatch(parts[0]):
        raise ProtocolError("the request line is malformed")
    method, target, version_text = parts
    version = _VERSION.fullmatch(version_text)
    if version is None:
        raise ProtocolError("the request line does not end with an HTTP version")
    major, minor = int(version[1]), int(version[2])
    # RFC 9110 §2.5: a message with a major version we do not implement is refused;
    # a higher minor version of 1 is answered as the highest we do implement, 1.1.
    if major != 1:
        raise VersionNotSupported("only HTTP/1.x is spoken here")
    if not _VISIBLE_ASCII.fullmatch(target):
        raise ProtocolError("the request target contains characters that must be percent-encoded")
    return method.decode("ascii"), target.decode("ascii"), (1, min(minor, 1))


def parse_field_line(line: bytes) -> tuple[str, str]:
    """RFC 9112 §5: field-line = field-name ":" OWS field-value OWS."""
    # RFC 9112 §5.2: obsolete line folding is refused with 400.
    if line[:1] in (b" ", b"\t"):
        raise ProtocolError("folded header lines are not accepted")
    name, colon, value = line.partition(b":")
    # RFC 9112 §5.1: no whitespace is allowed between the field name and colon.
    if not colon or not TOKEN_BYTES.fullmatch(name):
        raise ProtocolError("a header line is malformed")
    value = value.strip(b" \t")
    if _FORBIDDEN_IN_VALUE.search(value):
        raise ProtocolError("a header value contains a forbidden character")
    return name.decode("ascii"), value.decode("latin-1")


def _check_host(headers: Headers, version: tuple[int, int]) -> None:
    hosts = headers.get_all("Host") or []
    # RFC 9112 §3.2: 400 for any request with more than one Host field line, and for
    # an HTTP/1.1 request with none.
    if len(hosts) > 1:
        raise ProtocolError("a request must not have more than one Host header")
    if version == (1, 1) and not hosts:
        raise ProtocolError("an HTTP/1.1 request must have a Host header")


def split_target(target: str, max_query_fields: int = MAX_QUERY_FIELDS) -> tuple[str, dict[str, list[str]]]:
    """The path and decoded query of a request target in origin-form or absolute-form."""
    if target.startswith("/"):
        # RFC 9112 §3.2.1: origin-form = absolute-path [ "?" query ]
        path, _, query = target.partition("#")[0].partition("?")
    else:
        # RFC 9112 §3.2.2: a server MUST accept the absolute-form; the request is
        # routed by its path, and the authority (already checked to be there) is ours.
        absolute = _ABSOLUTE_FORM.fullmatch(target.encode("ascii"))
        if absolute is None:
            raise ProtocolError("the request target is neither a path nor an http(s) URI")
        # RFC 9110 §4.2.4: userinfo in an http(s) URI is an error for a recipient.
        if b"@" in absolute[1]:
            raise ProtocolError("the request target must not carry user information")
        # RFC 9110 §4.2.3: an empty path is the same as "/".
        path = (absolute[2] or b"/").decode("ascii")
        query = (absolute[3] or b"?")[1:].decode("ascii")
    try:
        # strict errors: a query that is not UTF-8 is refused, not silently mangled.
        return path, parse_qs(query, keep_blank_values=True, errors="strict", max_num_fields=max_query_fields)
    except ValueError:
        raise ProtocolError("the query string is malformed") from None


def body_length(headers: Headers) -> int:
    """RFC 9112 §6: how many bytes of body follow the head."""
    lengths = headers.get_all("Content-Length") or []
    if headers.get("Transfer-Encoding") is not None:
        # RFC 9112 §6.1: a message with both is a request-smuggling attempt or a
        # broken intermediary; either way we cannot know where the body ends.
        if lengths:
            raise ProtocolError("a request must not have both Transfer-Encoding and Content-Length")
        # RFC 9110 §15.5.12: we require a declared length rather than decode chunks.
        raise ChunkedBodyRefused("chunked request bodies are not accepted; send Content-Length")
    if not lengths:
        return 0
    if len(lengths) > 1 or not _CONTENT_LENGTH.fullmatch(lengths[0]):
        raise ProtocolError("Content-Length must be a single number of ASCII digits")
    return int(lengths[0])


def response_has_body(method: str, status: int) -> bool:
    """RFC 9110 §9.3.2, §15.3.5, §15.4.5: a response to HEAD, a 204 and a 304 carry no body."""
    return method != "HEAD" and status not in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED)


def response_head(status: int, headers: Iterable[tuple[str, str]], *, content_length: int | None,
                  keep_alive: bool, chunked: bool = False) -> bytes:
    """The status line and header fields of a response, as the bytes that go on the wire.

    `content_length` is the length of the body a GET would get, so a HEAD response
    announces it too (RFC 9110 §9.3.2). A body whose length nobody knows yet is sent
    `chunked` to an HTTP/1.1 client (RFC 9112 §7.1); to an HTTP/1.0 client, which must
    never get chunks (§6.1), it has no length at all and ends when the connection
    closes (§6.3, rule 8): pass content_length=None and keep_alive=False.
    """
    phrase = HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}"]
    for name, value in headers:
        # NOTE: never let a value start a new header (response splitting).
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} contains a line break")
        lines.append(f"{name}: {value}")
    # RFC 9110 §8.6: a 204 carries no Content-Length (and no body), nor does our 304
    # (it may only repeat the 200's length, which a bodiless answer does not need).
    # Every other response does, or is chunked, so a keep-alive connection knows where
    # it ends (RFC 9112 §6.3).
    if status in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):
        pass
    elif chunked:
        lines.append("Transfer-Encoding: chunked")
    elif content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    elif keep_alive:
        raise ValueError("a body of unknown length on a kept connection must be chunked")
    if not keep_alive:
        lines.append("Connection: close")  # RFC 9112 §9.6
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body (RFC 9112 §7.1): its size in hex, CRLF, the bytes,
    CRLF. Never empty: a chunk of size 0 is the last one."""
    if not data:
        raise ValueError("an empty chunk would end the body")
    return b"%x\r\n%s\r\n" % (len(data), data)


# RFC 9112 §7.1: last-chunk ("0" CRLF), no trailer fields, and the final CRLF.
LAST_CHUNK = b"0\r\n\r\n"
