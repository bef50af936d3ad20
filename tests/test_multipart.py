"""Tests for web/multipart.py, the streaming multipart/form-data parser (RFC 7578, RFC 2046 §5.1).

Most tests compare parts, not events: `fold` turns events into
[(name, filename, content_type, data)] and checks on the way that they come in a legal
order and that no PartData is empty. Every good body must give the same parts however
it is cut into chunks.
"""

import io

import pytest
import requests

from web.multipart import (
    BadBoundary, FieldTooLarge, FileTooLarge, IncompleteBody, MalformedBody, MissingPartName,
    MultipartParser, PartData, PartEnd, PartHeadersTooLarge, PartStart, TooManyPartHeaders,
    TooManyParts, boundary_from_content_type, iter_parts,
)

BOUNDARY = b"xYzZY"
DELIMITER = b"\r\n--" + BOUNDARY


def form_part(name, data, filename=None, content_type=None, extra_headers=b""):
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    headers = f"Content-Disposition: {disposition}\r\n".encode() + extra_headers
    if content_type is not None:
        headers += f"Content-Type: {content_type}\r\n".encode()
    return headers + b"\r\n" + data


def multipart_body(*parts, preamble=b"", epilogue=b""):
    """The test's own encoder: `parts` are raw header blocks and data, as form_part makes."""
    dash_boundary = b"--" + BOUNDARY
    return (preamble + dash_boundary + b"\r\n" + (DELIMITER + b"\r\n").join(parts)
            + DELIMITER + b"--" + epilogue)


def fold(events):
    parts, current = [], None
    for event in events:
        if isinstance(event, PartStart):
            assert current is None, "PartStart inside a part"
            current = [event, b""]
        elif isinstance(event, PartData):
            assert current is not None and event.data, "empty PartData, or data outside a part"
            current[1] += event.data
        else:
            assert isinstance(event, PartEnd) and current is not None, "PartEnd outside a part"
            start, data = current
            parts.append((start.name, start.filename, start.content_type, data))
            current = None
    assert current is None, "a part never ended"
    return parts


def parse_chunks(chunks, boundary=BOUNDARY, **limits):
    parser = MultipartParser(boundary, **limits)
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    parser.close()
    return fold(events)


def parse(body, boundary=BOUNDARY, **limits):
    """Parse a whole body; return [(name, filename, content_type, data)]."""
    return parse_chunks([body], boundary, **limits)


def one_byte_at_a_time(body):
    return [body[i:i + 1] for i in range(len(body))]


SAMPLE_FILE = b"%PDF-1.7\r\n" + bytes(range(256)) + b"\r\n--" + BOUNDARY[:-1] + b"\r\n"
SAMPLE_BODY = multipart_body(
    form_part("description", b"Chest X-ray, 2024"),
    form_part("file", SAMPLE_FILE, filename="scan.pdf", content_type="application/pdf"),
    preamble=b"preamble to ignore\r\n", epilogue=b"\r\nepilogue to ignore\r\n")
SAMPLE_PARTS = [
    ("description", None, None, b"Chest X-ray, 2024"),
    ("file", "scan.pdf", "application/pdf", SAMPLE_FILE),
]


def test_sample_body_fed_in_one_piece():
    assert parse(SAMPLE_BODY) == SAMPLE_PARTS


def test_sample_body_fed_one_byte_at_a_time():
    assert parse_chunks(one_byte_at_a_time(SAMPLE_BODY)) == SAMPLE_PARTS


def test_boundary_split_at_every_byte():
    for cut in range(len(SAMPLE_BODY) + 1):
        assert parse_chunks([SAMPLE_BODY[:cut], SAMPLE_BODY[cut:]]) == SAMPLE_PARTS, cut


def test_small_body_split_at_every_pair_of_positions():
    body = multipart_body(form_part("a", b"x\r\n-y"), form_part("b", b"\r", filename="b"))
    expected = [("a", None, None, b"x\r\n-y"), ("b", "b", None, b"\r")]
    for first in range(len(body) + 1):
        for second in range(first, len(body) + 1):
            chunks = [body[:first], body[first:second], body[second:]]
            assert parse_chunks(chunks) == expected, (first, second)


