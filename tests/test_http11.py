"""Tests for web/http11.py, the sans-I/O HTTP/1.1 codec: bytes in, values out, no socket.

Each request head is fed whole, and again one byte at a time, and must give the same
result: the codec may never depend on how the network happened to split the bytes.
The tests named after an RFC rule are the ones an outside differential test (against
h11) found us breaking.
"""

import pytest

from web.http11 import (LAST_CHUNK, MAX_HEADER_BYTES, MAX_HEADER_COUNT, MAX_REQUEST_LINE, ChunkedBodyRefused,
                        HeaderSectionTooLarge, IncompleteMessage, ProtocolError, RequestHeadReader,
                        RequestLineTooLong, VersionNotSupported, chunk, response_has_body, response_head)

SIMPLE = b"GET /patients?limit=5&q=ada HTTP/1.1\r\nHost: example.org\r\nAccept: */*\r\n\r\n"


def parse(data: bytes, **limits):
    """Feed `data` in one piece; the head, and how many bytes it used."""
    return RequestHeadReader(**limits).feed(data)


def parse_byte_by_byte(data: bytes, **limits):
    """Feed `data` one byte at a time, as a very slow client would send it."""
    reader, used = RequestHeadReader(**limits), 0
    for index in range(len(data)):
        head, taken = reader.feed(data[index:index + 1])
        used += taken
        if head is not None:
            return head, used
    return None, used


FEEDERS = pytest.mark.parametrize("feed", [parse, parse_byte_by_byte], ids=["whole", "byte-by-byte"])


def request(*header_lines: str, line: str = "GET / HTTP/1.1", host: str | None = "example.org") -> bytes:
    lines = [line, *([f"Host: {host}"] if host is not None else []), *header_lines]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --- a head, however it arrives ------------------------------------------------------


@FEEDERS
def test_a_request_head_gives_method_path_query_version_and_headers(feed):
    head, used = feed(SIMPLE)
    assert (head.method, head.target, head.path) == ("GET", "/patients?limit=5&q=ada", "/patients")
    assert head.query == {"limit": ["5"], "q": ["ada"]}
    assert head.version == (1, 1)
    assert head.headers.get("accept") == "*/*" and head.headers.get("HOST") == "example.org"
    assert head.content_length == 0
    assert used == len(SIMPLE)


@FEEDERS
def test_the_bytes_after_the_head_are_left_for_the_body_and_the_next_request(feed):
    body = b'{"a": 1}'
    post = request("Content-Length: 8", line="POST /patients HTTP/1.1")
    head, used = feed(post + body + SIMPLE)
    assert head.content_length == 8
    assert used == len(post)  # the body and the pipelined request are not the head's


def test_a_head_split_at_every_position_parses_the_same():
    expected = parse(SIMPLE)[0]
    for split in range(1, len(SIMPLE)):
        reader = RequestHeadReader()
        first, used_first = reader.feed(SIMPLE[:split])
        assert first is None and used_first == split
        head, used = reader.feed(SIMPLE[split:])
        assert head == expected or (head.path, head.query, head.headers._fields) == (
            expected.path, expected.query, expected.headers._fields)
        assert used == len(SIMPLE) - split


@FEEDERS
def test_bare_lf_line_endings_are_accepted(feed):
    # RFC 9112 §2.2: a recipient MAY recognize a single LF as a line terminator.
    head, _ = feed(b"GET /health HTTP/1.1\nHost: x\n\n")
    assert head.path == "/health" and head.headers.get("Host") == "x"


@FEEDERS
def test_rfc9112_2_2_one_empty_line_before_the_request_line_is_ignored(feed):
    head, used = feed(b"\r\n" + SIMPLE)
    assert head.path == "/patients" and used == len(SIMPLE) + 2


def test_the_peer_closing_between_requests_is_not_an_error():
    reader = RequestHeadReader()
    assert reader.end_of_stream() is None
    assert reader.feed(b"\r\n") == (None, 2)  # an empty line before a request line: waiting for more
    assert reader.end_of_stream() is None
    inside = RequestHeadReader()  # what it is told apart from: a close inside a request head
    inside.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(IncompleteMessage):
        inside.end_of_stream()


def test_the_peer_closing_in_the_middle_of_a_head_is_an_incomplete_message():
    reader = RequestHeadReader()
    reader.feed(SIMPLE[:20])
    with pytest.raises(IncompleteMessage):
        reader.end_of_stream()


# --- the four rules a differential test found -------------------------------------------


@FEEDERS
@pytest.mark.parametrize("target, path, query", [
    ("http://example.org/health", "/health", {}),
    ("HTTP://example.org:8000/patients?limit=2", "/patients", {"limit": ["2"]}),
    ("https://example.org", "/", {}),
    ("http://example.org?q=x", "/", {"q": ["x"]}),
])
def test_rfc9112_3_2_2_an_absolute_form_target_is_accepted_and_routed_by_its_path(feed, target, path, query):
    head, _ = feed(request(line=f"GET {target} HTTP/1.1"))
    assert (head.path, head.query, head.target) == (path, query, target)


