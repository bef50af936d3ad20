"""A minimal HTTP/1.1 client over a raw socket, for what `requests` would hide.

`requests` hides exactly what the protocol tests are about: where one message ends,
whether a connection stays open, whether a 100 Continue was sent. `RawConnection`
sends bytes and reads one whole response at a time: the status line, the header
section, and exactly Content-Length bytes of body (RFC 9112 §6.3). Because it never
reads past a response, several requests can share one connection, and a server that
frames a message wrongly shows up as garbage where the next status line should be.

Every socket has a timeout, so a server that hangs fails a test instead of the suite.
A `server` here is anything with `host` and `port` (a `LiveServer`, a process);
`assert_still_serving` also wants its `store`.
"""

import json
import socket
from dataclasses import dataclass


@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        assert len(values) <= 1, f"{name} appears {len(values)} times"
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)


class RawConnection:
    """One TCP connection; `read_response` reads exactly one response off it."""

    def __init__(self, server, timeout: float = 5.0):
        self.sock = socket.create_connection((server.host, server.port), timeout=timeout)
        self.rfile = self.sock.makefile("rb")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        self.rfile.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, data: bytes, *, head: bool = False) -> RawResponse:
        self.send(data)
        return self.read_response(head=head)

    def read_response(self, *, head: bool = False) -> RawResponse:
        """Status line, headers, then exactly Content-Length bytes, or the chunks of a
        chunked body (none for 1xx, 204, 304, HEAD)."""
        status_line = self.rfile.readline(65537)
        assert status_line, "the server closed the connection instead of answering"
        assert status_line.endswith(b"\r\n"), f"not a status line: {status_line!r}"
        version, status, reason = status_line[:-2].decode("latin-1").split(" ", 2)
        assert version.startswith("HTTP/1."), f"not a status line: {status_line!r}"
        headers = []
        while True:
            line = self.rfile.readline(65537)
            assert line.endswith(b"\r\n"), f"the header section ended early: {line!r}"
            if line == b"\r\n":
                break
            name, colon, value = line[:-2].decode("latin-1").partition(":")
            assert colon, f"not a header line: {line!r}"
            headers.append((name, value.strip()))
        response = RawResponse(version, int(status), reason, headers, b"")
        # RFC 9112 §6.3: 1xx, 204, 304 and any response to HEAD end with the header section.
        if response.status < 200 or response.status in (204, 304) or head:
            return response
        if response.header("Transfer-Encoding") == "chunked":
            response.body = self._read_chunks()
            return response
        length = response.header("Content-Length")
        assert length is not None, f"a {response.status} response has no Content-Length"
        assert length.isdigit(), f"Content-Length {length!r}"
        response.body = self.rfile.read(int(length))
        assert len(response.body) == int(length), "the body is shorter than its Content-Length"
        return response

    def _read_chunks(self) -> bytes:
        """A chunked body (RFC 9112 §7.1), read strictly: hex sizes, CRLF after each
        chunk, the last chunk and no trailer fields."""
        body = b""
        while True:
            size_line = self.rfile.readline(100)
            assert size_line.endswith(b"\r\n") and size_line[:-2].isalnum(), f"not a chunk size: {size_line!r}"
            size = int(size_line[:-2], 16)
            if size == 0:
                assert self.rfile.readline(3) == b"\r\n", "no CRLF after the last chunk"
                return body
            data = self.rfile.read(size)
            assert len(data) == size and self.rfile.read(2) == b"\r\n", "a chunk is shorter than its size"
            body += data

    def server_closed(self) -> bool:
        """Whether the server has ended the connection: reading finds end of stream
        (or a reset). Bounded by the socket's timeout, which raises if it stays open."""
        try:
            return self.rfile.read(1) == b""
        except ConnectionResetError:
            return True


def http_request(method: str, target: str, *, headers: dict[str, str] | None = None,
                 body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    """A request as bytes; Host is always sent, Content-Length whenever there is a body."""
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1"]
    all_headers = dict(headers or {})
    if body and "Content-Length" not in all_headers:
        all_headers["Content-Length"] = str(len(body))
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def exchange(server, data: bytes, *, timeout: float = 5.0) -> RawResponse:
    """Send one request on a fresh connection and read its response."""
    with RawConnection(server, timeout) as connection:
        return connection.request(data)


def assert_still_serving(server) -> None:
    """A refusal must cost the client one connection, never the server its service."""
    response = exchange(server, http_request("GET", "/health"))
    assert response.status == 200
    assert response.json()["status"] == "ok" and response.json()["store"] == server.store.name