BOUNDARY_LIKE_DATA = {
    "delimiter one byte short, at the end": b"\r\n--" + BOUNDARY[:-1],
    "delimiter one byte short, mid-data": b"\r\n--" + BOUNDARY[:-1] + b"Q\r\n",
    "boundary mid-line without CRLF": b"text--" + BOUNDARY + b"--more",
    "almost a delimiter after the blank line": b"--" + BOUNDARY[:-1] + b"Q",
    "boundary in another case": b"\r\n--" + BOUNDARY.lower(),
    "lone CR and lone LF": b"lone\rCR and lone\nLF\r\r\n\n",
    "CRLF dash": b"\r\n-",
    "CRLF dash dash": b"\r\n--",
    "CR": b"\r",
    "CRLF": b"\r\n",
    "CRLF CRLF": b"\r\n\r\n",
    "all 256 byte values": bytes(range(256)),
    "all 256 byte values, reversed, thrice": bytes(range(256))[::-1] * 3,
}


@pytest.mark.parametrize("data", BOUNDARY_LIKE_DATA.values(), ids=BOUNDARY_LIKE_DATA.keys())
def test_boundary_like_data_survives_byte_exact_at_every_split(data):
    body = multipart_body(form_part("file", data, filename="f.bin"))
    expected = [("file", "f.bin", None, data)]
    assert parse_chunks(one_byte_at_a_time(body)) == expected
    for cut in range(len(body) + 1):
        assert parse_chunks([body[:cut], body[cut:]]) == expected, cut


@pytest.mark.parametrize("data", [
    DELIMITER + b"X",               # a longer token that starts with the boundary
    DELIMITER + b" \tX",            # padding, then junk instead of CRLF
    DELIMITER + b"-X",              # half a closing delimiter
    b"--" + BOUNDARY + b"X",        # the same, at the start of the data
], ids=repr)
def test_line_starting_with_delimiter_then_other_bytes_is_malformed(data):
    # RFC 2046 §5.1.1 forbids the boundary as the prefix of any line in a part; the parser
    # refuses such a body rather than guess whether it is data (see the NOTE in the module).
    body = multipart_body(form_part("file", data, filename="f.bin"))
    with pytest.raises(MalformedBody):
        parse(body)
    with pytest.raises(MalformedBody):
        parse_chunks(one_byte_at_a_time(body))


@pytest.mark.parametrize("blank_lines", [b"\r\n", b"\r\n\r\n"])
def test_part_may_end_right_after_its_headers(blank_lines):
    # With or without the blank line's own CRLF before the delimiter, the data is empty.
    body = (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="a"\r\n'
            + blank_lines + b"--" + BOUNDARY + b"--")
    assert parse(body) == [("a", None, None, b"")]
    assert parse_chunks(one_byte_at_a_time(body)) == [("a", None, None, b"")]


def test_body_built_by_requests_is_parsed():
    data = bytes(range(256)) * 40
    prepared = requests.Request(
        "POST", "http://x/", files={"file": ("a.pdf", data, "application/pdf")},
        data={"description": "d"}).prepare()
    boundary = boundary_from_content_type(prepared.headers["Content-Type"])
    assert parse(prepared.body, boundary) == [
        ("description", None, None, b"d"),
        ("file", "a.pdf", "application/pdf", data),
    ]


def test_hand_built_body_with_quoted_boundary_preamble_padding_and_epilogue():
    boundary = boundary_from_content_type('multipart/form-data; boundary="simple boundary"')
    body = (b"This is the preamble.  It is to be ignored.\r\n"
            b"--simple boundary \t \r\n"
            b'Content-Disposition: form-data; name="description"\r\n'
            b"\r\n"
            b"Knee MRI\r\n"
            b"--simple boundary\t\r\n"
            b'content-disposition: FORM-DATA; NAME=file; Filename="knee.png"\r\n'
            b"Content-Type: image/png\r\n"
            b"\r\n"
            b"\x89PNG\r\n\x1a\n"
            b"\r\n--simple boundary--  \r\n"
            b"This is the epilogue.  It is also to be ignored.\r\n"
            b"--simple boundary\r\nnot: a part\r\n")
    expected = [("description", None, None, b"Knee MRI"),
                ("file", "knee.png", "image/png", b"\x89PNG\r\n\x1a\n")]
    assert parse(body, boundary) == expected
    assert parse_chunks(one_byte_at_a_time(body), boundary) == expected