@pytest.mark.parametrize("target", ["ftp://example.org/health", "http:///health", "http://user@example.org/",
                                    "example.org/health", "*"])
def test_other_request_targets_are_refused(target):
    with pytest.raises(ProtocolError):
        parse(request(line=f"GET {target} HTTP/1.1"))


@FEEDERS
@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_rfc9112_3_2_more_than_one_host_is_refused_in_every_version(feed, version):
    data = request("Host: other.example", line=f"GET / HTTP/{version}")
    with pytest.raises(ProtocolError, match="Host"):
        feed(data)


def test_rfc9112_3_2_an_http_1_1_request_needs_a_host_and_http_1_0_does_not():
    with pytest.raises(ProtocolError, match="Host"):
        parse(request(host=None))
    assert parse(request(line="GET / HTTP/1.0", host=None))[0].version == (1, 0)


@FEEDERS
@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\rHost: x\r\n\r\n",                 # CR as a line end
    b"GET /\r HTTP/1.1\r\nHost: x\r\n\r\n",             # in the request line
    b"GET / HTTP/1.1\r\r\nHost: x\r\n\r\n",             # doubled before CRLF
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r2\r\n\r\n",  # inside a value
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A\r: 1\r\n\r\n",   # inside a name
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\r\n",             # in the empty line
], ids=["line-end", "request-line", "doubled", "value", "name", "empty-line"])
def test_rfc9112_2_2_a_bare_cr_anywhere_in_the_head_is_refused(feed, data):
    with pytest.raises(ProtocolError):
        feed(data)


@pytest.mark.parametrize("version", ["2.0", "3.0", "0.9"])
def test_rfc9110_2_5_an_unsupported_major_version_is_505(version):
    with pytest.raises(VersionNotSupported):
        parse(request(line=f"GET / HTTP/{version}"))


def test_rfc9110_2_5_a_higher_minor_version_is_answered_as_http_1_1():
    head, _ = parse(request(line="GET / HTTP/1.2"))
    assert head.version == (1, 1) and head.keep_alive


@pytest.mark.parametrize("line", ["GET / HTTP/1.10", "GET / http/1.1", "GET / HTTP/1", "GET / HTTP/x.y",
                                  "GET /  HTTP/1.1", "GET / HTTP/1.1 ", "G@T / HTTP/1.1", "GET"])
def test_a_malformed_request_line_is_refused(line):
    with pytest.raises(ProtocolError):
        parse(request(line=line))


# --- limits, checked while the bytes arrive ---------------------------------------------


def line_of(length: int) -> bytes:
    """A request line of exactly `length` bytes, CRLF included."""
    prefix, suffix = b"GET /", b" HTTP/1.1\r\n"
    return prefix + b"a" * (length - len(prefix) - len(suffix)) + suffix


def test_a_request_line_at_the_limit_is_accepted():
    head, _ = parse(line_of(MAX_REQUEST_LINE) + b"Host: x\r\n\r\n")
    assert len(head.path) == MAX_REQUEST_LINE - len(b"GET  HTTP/1.1\r\n")


def test_a_request_line_over_the_limit_is_refused():
    with pytest.raises(RequestLineTooLong):
        parse(line_of(MAX_REQUEST_LINE + 1) + b"Host: x\r\n\r\n")


def test_an_endless_request_line_is_refused_before_it_ends():
    reader = RequestHeadReader()
    reader.feed(b"GET /" + b"a" * (MAX_REQUEST_LINE - 10))
    with pytest.raises(RequestLineTooLong):
        reader.feed(b"a" * 20)  # no line end yet: the limit does not wait for one


def test_header_fields_up_to_the_count_limit_are_accepted_and_one_more_is_431():
    fields = [f"X-Field-{number}: {number}" for number in range(MAX_HEADER_COUNT - 1)]  # + Host
    assert parse(request(*fields))[0].headers.count == MAX_HEADER_COUNT
    with pytest.raises(HeaderSectionTooLarge):
        parse(request(*fields, "X-One-Too-Many: 1"))


def test_a_header_section_over_the_byte_limit_is_refused_before_it_ends():
    reader = RequestHeadReader()
    reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
    with pytest.raises(HeaderSectionTooLarge):
        reader.feed(b"a" * MAX_HEADER_BYTES)


def test_limits_are_parameters():
    with pytest.raises(RequestLineTooLong):
        parse(SIMPLE, max_request_line=20)
    with pytest.raises(HeaderSectionTooLarge):
        parse(SIMPLE, max_headers=1)


