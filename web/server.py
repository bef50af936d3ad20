"""The HTTP/1.1 server adapter: bytes from a socket in, a `Request`; a `Response` out, bytes.

Built on the standard library's `ThreadingHTTPServer` (one thread per connection) and
the connection loop of `BaseHTTPRequestHandler`, which calls `handle_one_request` until
the connection is to be closed. We read the request line, headers and body ourselves,
because each needs a limit a public server cannot do without (RFC 9112 §2.3, §5,
§6), and we write each response with `Content-Length`, so keep-alive connections never
lose track of where one message ends and the next begins.

This is the only module that touches sockets; everything it hands on is a plain value.
"""

import logging
import re
import socket
import time
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from urllib.parse import parse_qs, urlsplit

from web.connections import ConnectionRegistry
from web.messages import Headers, Request, Response
from web.problems import (BadRequest, HeaderFieldsTooLarge, HTTPError, LengthRequired,
                          ServiceUnavailable, URITooLong, problem_response)

SERVER_NAME = "MediTrack"       # the Server header: no version of Python or of us
MAX_REQUEST_LINE = 8192          # bytes, CRLF included; longer → 414 (RFC 9112 §3)
MAX_HEADER_COUNT = 100           # more header fields → 431 (RFC 6585 §5)
MAX_HEADER_BYTES = 16 * 1024     # the whole header section → 431
MAX_QUERY_FIELDS = 50
DRAIN_LIMIT = 64 * 1024          # unread body bytes we will read and discard to keep a connection

TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")     # RFC 9110 §5.6.2
CONTENT_LENGTH = re.compile(rb"[0-9]{1,18}")           # RFC 9110 §8.6: 1*DIGIT, and no sign or spaces
HTTP_VERSION = re.compile(rb"HTTP/1\.[01]")
VISIBLE_ASCII = re.compile(rb"[\x21-\x7e]+")           # a request target, as sent: no spaces, no 8-bit
FORBIDDEN_IN_VALUE = re.compile(rb"[\r\n\x00]")

access_log = logging.getLogger("meditrack.access")


_date = (0, "")  # (second, its HTTP-date): a response's Date changes once a second


def http_date() -> str:
    """RFC 9110 §6.6.1: the Date header, formatted once per second, not per response."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, formatdate(second, usegmt=True))  # one tuple: threads see old or new
    return _date[1]


def response_head(response: Response, keep_alive: bool) -> bytes:
    """The status line and headers of a response, as the bytes that go on the wire."""
    status = HTTPStatus(response.status)
    lines = [f"HTTP/1.1 {status.value} {status.phrase}", f"Server: {SERVER_NAME}",
             f"Date: {http_date()}"]
    names = set()
    for name, value in response.headers:
        if "\r" in value or "\n" in value:  # NOTE: never let a value start a new header
            raise ValueError(f"header {name} contains a line break")
        lines.append(f"{name}: {value}")
        names.add(name.lower())
    # Every response: no MIME sniffing, and nothing kept in shared caches (patient data).
    if "x-content-type-options" not in names:
        lines.append("X-Content-Type-Options: nosniff")
    if "cache-control" not in names:
        lines.append("Cache-Control: no-store")
    # RFC 9110 §8.6: a 204 carries no Content-Length (and no body).
    if status != HTTPStatus.NO_CONTENT:
        length = len(response.body) if isinstance(response.body, bytes) else response.content_length
        lines.append(f"Content-Length: {length}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def hang_up(connection) -> None:
    """End a connection from our side; a thread blocked reading it wakes with end of stream."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the client


class IncompleteBody(BadRequest):
    """The client closed the connection before sending Content-Length bytes."""