def test_first_delimiter_may_open_the_body_or_follow_a_preamble():
    part = form_part("a", b"1")
    assert parse(multipart_body(part)) == parse(multipart_body(part, preamble=b"junk\r\n"))
    assert parse(multipart_body(part)) == [("a", None, None, b"1")]


def test_part_start_reports_lower_cased_headers_and_content_type():
    body = multipart_body(form_part("file", b"x", filename="a.txt", content_type="text/plain",
                                    extra_headers=b"X-Note:  spaced \t\r\n"))
    parser = MultipartParser(BOUNDARY)
    start = parser.feed(body)[0]
    assert start == PartStart(
        name="file", filename="a.txt", content_type="text/plain",
        headers=(("content-disposition", 'form-data; name="file"; filename="a.txt"'),
                 ("x-note", "spaced"), ("content-type", "text/plain")))


@pytest.mark.parametrize("disposition, filename", [
    ("form-data; name=file; filename=\"naive.pdf\"; "
     "filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9.pdf", "naïve résumé.pdf"),
    ("form-data; name=file; filename*=utf-8'en'report.pdf", "report.pdf"),
    ('form-data; name=file; filename="na\u00efve.pdf"', "na\u00efve.pdf"),   # raw UTF-8
    (r'form-data; name=file; filename="say \"hi\".txt"', 'say "hi".txt'),    # quoted-pair
    ('form-data; name=file; filename=""', ""),             # a file input left empty
    ("form-data; name=file", None),
])
def test_filename_from_filename_star_or_filename(disposition, filename):
    body = multipart_body(f"Content-Disposition: {disposition}\r\n\r\n".encode())
    assert parse(body) == [("file", filename, None, b"")]


def part_with_headers(*lines):
    """A body of one part with these raw header lines and the data b"data"."""
    return multipart_body(b"".join(line + b"\r\n" for line in lines) + b"\r\ndata")


def part_with_disposition(value):
    return part_with_headers(b"Content-Disposition: " + value)


DISPOSITION = b'Content-Disposition: form-data; name="a"'
ONE_PART = multipart_body(form_part("a", b"1"))

MALFORMED_BODIES = {
    "empty body": (b"", IncompleteBody),
    "only preamble": (b"a preamble and nothing else\r\n", IncompleteBody),
    "no closing delimiter": (ONE_PART[:-len(DELIMITER + b"--")], IncompleteBody),
    "ends after a delimiter line": (ONE_PART[:-2] + b"\r\n", IncompleteBody),
    "truncated in headers": (SAMPLE_BODY[:SAMPLE_BODY.index(b"Chest") - 10], IncompleteBody),
    "truncated in data": (SAMPLE_BODY[:SAMPLE_BODY.index(b"%PDF") + 50], IncompleteBody),
    "truncated in closing delimiter": (ONE_PART[:-1], IncompleteBody),
    "junk after first delimiter": (b"--" + BOUNDARY + b"junk" + ONE_PART[len(BOUNDARY) + 2:],
                                   MalformedBody),
    "header without colon": (part_with_headers(b'Content-Disposition form-data; name="a"'),
                             MalformedBody),
    "space before colon": (part_with_headers(DISPOSITION, b"X-Note : v"), MalformedBody),
    "folded header": (part_with_headers(DISPOSITION, b"X-Note: v", b" X-Folded: w"), MalformedBody),
    "no headers": (multipart_body(b"\r\ndata"), MalformedBody),
    "missing Content-Disposition": (part_with_headers(b"Content-Type: text/plain"), MalformedBody),
    "two dispositions": (part_with_headers(DISPOSITION, DISPOSITION), MalformedBody),
    "two content types": (part_with_headers(DISPOSITION, b"Content-Type: a/b", b"content-type: c"),
                          MalformedBody),
    "non-UTF-8 header bytes": (part_with_disposition(b'form-data; name="\xff"'), MalformedBody),
    "NUL in header value": (part_with_disposition(b'form-data; name="a\x00"'), MalformedBody),
    "disposition attachment": (part_with_disposition(b'attachment; name="a"'), MalformedBody),
    "repeated parameter": (part_with_disposition(b'form-data; name="a"; NAME="b"'), MalformedBody),
    "unterminated quote": (part_with_disposition(b'form-data; name="a'), MalformedBody),
    "parameter without '='": (part_with_disposition(b"form-data; name"), MalformedBody),
    "filename* not UTF-8": (part_with_disposition(b"form-data; name=a; filename*=latin1''caf%E9"),
                            MalformedBody),
    "filename* bad UTF-8": (part_with_disposition(b"form-data; name=a; filename*=UTF-8''%FF"),
                            MalformedBody),
    "filename* control": (part_with_disposition(b"form-data; name=a; filename*=UTF-8''a%0Ab"),
                          MalformedBody),
    "no name": (part_with_disposition(b'form-data; filename="a.pdf"'), MissingPartName),
    "empty name": (part_with_disposition(b'form-data; name=""'), MissingPartName),
}


