"""The socket loop: bytes from a connection into the HTTP/1.1 codec, responses back out.

Built on the standard library's `ThreadingHTTPServer` (one thread per connection).
Everything HTTP/1.1 says about the bytes — the request line, header fields, limits,
framing, the response head — is decided in `web/http11.py`, which never sees a
socket. What is left here is the I/O: read until the codec has a head, hand the
request to the dispatcher, stream the body to whoever reads it, write the response,
and repeat while the connection stays open (RFC 9112 §9.3).

It also owns what only the I/O side can know: socket timeouts, the connection cap,
closing connections that are overdue (`web/connections.py`), and a graceful drain.
This is the only module that touches sockets; everything it hands on is a plain value.
"""

import logging
import socket
import time
from functools import partial
from http.server import ThreadingHTTPServer
from socketserver import StreamRequestHandler, TCPServer
from typing import Callable

import system
from web.connections import ConnectionRegistry
from web.http11 import (CONTINUE, LAST_CHUNK, IncompleteMessage, ProtocolError, RequestHead, RequestHeadReader,
                        chunk, response_has_body, response_head)
from web.messages import IncomingRequest, Response, new_request_id
from web.problems import ServiceUnavailable, problem_response

SERVER_NAME = "MediTrack"       # the Server header: no version of Python or of us
DRAIN_LIMIT = 64 * 1024          # unread body bytes we will read and discard to keep a connection
# Every response gets these unless it sets its own: no MIME sniffing, and nothing kept
# in shared caches (the responses hold patient data).
DEFAULT_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"))

access_log = logging.getLogger("meditrack.access")
error_log = logging.getLogger("meditrack.errors")


# RFC 9110 §5.6.7: the names in an HTTP date are English whatever the locale.
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: float) -> str:
    """RFC 9110 §6.6.1: the Date header in IMF-fixdate form, e.g. "Sun, 06 Dec 2026 20:07:53 GMT"."""
    now = time.gmtime(seconds)
    return (f"{_DAYS[now.tm_wday]}, {now.tm_mday:02d} {_MONTHS[now.tm_mon - 1]} {now.tm_year} "
            f"{now.tm_hour:02d}:{now.tm_min:02d}:{now.tm_sec:02d} GMT")


def encode_head(response: Response, keep_alive: bool, request_id: str, *, chunked: bool = False) -> bytes:
    """The response's head with the headers every response carries."""
    headers = [("Server", SERVER_NAME), ("Date", http_date(time.time())), ("X-Request-Id", request_id),
               *response.headers]
    present = {name.lower() for name, _ in response.headers}
    headers += [(name, value) for name, value in DEFAULT_HEADERS if name.lower() not in present]
    length = len(response.body) if isinstance(response.body, bytes) else response.content_length
    return response_head(response.status, headers, content_length=length, keep_alive=keep_alive, chunked=chunked)


def read_head(rfile) -> RequestHead | None:
    """Read one request head from a buffered stream; None if the peer closed first.

    `peek` shows what is buffered (making one `recv` when nothing is) without taking
    it; the codec says how much of that was the head, and only that much is taken,
    so the body and any pipelined request stay in the buffer for whoever reads next.
    """
    reader = RequestHeadReader()
    while True:
        data = rfile.peek(1)
        if not data:
            reader.end_of_stream()
            return None
        head, used = reader.feed(data)
        rfile.read(used)
        if head is not None:
            return head


