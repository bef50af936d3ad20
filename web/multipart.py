"""Streaming multipart/form-data parser (RFC 7578; body syntax from RFC 2046 §5.1).

An upload is one body holding several *parts*, each a header block and some data,
separated by *delimiter* lines built from a boundary the client announced in the
request's Content-Type (RFC 2046 §5.1.1):

    preamble, ignored
    --BOUNDARY<transport padding>CRLF
    Content-Disposition: form-data; name="file"; filename="scan.pdf"CRLF
    CRLF
    ...the file's bytes...
    CRLF--BOUNDARY--
    epilogue, ignored

The CRLF in front of "--BOUNDARY" belongs to the delimiter, not to the data, and the
sender must pick a boundary that never occurs in the data.

`MultipartParser` is a push parser and does no I/O: `feed(chunk)` returns the events
(`PartStart`, `PartData`, `PartEnd`) the chunk completes; `close()` checks the body
ended with its closing delimiter. Data is released as soon as it cannot be the start
of a delimiter, so the parser holds at most one header block or a delimiter's length,
never a whole part. `iter_parts` is the short loop that reads a stream and drives it.

Header lines follow RFC 5322 §2.2, parameters RFC 9110 §5.6.6 (read by `web/grammar.py`,
the one parser of that grammar), `filename*` RFC 8187.
Every error is a `MultipartError`; this module knows nothing of HTTP statuses. After
an error the parser's state is undefined: discard it.
"""

import re
import urllib.parse
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from web.grammar import TOKEN, MalformedParameters, parse_parameters


@dataclass(frozen=True)
class PartStart:
    """A part begins; its headers have been read and checked (RFC 7578 §4.2)."""
    name: str                               # Content-Disposition name
    filename: str | None                    # filename* wins over filename; None if neither
    content_type: str | None                # the client's label: informational, never trusted
    headers: tuple[tuple[str, str], ...]    # (lower-cased name, value), in order


@dataclass(frozen=True)
class PartData:
    """The next piece of the current part's data; never empty."""
    data: bytes


@dataclass(frozen=True)
class PartEnd:
    """The current part's data is complete."""


Event = PartStart | PartData | PartEnd


class MultipartError(Exception):
    """The body is not acceptable multipart/form-data."""


class BadBoundary(MultipartError):
    """Content-Type is not multipart/form-data with a valid boundary (RFC 2046 §5.1.1)."""


class MalformedBody(MultipartError):
    """The body breaks the syntax of RFC 2046 §5.1 or the rules of RFC 7578."""


class MissingPartName(MultipartError):
    """A part's Content-Disposition has no name (RFC 7578 §4.2 requires one)."""


class IncompleteBody(MultipartError):
    """The body ended before its closing delimiter."""


class TooManyParts(MultipartError):
    """The body has more than max_parts parts."""


class PartHeadersTooLarge(MultipartError):
    """One part's header block is longer than max_header_bytes."""


class TooManyPartHeaders(MultipartError):
    """One part has more than max_headers header lines."""


class FieldTooLarge(MultipartError):
    """A text field (a part without a filename) is longer than max_field_bytes."""


class FileTooLarge(MultipartError):
    """A file (a part with a filename) is longer than max_file_bytes."""


# RFC 2046 §5.1.1: boundary := 0*69<bchars> bcharsnospace
_BCHARS_NO_SPACE = r"0-9A-Za-z'()+_,\-./:=?"
_BOUNDARY = re.compile(rf"[{_BCHARS_NO_SPACE} ]{{0,69}}[{_BCHARS_NO_SPACE}]")
# RFC 8187 §3.2.1: ext-value = charset "'" [ language ] "'" value-chars; UTF-8 only
_ATTR_CHAR = r"[0-9A-Za-z!#$&+\-.^_`|~]"
_UTF8_EXT_VALUE = re.compile(rf"(?i:utf-8)'[A-Za-z0-9\-]*'((?:%[0-9A-Fa-f]{{2}}|{_ATTR_CHAR})*)")
# RFC 5322 §2.2: a field body holds no CR or LF; other controls (tab aside) are refused too
_CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 2046 §5.1.1: transport-padding := *LWSP-char, the spaces and tabs a gateway may add
_TRANSPORT_PADDING = re.compile(rb"[ \t]*")