class BodyReader:
    """A file-like view of the request body that never reads past its declared length.

    It answers `Expect: 100-continue` lazily: the interim 100 response goes out only when
    a handler first reads, so a request refused before then (401, 404, 413) is refused
    without the client sending its body at all (RFC 9110 §10.1.1).
    """

    def __init__(self, rfile, length: int, send_continue=None, on_start=None):
        self._rfile = rfile
        self.remaining = length
        self._send_continue = send_continue
        self._on_start = on_start  # told once, when the body begins to be read
        self.failed = False

    @property
    def awaiting_continue(self) -> bool:
        return self._send_continue is not None and self.remaining > 0

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        if self._on_start is not None:
            self._on_start(self.remaining)
            self._on_start = None
        if self._send_continue is not None:
            self._send_continue()
            self._send_continue = None
        size = self.remaining if size is None or size < 0 else min(size, self.remaining)
        try:
            data = self._rfile.read(size)  # blocks until `size` bytes or end of stream
        except OSError as exc:  # a timeout or a reset: the stream's position is lost
            self.failed = True
            raise IncompleteBody("the connection failed while the body was being read") from exc
        if len(data) < size:
            self.failed = True
            raise IncompleteBody("the body ended before its Content-Length")
        self.remaining -= len(data)
        return data


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = SERVER_NAME
    sys_version = ""                # the Server header must not advertise the Python version
    disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms Nagle/delayed-ACK stall on small writes

    def setup(self):
        # NOTE: every socket gets a timeout, so a client that goes quiet (idle
        # keep-alive, or a slow drip of bytes) frees its thread instead of holding it.
        self.timeout = self.server.socket_timeout
        super().setup()

    def handle_one_request(self):
        started = time.perf_counter()
        self.close_connection, self.command = True, None
        connections = self.server.connections
        connections.waiting(self.connection)
        try:
            request = self._read_request()
            if request is None:
                return
            connections.working(self.connection)
            response = self.server.dispatch(request)
            # A 413 was refused for its size: reading the body now would defeat that.
            keep_alive = (self._wants_keep_alive(request) and response.status != 413
                          and not self.server.stopping and self._body_consumed(request))
        except HTTPError as exc:  # refused while reading the request itself
            request, response, keep_alive = None, problem_response(exc), False
        except OSError:  # timeout, reset, broken pipe: nothing more can be said
            return
        try:
            self._send(response, keep_alive)
        except OSError:
            return
        connections.working(self.connection, False)
        # A server that is shutting down answers this request, then ends the connection.
        self.close_connection = not keep_alive or self.server.stopping
        route = request.route if request and request.route else "-"
        access_log.info("%s %s %d %.1fms", self.command or "-", route, response.status,
                        (time.perf_counter() - started) * 1000)

    # -- reading ---------------------------------------------------------------
    def _read_request(self) -> Request | None:
        line = self.rfile.readline(MAX_REQUEST_LINE + 1)
        if line in (b"\r\n", b"\n"):  # RFC 9112 §2.2: ignore one empty line before a request
            line = self.rfile.readline(MAX_REQUEST_LINE + 1)
        if not line:
            return None  # the client closed the connection between requests
        if len(line) > MAX_REQUEST_LINE:
            raise URITooLong(f"the request line is longer than {MAX_REQUEST_LINE} bytes")
        method, target, version = self._parse_request_line(line)
        self.command, self.path, self.request_version = method, target, version
        headers = self._read_headers()
        # RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host field is a 400.
        if version == "HTTP/1.1" and len(headers.get_all("Host") or []) != 1:
            raise BadRequest("an HTTP/1.1 request must have exactly one Host header")
        length = self._body_length(headers)
        send_continue = None
        if version == "HTTP/1.1" and headers.get("Expect", "").lower() == "100-continue":
            send_continue = self._send_continue
        parts = urlsplit(target)
        try:
            # strict errors: a query that is not UTF-8 is refused, not silently mangled.
            query = parse_qs(parts.query, keep_blank_values=True, errors="strict",
                             max_num_fields=MAX_QUERY_FIELDS)
        except ValueError:
            raise BadRequest("the query string is malformed") from None
        # The body has its own deadline: a slow POST must not hold the thread either.
        on_start = partial(self.server.connections.reading_body, self.connection)
        return Request(method=method, path=parts.path, query=query, headers=headers,
                       body=BodyReader(self.rfile, length, send_continue, on_start), content_length=length,
                       client=self.client_address[0])

    @staticmethod
    def _parse_request_line(line: bytes) -> tuple[str, str, str]:
        # RFC 9112 §3: request-line = method SP request-target SP HTTP-version CRLF
        parts = line.rstrip(b"\r\n").split(b" ")
        if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not parts[1].startswith(b"/"):
            raise BadRequest("the request line is malformed")
        if not HTTP_VERSION.fullmatch(parts[2]):
            raise BadRequest("only HTTP/1.0 and HTTP/1.1 are supported")
        if not VISIBLE_ASCII.fullmatch(parts[1]):
            raise BadRequest("the request target contains characters that must be percent-encoded")
        return parts[0].decode("ascii"), parts[1].decode("ascii"), parts[2].decode("ascii")

    def _read_headers(self) -> Headers:
        headers, total = Headers(), 0
        while True:
            line = self.rfile.readline(MAX_HEADER_BYTES + 1)
            total += len(line)
            if total > MAX_HEADER_BYTES:
                raise HeaderFieldsTooLarge(f"the header section is larger than {MAX_HEADER_BYTES} bytes")
            if line in (b"\r\n", b"\n"):
                return headers
            if not line.endswith(b"\n"):
                raise BadRequest("the header section ended early")
            if headers.count >= MAX_HEADER_COUNT:
                raise HeaderFieldsTooLarge(f"more than {MAX_HEADER_COUNT} header fields")
            name, value = self._parse_header_line(line.rstrip(b"\r\n"))
            headers.add(name, value)

    @staticmethod
    def _parse_header_line(line: bytes) -> tuple[str, str]:
        # RFC 9112 §5.2: obsolete line folding is refused with 400.
        if line[:1] in (b" ", b"\t"):
            raise BadRequest("folded header lines are not accepted")
        name, colon, value = line.partition(b":")
        # RFC 9112 §5.1: no whitespace is allowed between the field name and colon.
        if not colon or not TOKEN.fullmatch(name):
            raise BadRequest("a header line is malformed")
        value = value.strip(b" \t")
        # RFC 9110 §5.5: CR, LF and NUL are never valid inside a field value.
        if FORBIDDEN_IN_VALUE.search(value):
            raise BadRequest("a header value contains a forbidden character")
        return name.decode("ascii"), value.decode("latin-1")

    def _body_length(self, headers: Headers) -> int:
        lengths = headers.get_all("Content-Length") or []
        if headers.get("Transfer-Encoding") is not None:
            # RFC 9112 §6.1: a message with both is a request-smuggling attempt or a
            # broken intermediary; either way we cannot know where the body ends.
            if lengths:
                raise BadRequest("a request must not have both Transfer-Encoding and Content-Length")
            # RFC 9110 §15.5.12: we require a declared length rather than decode chunks.
            raise LengthRequired("chunked request bodies are not accepted; send Content-Length")
        if not lengths:
            return 0
        if len(lengths) > 1 or not CONTENT_LENGTH.fullmatch(lengths[0].encode("latin-1")):
            raise BadRequest("Content-Length must be a single number of ASCII digits")
        return int(lengths[0])

    def _send_continue(self):
        self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- connection management ----------------------------------------------------
    def _wants_keep_alive(self, request: Request) -> bool:
        tokens = {token.strip().lower() for token in request.headers.get("Connection", "").split(",")}
        # RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 closes (we do not
        # implement the old keep-alive extension).
        return self.request_version == "HTTP/1.1" and "close" not in tokens

    @staticmethod
    def _body_consumed(request: Request) -> bool:
        """Read and discard a small unread body so the next request starts where it
        should; a large one, a broken one, or one the client was told to wait for,
        is cheaper to end by closing the connection."""
        body = request.body
        if body.remaining == 0:
            return not body.failed
        if body.failed or body.awaiting_continue or body.remaining > DRAIN_LIMIT:
            return False
        try:
            body.read()
        except (OSError, HTTPError):
            return False
        return True

    # -- writing ---------------------------------------------------------------
    def _send(self, response: Response, keep_alive: bool) -> None:
        head = response_head(response, keep_alive)
        body = response.body
        if self.command == "HEAD":
            # RFC 9110 §9.3.2: HEAD gets GET's headers (Content-Length included) and no
            # body; sending one would be read as the start of the next response.
            body, close = b"", getattr(body, "close", None)
            if close:
                close()
        if isinstance(body, bytes):
            self.wfile.write(head + body)  # one write, one syscall, for the usual small response
            return
        try:
            self.wfile.write(head)
            for chunk in body:
                self.wfile.write(chunk)
        finally:
            close = getattr(body, "close", None)
            if close:
                close()

    def log_message(self, format, *args):
        """Silence http.server's own log lines: they quote the request line, and a
        query string can hold a patient's name. We log one line per request above."""