def hang_up(connection) -> None:
    """End a connection from our side; a thread blocked reading it wakes with end of stream."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the client


def close_body(body) -> None:
    close = getattr(body, "close", None)
    if close:
        close()


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
            raise IncompleteMessage("the connection failed while the body was being read") from exc
        if len(data) < size:
            self.failed = True
            raise IncompleteMessage("the body ended before its Content-Length")
        self.remaining -= len(data)
        return data

    def finish(self) -> bool:
        """Read and discard a small unread body so the next request starts where it
        should; True when the connection is still in step. A large body, a broken one,
        or one the client was told to wait for, is cheaper to end by closing."""
        if self.remaining == 0:
            return not self.failed
        if self.failed or self.awaiting_continue or self.remaining > DRAIN_LIMIT:
            return False
        try:
            self.read()
        except ProtocolError:
            return False
        return True


class ConnectionHandler(StreamRequestHandler):
    """One connection: its requests read and answered in turn until one side ends it."""

    disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms Nagle/delayed-ACK stall on small writes

    def setup(self):
        # NOTE: every socket gets a timeout, so a client that goes quiet (idle
        # keep-alive, or a slow drip of bytes) frees its thread instead of holding it.
        self.timeout = self.server.socket_timeout
        super().setup()

    def handle(self):
        # RFC 9112 §9.3: a persistent connection carries one request after another.
        while self.serve_one_request():
            pass

    def serve_one_request(self) -> bool:
        """Read, dispatch and answer one request; True if the connection stays open."""
        connections = self.server.connections
        connections.waiting(self.connection)
        try:
            head = read_head(self.rfile)
        except ProtocolError as exc:  # refused while reading the head: answer, then close
            self._answer_refusal(exc)
            return False
        except OSError:  # timeout, reset: nothing more can be said
            return False
        if head is None:
            return False  # the client closed the connection between requests
        started = time.perf_counter()
        connections.working(self.connection)
        body = BodyReader(self.rfile, head.content_length,
                          send_continue=self._send_continue if head.expects_continue else None,
                          # The body has its own deadline: a slow POST must not hold the thread.
                          on_start=partial(connections.reading_body, self.connection))
        response, exchange = self.server.dispatch(IncomingRequest(
            method=head.method, path=head.path, query=head.query, headers=head.headers, body=body,
            content_length=head.content_length, peer=self.client_address[0]))
        # A 413 was refused for its size: reading the body now would defeat that.
        keep_alive = (head.keep_alive and response.status != 413 and not self.server.stopping
                      and body.finish())
        try:
            keep_alive = self._send(response, head.method, keep_alive, exchange.request_id, head.version)
        except OSError:
            return False
        connections.working(self.connection, False)
        # The route's template, never the path itself: a path can hold what a client typed.
        access_log.info("%s %s %d %.1fms %s", head.method, exchange.template, response.status,
                        (time.perf_counter() - started) * 1000, exchange.request_id)
        # A server that is shutting down answers this request, then ends the connection.
        return keep_alive and not self.server.stopping

    def _answer_refusal(self, error: ProtocolError) -> None:
        response, request_id = self.server.refuse(error), new_request_id()
        try:
            self._send(response, "-", False, request_id)
        except OSError:
            return
        access_log.info("- - %d - %s", response.status, request_id)

    def _send_continue(self):
        self.wfile.write(CONTINUE)

    def _send(self, response: Response, method: str, keep_alive: bool, request_id: str,
              version: tuple[int, int] = (1, 1)) -> bool:
        """Write the response; False if the connection must close after it (a streamed
        body that failed half-way, or one that only the close can end)."""
        # A body of unknown length: chunked to HTTP/1.1, whose last chunk tells the
        # client it has it all; HTTP/1.0 knows no chunks (RFC 9112 §6.1), so the close
        # ends its body, and a body cut short cannot be told from a whole one there.
        streamed = not isinstance(response.body, bytes) and response.content_length is None
        chunked = streamed and version >= (1, 1)
        keep_alive = keep_alive and (chunked or not streamed)
        head, body = encode_head(response, keep_alive, request_id, chunked=chunked), response.body
        if not response_has_body(method, response.status):
            # RFC 9110 §9.3.2: HEAD gets GET's headers (Content-Length included) and no
            # body; sending one would be read as the start of the next response.
            close_body(body)
            body = b""
        if isinstance(body, bytes):
            self.wfile.write(head + body)  # one write, one syscall, for the usual small response
            return keep_alive
        try:
            self.wfile.write(head)
            for data in body:
                if data:
                    self.wfile.write(chunk(data) if chunked else data)
            if chunked:
                self.wfile.write(LAST_CHUNK)
        except OSError:
            raise  # the client is gone: the caller closes the connection
        except Exception:
            # NOTE: the status line is gone already, so no problem+json can follow.
            # Closing short of the last chunk (or of Content-Length) is how HTTP/1.1
            # tells the client the body is incomplete (RFC 9112 §8).
            error_log.exception("a response body failed while it was being sent")
            return False
        finally:
            close_body(body)
        return keep_alive


class MediTrackServer(ThreadingHTTPServer):
    """A thread per connection, never more than `max_connections` of them, a deep listen
    backlog, the dispatch function to call, and a shutdown that lets requests finish.

    `dispatch(IncomingRequest)` returns the response and the exchange that led to it
    (its route template and request id, for the access log)."""

    request_queue_size = 128  # socketserver's default of 5 drops connections in a burst
    daemon_threads = True
    # HTTPServer sets SO_REUSEADDR so a restart can bind at once; on Windows that option
    # would let a second server bind the port this one serves (system.py).
    allow_reuse_address = system.REUSE_ADDRESS_IS_SAFE

    def __init__(self, address: tuple[str, int], dispatch, *, socket_timeout: float = 30.0,
                 max_connections: int = 200, header_timeout: float = 10.0, min_body_rate: float = 16 * 1024,
                 clock=time.monotonic, refuse: Callable[[ProtocolError], Response] = problem_response,
                 listener: socket.socket | None = None):
        self.dispatch = dispatch
        self.refuse = refuse  # the answer to a request head the codec refused (the dispatcher's, in meditrack.py)
        self.socket_timeout = socket_timeout
        self.connections = ConnectionRegistry(max_connections=max_connections, header_timeout=header_timeout,
                                              min_body_rate=min_body_rate, clock=clock)
        self.stopping = False
        if listener is None:
            super().__init__(address, ConnectionHandler)
            return
        # A worker (web/workers/prefork.py) serves the socket its parent bound and listens on.
        super().__init__(address, ConnectionHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.server_address = listener.getsockname()

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
            connection.send(encode_head(response, False, new_request_id()) + response.body)
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