def boundary_from_content_type(value: str | None) -> bytes:
    """Return the boundary of a request's `multipart/form-data` Content-Type (RFC 7578 §4.1)."""
    if value is None:
        raise BadBoundary("the request has no Content-Type")
    media_type, parameters = _parse_parameters(value, BadBoundary)
    if media_type != "multipart/form-data":
        raise BadBoundary("Content-Type is not multipart/form-data")
    if "boundary" not in parameters:
        raise BadBoundary("Content-Type has no boundary parameter")
    return _checked_boundary(parameters["boundary"])


def _checked_boundary(boundary: str) -> bytes:
    # RFC 2046 §5.1.1: 1 to 70 bchars, the last one not a space
    if not _BOUNDARY.fullmatch(boundary):
        raise BadBoundary("the boundary is not 1-70 bchars, the last not a space")
    return boundary.encode("ascii")


def _parse_parameters(value: str, error: type[MultipartError]) -> tuple[str, dict[str, str]]:
    """`grammar.parse_parameters`, its failure reported as this module's `error`."""
    try:
        return parse_parameters(value)
    except MalformedParameters as exc:
        raise error(str(exc)) from None


def _parse_header_block(block: bytes, max_headers: int) -> tuple[tuple[str, str], ...]:
    """Split a part's header lines into (lower-cased name, value) pairs (RFC 5322 §2.2)."""
    lines = block.split(b"\r\n") if block else []
    if len(lines) > max_headers:
        raise TooManyPartHeaders(f"a part has more than {max_headers} header lines")
    headers = []
    for line in lines:
        try:
            # RFC 7578 §5.1: names and filenames may be non-ASCII; browsers send raw UTF-8.
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedBody("a part header is not UTF-8") from None
        name, colon, value = text.partition(":")
        # RFC 5322 §2.2: a header is "name:" with no space, so a line that starts with
        # whitespace fails here too: obsolete folding (RFC 5322 §4.2) is refused, as
        # RFC 9112 §5.2 allows, and one line stays one header.
        if not colon or not TOKEN.fullmatch(name):
            raise MalformedBody("a part header line is not 'Name: value'")
        value = value.strip(" \t")
        _refuse_control_characters(value)
        headers.append((name.lower(), value))
    return tuple(headers)


def _refuse_control_characters(text: str) -> None:
    # NOTE: a NUL, CR or LF inside a name or filename can cut or split the value wherever it is
    # later stored, logged or echoed in a header, so such values are refused here.
    if _CONTROL_CHARACTER.search(text):
        raise MalformedBody("a part header holds a control character")


def _part_start(headers: tuple[tuple[str, str], ...]) -> PartStart:
    """Read a part's name, filename and Content-Type from its headers (RFC 7578 §4.2, §4.4)."""
    disposition = _single_header(headers, "content-disposition")
    if disposition is None:
        raise MalformedBody("a part has no Content-Disposition")
    disposition_type, parameters = _parse_parameters(disposition, MalformedBody)
    # RFC 7578 §4.2: every part's disposition type is "form-data"
    if disposition_type != "form-data":
        raise MalformedBody("a part's Content-Disposition is not form-data")
    # RFC 7578 §4.2: the disposition "MUST" name the field; an empty name names nothing
    name = parameters.get("name")
    if not name:
        raise MissingPartName("a part's Content-Disposition has no name")
    filename = parameters.get("filename")
    # RFC 7578 §4.2 tells senders not to use filename*, but some do; when present it is the
    # sender's exact name, so it wins over the plain filename (as RFC 6266 §4.3 has it).
    if "filename*" in parameters:
        filename = _decode_filename_star(parameters["filename*"])
    return PartStart(name, filename, _single_header(headers, "content-type"), headers)