class MediTrackServer(ThreadingHTTPServer):
    """A thread per connection, never more than `max_connections` of them, a deep listen
    backlog, the dispatch function to call, and a shutdown that lets requests finish."""

    request_queue_size = 128  # socketserver's default of 5 drops connections in a burst
    daemon_threads = True

    def __init__(self, address: tuple[str, int], dispatch, *, socket_timeout: float = 30.0,
                 max_connections: int = 200, header_timeout: float = 10.0, min_body_rate: float = 16 * 1024,
                 clock=time.monotonic):
        self.dispatch = dispatch
        self.socket_timeout = socket_timeout
        self.connections = ConnectionRegistry(max_connections=max_connections, header_timeout=header_timeout,
                                              min_body_rate=min_body_rate, clock=clock)
        self.stopping = False
        super().__init__(address, RequestHandler)

    def process_request(self, request, client_address):
        # NOTE: the cap is checked before a thread is started, so a flood of connections
        # costs one refusal each, never a thread each.
        if self.connections.admit(request):
            super().process_request(request, client_address)
            return
        self._refuse(request)

    def _refuse(self, connection) -> None:
        """Answer 503 at once and close: the client learns to retry, the accept loop
        never waits on it (the few hundred bytes fit in the socket's send buffer)."""
        response = problem_response(ServiceUnavailable("the server has too many connections; retry shortly",
                                                       headers=(("Retry-After", "1"),)))
        try:
            connection.setblocking(False)
            connection.send(response_head(response, keep_alive=False) + response.body)
        except OSError:
            pass
        super().shutdown_request(connection)

    def shutdown_request(self, request):
        self.connections.release(request)
        super().shutdown_request(request)

    def service_actions(self):
        """Called by serve_forever() between accepts (about twice a second): end the
        connections whose request head or body is overdue (slowloris, slow POST)."""
        super().service_actions()
        for connection in self.connections.stalled():
            hang_up(connection)

    def drain(self, grace: float) -> bool:
        """After serve_forever() has returned: close idle connections, let requests in
        progress finish for up to `grace` seconds, then end whatever is left.
        True when every request finished in time."""
        # Stop listening first: a connection accepted by the kernel now would be served
        # by no one, and should be refused at once rather than left waiting.
        self.server_close()
        self.stopping = True
        for connection in self.connections.idle():
            hang_up(connection)
        finished = self.connections.wait_until_empty(grace)
        for connection in self.connections.all():
            hang_up(connection)  # an upload cut off here is discarded by its writer
        self.connections.wait_until_empty(grace)
        return finished

    def server_bind(self):
        # HTTPServer.server_bind would call socket.getfqdn(), a DNS look-up we do not need.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