@pytest.mark.parametrize("body, error", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_malformed_body_raises_its_error(body, error):
    with pytest.raises(error):
        parse(body)
    with pytest.raises(error):
        parse_chunks(one_byte_at_a_time(body))


def header_block_of_size(size):
    """A part whose header block (lines with their CRLFs, no blank line) is `size` bytes."""
    disposition = b'Content-Disposition: form-data; name="a"\r\n'
    padding = size - len(disposition) - len(b"X-Pad: \r\n")
    return multipart_body(disposition + b"X-Pad: " + b"p" * padding + b"\r\n\r\nd")


def header_lines(count):
    return multipart_body(form_part("a", b"d", extra_headers=b"X-N: 1\r\n" * (count - 1)))


# (the limit, a body with `n` of what it counts, the error once `n` passes the limit)
LIMITS = {
    "field bytes": ("max_field_bytes", lambda n: multipart_body(form_part("a", b"f" * n)),
                    FieldTooLarge),
    "file bytes": ("max_file_bytes",
                   lambda n: multipart_body(form_part("a", b"f" * n, filename="x")), FileTooLarge),
    "file bytes, empty filename": ("max_file_bytes",
                                   lambda n: multipart_body(form_part("a", b"f" * n, filename="")),
                                   FileTooLarge),
    "parts": ("max_parts", lambda n: multipart_body(*[form_part("a", b"1")] * n), TooManyParts),
    "header lines": ("max_headers", header_lines, TooManyPartHeaders),
    "header bytes": ("max_header_bytes", header_block_of_size, PartHeadersTooLarge),
}


def whole(body):
    return [body]


@pytest.mark.parametrize("split", [whole, one_byte_at_a_time])
@pytest.mark.parametrize("limit, body_with, error", LIMITS.values(), ids=LIMITS.keys())
def test_limit_reached_exactly_passes_and_one_over_raises(split, limit, body_with, error):
    assert parse_chunks(split(body_with(100)), **{limit: 100})
    with pytest.raises(error):
        parse_chunks(split(body_with(101)), **{limit: 100})


def test_file_too_large_raised_before_any_byte_past_the_limit_is_released():
    body = multipart_body(form_part("file", b"f" * 11, filename="x"))
    parser = MultipartParser(BOUNDARY, max_file_bytes=10)
    released = b""
    with pytest.raises(FileTooLarge):
        for byte in one_byte_at_a_time(body):
            released += b"".join(e.data for e in parser.feed(byte) if isinstance(e, PartData))
    assert released == b"f" * 10


def test_held_back_bytes_stay_small_through_a_5_mib_file_part():
    chunk_size = 64 * 1024
    data = bytes(range(256)) * (5 * 1024 * 4) + b"\r\r\n\r\n-"   # 5 MiB, ending in CRs
    body = multipart_body(form_part("file", data, filename="big.bin"))
    parser = MultipartParser(BOUNDARY)
    received, largest_held, largest_piece = 0, 0, 0
    for offset in range(0, len(body), chunk_size):
        for event in parser.feed(body[offset:offset + chunk_size]):
            if isinstance(event, PartData):
                received += len(event.data)
                largest_piece = max(largest_piece, len(event.data))
        largest_held = max(largest_held, parser.buffered)
    parser.close()
    assert received == len(data)
    assert largest_held < len(DELIMITER)
    assert largest_piece <= chunk_size + len(DELIMITER)


def test_header_block_that_never_ends_is_refused_before_the_buffer_outgrows_the_limit():
    # Without its blank line yet, a block can still fit while the buffer holds the
    # delimiter line's CRLF, 100 bytes and "\r" of the terminator: 103 bytes at most.
    parser = MultipartParser(BOUNDARY, max_header_bytes=100)
    parser.feed(b"--" + BOUNDARY + b"\r\n")
    with pytest.raises(PartHeadersTooLarge):
        for byte in one_byte_at_a_time(b"X-Pad: " + b"p" * 200):
            parser.feed(byte)
            assert parser.buffered <= 100 + 3


def test_bytes_fed_after_the_closing_delimiter_are_ignored():
    parser = MultipartParser(BOUNDARY)
    assert fold(parser.feed(multipart_body(form_part("a", b"1")))) == [("a", None, None, b"1")]
    assert parser.feed(b"\r\n--" + BOUNDARY + b"\r\nnot a header\r\n\r\n") == []
    assert parser.buffered == 0
    parser.close()


@pytest.mark.parametrize("value, boundary", [
    ("multipart/form-data; boundary=abc", b"abc"),
    ('multipart/form-data; boundary="abc def"', b"abc def"),
    ("Multipart/Form-Data; charset=x; BOUNDARY=abc", b"abc"),
    ("multipart/form-data;boundary=abc ; ", b"abc"),
    ("multipart/form-data; boundary=" + "b" * 70, b"b" * 70),
    ("multipart/form-data; boundary=\"'()+_,-./:=? 09azAZ\"", b"'()+_,-./:=? 09azAZ"),
])
def test_boundary_from_good_content_type(value, boundary):
    assert boundary_from_content_type(value) == boundary


@pytest.mark.parametrize("value", [
    None,
    "",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    'multipart/form-data; boundary=""',
    "multipart/form-data; boundary=" + "b" * 71,
    'multipart/form-data; boundary="abc@def"',
    'multipart/form-data; boundary="abc "',
    'multipart/form-data; boundary="abc',
    "multipart/form-data; boundary=a; boundary=b",
    "multipart/form-data boundary=abc",
    "multipart/mixed; boundary=abc",
    "text/plain; boundary=abc",
], ids=repr)
def test_boundary_from_bad_content_type_raises_bad_boundary(value):
    with pytest.raises(BadBoundary):
        boundary_from_content_type(value)


@pytest.mark.parametrize("boundary", [b"", b"b" * 71, b"space ", b"caf\xe9", b"a\r\nb"], ids=repr)
def test_parser_refuses_a_bad_boundary(boundary):
    with pytest.raises(BadBoundary):
        MultipartParser(boundary)


def test_iter_parts_reads_the_stream_to_its_end_in_chunks():
    stream = io.BytesIO(SAMPLE_BODY)
    assert fold(iter_parts(stream, BOUNDARY, chunk_size=7)) == SAMPLE_PARTS
    assert stream.tell() == len(SAMPLE_BODY)     # the epilogue is drained too


def test_iter_parts_raises_incomplete_body_when_the_stream_stops_early():
    with pytest.raises(IncompleteBody):
        list(iter_parts(io.BytesIO(SAMPLE_BODY[:-40]), BOUNDARY))


def test_iter_parts_passes_limits_to_the_parser():
    with pytest.raises(FileTooLarge):
        list(iter_parts(io.BytesIO(SAMPLE_BODY), BOUNDARY, max_file_bytes=10))


@pytest.mark.parametrize("quoted, filename", [
    (b'"C:\\temp\\x.pdf"', "C:\\temp\\x.pdf"),   # as browsers send it: backslashes unescaped
    (b'"say \\"hi\\".pdf"', 'say "hi".pdf'),      # \" is an escaped quote
    (b'"a\\\\b.pdf"', "a\\b.pdf"),                # \\ is an escaped backslash
])
def test_only_quote_and_backslash_are_escapes_in_a_quoted_filename(quoted, filename):
    body = (b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=" + quoted
            + b"\r\n\r\ndata\r\n--" + BOUNDARY + b"--\r\n")
    assert parse(body) == [("file", filename, None, b"data")]