@pytest.mark.parametrize("line", [" Folded: value", "No-Colon", "Space Name: x", "Name : x", ": empty-name",
                                  "X-Nul: a\x00b"])
def test_a_malformed_header_line_is_refused(line):
    with pytest.raises(ProtocolError):
        parse(request(line) if not line.startswith(" ") else request("X-A: 1", line))


def test_header_values_lose_surrounding_whitespace_and_keep_every_value():
    head, _ = parse(request("X-Forwarded-For:  10.0.0.1 \t", "x-forwarded-for: 10.0.0.2"))
    assert head.headers.get_all("X-Forwarded-For") == ["10.0.0.1", "10.0.0.2"]


# --- framing ----------------------------------------------------------------------------


@pytest.mark.parametrize("fields, error", [
    (["Transfer-Encoding: chunked"], ChunkedBodyRefused),
    (["Transfer-Encoding: chunked", "Content-Length: 5"], ProtocolError),
    (["Content-Length: 5", "Content-Length: 5"], ProtocolError),
    (["Content-Length: +5"], ProtocolError),
    (["Content-Length: 5 "], None),  # trailing whitespace is not part of the value
    (["Content-Length: 0x5"], ProtocolError),
    (["Content-Length: ²"], ProtocolError),  # str.isdigit() says yes; RFC 9110 says DIGIT
    (["Content-Length: 1234567890123456789"], ProtocolError),
])
def test_rfc9112_6_a_body_length_we_cannot_trust_is_refused(fields, error):
    data = request(*fields, line="POST / HTTP/1.1")
    if error is None:
        assert parse(data)[0].content_length == 5
    else:
        with pytest.raises(error):
            parse(data)


@pytest.mark.parametrize("line, fields, keep_alive", [
    ("GET / HTTP/1.1", [], True),
    ("GET / HTTP/1.1", ["Connection: close"], False),
    ("GET / HTTP/1.1", ["Connection: keep-alive, Close"], False),
    ("GET / HTTP/1.0", [], False),
    ("GET / HTTP/1.0", ["Connection: keep-alive"], False),
])
def test_rfc9112_9_3_which_connections_persist(line, fields, keep_alive):
    assert parse(request(*fields, line=line))[0].keep_alive is keep_alive


@pytest.mark.parametrize("line, fields, expects", [
    ("POST / HTTP/1.1", ["Expect: 100-continue", "Content-Length: 3"], True),
    ("POST / HTTP/1.1", ["Expect: 100-Continue", "Content-Length: 3"], True),
    ("POST / HTTP/1.1", ["Expect: 100-continue"], False),                   # no body to wait for
    ("POST / HTTP/1.0", ["Expect: 100-continue", "Content-Length: 3"], False),
    ("POST / HTTP/1.1", ["Content-Length: 3"], False),
])
def test_rfc9110_10_1_1_who_waits_for_100_continue(line, fields, expects):
    assert parse(request(*fields, line=line))[0].expects_continue is expects


# --- the response head ------------------------------------------------------------------


def test_a_response_head_has_the_status_line_headers_and_length():
    head = response_head(201, [("Content-Type", "application/json"), ("Location", "/patients/1")],
                         content_length=12, keep_alive=True)
    assert head == (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nLocation: /patients/1\r\n"
                    b"Content-Length: 12\r\n\r\n")


def test_a_204_has_no_content_length_and_a_closing_response_says_so():
    assert response_head(204, [], content_length=0, keep_alive=False) == \
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"


def test_rfc9112_7_1_a_chunked_body_says_so_kept_or_closing():
    assert response_head(200, [], content_length=None, keep_alive=True, chunked=True) == \
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert response_head(200, [], content_length=None, keep_alive=False, chunked=True) == \
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"


def test_rfc9112_6_3_a_body_of_unknown_length_not_chunked_ends_with_the_connection():
    assert response_head(200, [], content_length=None, keep_alive=False) == \
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
    with pytest.raises(ValueError):
        response_head(200, [], content_length=None, keep_alive=True)  # the client could not find its end


def test_rfc9112_7_1_a_chunk_is_its_hex_size_crlf_data_crlf():
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"
    with pytest.raises(ValueError):
        chunk(b"")  # a chunk of size 0 would end the body


def test_a_header_value_with_a_line_break_is_never_written():
    with pytest.raises(ValueError):
        response_head(200, [("Location", "/x\r\nSet-Cookie: a=b")], content_length=0, keep_alive=True)


@pytest.mark.parametrize("method, status, has_body", [
    ("GET", 200, True), ("HEAD", 200, False), ("DELETE", 204, False), ("POST", 201, True), ("HEAD", 404, False),
])
def test_rfc9110_9_3_2_head_and_204_responses_carry_no_body(method, status, has_body):
    assert response_has_body(method, status) is has_body