def _single_header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    values = [value for header_name, value in headers if header_name == name]
    # NOTE: a header we interpret may appear once; with two, another parser could read the
    # other copy and see a different field or filename from the one we store.
    if len(values) > 1:
        raise MalformedBody(f"a part has more than one {name} header")
    return values[0] if values else None


def _decode_filename_star(ext_value: str) -> str:
    """Decode an RFC 8187 ext-value such as UTF-8''na%C3%AFve.pdf."""
    match = _UTF8_EXT_VALUE.fullmatch(ext_value)
    if match is None:
        raise MalformedBody("filename* is not a UTF-8 ext-value (RFC 8187 §3.2)")
    try:
        filename = urllib.parse.unquote_to_bytes(match[1]).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("filename* does not decode as UTF-8") from None
    _refuse_control_characters(filename)
    return filename


class MultipartParser:
    """A push parser: `feed()` it bytes as they arrive and act on the events it returns.

    The parser's state is the step it runs next (`self._step`). Each step consumes what
    it can from the front of the buffer, appends events, and returns True to run the next
    step at once or False when it needs more bytes.
    """

    def __init__(self, boundary: bytes, *, max_parts: int = 16, max_header_bytes: int = 8192,
                 max_headers: int = 16, max_field_bytes: int = 64 * 1024,
                 max_file_bytes: int = 10 * 1024 * 1024):
        # RFC 2046 §5.1.1: the CRLF before "--" boundary is part of the delimiter
        self._delimiter = b"\r\n--" + _checked_boundary(boundary.decode("latin-1"))
        self._max_parts = max_parts
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._max_field_bytes = max_field_bytes
        self._max_file_bytes = max_file_bytes
        # RFC 2046 §5.1.1 lets the first delimiter open the body with no CRLF in front;
        # starting the buffer with one lets a single search find it in both cases.
        self._buffer = bytearray(b"\r\n")
        self._step = self._skip_preamble
        self._parts_started = 0
        self._part_size = 0
        self._part_limit = 0                  # both set by each part's headers
        self._part_too_large: type[MultipartError] = FieldTooLarge

    @property
    def buffered(self) -> int:
        """Bytes held back: under len(CRLF--boundary) in data, ≤ max_header_bytes + 3 in headers."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[Event]:
        """Take the next bytes of the body; return the events they complete, in order."""
        self._buffer += chunk
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> None:
        """Declare the body finished; raise IncompleteBody unless it was."""
        if self._step != self._ignore_epilogue:
            raise IncompleteBody("the body ended before its closing delimiter")

    def _skip_preamble(self, events: list[Event]) -> bool:
        # RFC 2046 §5.1.1: bytes before the first delimiter are preamble, to be ignored
        found = self._buffer.find(self._delimiter)
        if found == -1:
            # Keep only a tail that could be the start of a delimiter split across chunks.
            del self._buffer[:-(len(self._delimiter) - 1)]
            return False
        del self._buffer[:found + len(self._delimiter)]
        self._step = self._after_delimiter
        return True

    def _after_delimiter(self, events: list[Event]) -> bool:
        # RFC 2046 §5.1.1: "--" straight after the boundary makes it the closing delimiter
        if self._buffer.startswith(b"--"):
            self._step = self._ignore_epilogue
            return True
        if b"--".startswith(self._buffer):      # nothing yet, or a lone "-"
            return False
        self._step = self._finish_delimiter_line
        return True

    def _finish_delimiter_line(self, events: list[Event]) -> bool:
        # RFC 2046 §5.1.1: a delimiter line may end in transport padding before its CRLF
        del self._buffer[:_TRANSPORT_PADDING.match(self._buffer).end()]
        if self._buffer.startswith(b"\r\n"):
            self._parts_started += 1
            if self._parts_started > self._max_parts:
                raise TooManyParts(f"the body has more than {self._max_parts} parts")
            # The CRLF stays in the buffer: see _read_part_headers.
            self._step = self._read_part_headers
            return True
        if b"\r\n".startswith(self._buffer):    # nothing yet, or a lone CR
            return False
        # NOTE: a line that starts with the delimiter and goes on with other bytes
        # ("--BOUNDARYX") is refused, not passed through as data. RFC 2046 §5.1.1 forbids
        # the boundary inside a part, and parsers disagree on what such a line means (data,
        # a delimiter, junk to skip), which a crafted upload could use to show a scanner or
        # proxy other parts than the ones we store.
        raise MalformedBody("a delimiter line has unexpected bytes after the boundary")

    def _read_part_headers(self, events: list[Event]) -> bool:
        # The buffer still starts with the CRLF that ended the delimiter line, so the block
        # ends at the first CRLF CRLF even with no header lines, and that index is the
        # block's size. Each feed searches again from the start; max_header_bytes keeps it cheap.
        block_size = self._buffer.find(b"\r\n\r\n")
        # Until the blank line arrives, the block is at least what came, less 3 bytes of CRLF CRLF.
        least_size = len(self._buffer) - 3 if block_size == -1 else block_size
        if least_size > self._max_header_bytes:
            raise PartHeadersTooLarge(f"a part's headers exceed {self._max_header_bytes} bytes")
        if block_size == -1:
            return False
        headers = _parse_header_block(bytes(self._buffer[2:block_size]), self._max_headers)
        del self._buffer[:block_size + 2]       # the blank line's CRLF stays: see below
        start = _part_start(headers)
        # RFC 7578 §4.2: a filename marks a file; text fields get the smaller limit
        if start.filename is None:
            self._part_limit, self._part_too_large = self._max_field_bytes, FieldTooLarge
        else:
            self._part_limit, self._part_too_large = self._max_file_bytes, FileTooLarge
        self._part_size = 0
        events.append(start)
        self._step = self._skip_blank_line
        return True

    def _skip_blank_line(self, events: list[Event]) -> bool:
        # RFC 2046 §5.1.1: a part may end right after its headers, so the blank line's CRLF
        # can also begin the next delimiter ("...\r\n\r\n--BOUNDARY"): that is no data.
        if not self._buffer.startswith(self._delimiter):
            if self._delimiter.startswith(self._buffer):    # too short to tell yet
                return False
            del self._buffer[:2]
        self._step = self._read_part_data
        return True

    def _read_part_data(self, events: list[Event]) -> bool:
        # RFC 2046 §5.1.1: inside a part only CRLF "--" boundary ends the data
        found = self._buffer.find(self._delimiter)
        if found != -1:
            self._release_data(found, events)
            del self._buffer[:len(self._delimiter)]
            events.append(PartEnd())
            self._step = self._after_delimiter
            return True
        # A delimiter may have begun at a CR in the last few bytes and end in the next
        # chunk: hold back from that CR, and release everything before it now.
        tail_start = max(0, len(self._buffer) - len(self._delimiter) + 1)
        held_from = self._buffer.find(b"\r", tail_start)
        self._release_data(len(self._buffer) if held_from == -1 else held_from, events)
        return False

    def _release_data(self, size: int, events: list[Event]) -> None:
        if size == 0:
            return
        self._part_size += size
        # Checked before the data goes out, so no byte past the limit ever reaches storage.
        if self._part_size > self._part_limit:
            raise self._part_too_large(f"a part is larger than {self._part_limit} bytes")
        events.append(PartData(bytes(self._buffer[:size])))
        del self._buffer[:size]

    def _ignore_epilogue(self, events: list[Event]) -> bool:
        # RFC 2046 §5.1.1: bytes after the closing delimiter are epilogue, to be ignored
        self._buffer.clear()
        return False


def iter_parts(stream: BinaryIO, boundary: bytes, *, chunk_size: int = 64 * 1024,
               **limits: int) -> Iterator[Event]:
    """Read `stream` to its end in chunks and yield the parser's events: the only I/O here.

    The stream is read past the closing delimiter so that a keep-alive connection is left
    at the start of the next request. Keep what the parts produced only once the loop has
    finished without an error: a later part can still make the whole body invalid.
    """
    parser = MultipartParser(boundary, **limits)
    while chunk := stream.read(chunk_size):
        yield from parser.feed(chunk)
    parser.close()
