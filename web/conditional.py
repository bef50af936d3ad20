"""Conditional requests (RFC 9110 §13) and byte ranges (RFC 9110 §14), without I/O.

A server tags each representation it sends with an *entity tag* (ETag), an opaque
quoted string that changes whenever the representation does. A client sends the tag
back to make its request conditional:

- `If-Match: "3"` on a write: "only if it is still what I read" — else 412, and the
  write does not happen. Two people editing one record cannot silently overwrite
  each other: the slower one is told, instead of erasing the faster one's change.
- `If-None-Match: "3"` on a read: "only if it changed since" — else 304 with no
  body, so the client keeps the copy it has.
- `Range: bytes=100-199` asks for part of a download (206); `If-Range: "<tag>"` says
  "the part if it is still the same file, else the whole file" — how a cut-off
  download resumes without gluing two different files together.

The functions below decide; they never see a socket, a store or a route, so the
rules can be read, and tested, against the RFC text alone.
"""

import re
from dataclasses import dataclass

from web.problems import HTTPError


class PreconditionFailed(HTTPError):
    status = 412


class PreconditionRequired(HTTPError):
    status = 428  # RFC 6585 §3: the server requires the request to be conditional


class RangeNotSatisfiable(HTTPError):
    status = 416


@dataclass(frozen=True)
class EntityTag:
    opaque: str          # the tag without its quotes
    weak: bool = False   # W/"…": "semantically equivalent", never good enough for If-Match


ANY = "*"  # If-Match: * / If-None-Match: * — any current representation

# RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE,
# etagc = %x21 / %x23-7E / obs-text (any visible character but the double quote).
ENTITY_TAG_PATTERN = r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"'
_ENTITY_TAG = re.compile(ENTITY_TAG_PATTERN)
# One element of a comma-separated list of tags (§5.6.1: elements may be empty), and
# what ends it. A tag may itself hold commas ("a,b"), so the list is read tag by tag,
# never split on commas first. (The blanks after a tag belong to the tag's group, so
# a run of blanks can be matched one way only: no backtracking through its splits.)
_TAG_LIST_ELEMENT = re.compile(rf"[ \t]*(?:{ENTITY_TAG_PATTERN}[ \t]*)?(,|\Z)")


def parse_entity_tags(values: list[str] | None) -> list[EntityTag] | str | None:
    """An If-Match / If-None-Match field: `ANY`, a list of tags, or None when absent.

    Its lines are one comma-separated list (RFC 9110 §5.3), and empty elements are
    allowed (§5.6.1). An element that is not an entity tag makes the whole field
    malformed: it then matches nothing, which is the safe reading for If-Match (the
    write is refused) and for If-None-Match (the full response is sent).
    """
    if values is None:
        return None
    text = ",".join(values).strip(" \t")
    if text == ANY:
        return ANY
    tags, position = [], 0
    while position < len(text):
        element = _TAG_LIST_ELEMENT.match(text, position)
        if element is None:
            return []
        if element[2] is not None:
            tags.append(EntityTag(element[2], weak=element[1] is not None))
        position = element.end()
    return tags


def strong_match(tags: list[EntityTag], current: str) -> bool:
    """§8.8.3.2 strong comparison: neither tag weak, and the same characters."""
    return any(not tag.weak and tag.opaque == current for tag in tags)


def weak_match(tags: list[EntityTag], current: str) -> bool:
    """§8.8.3.2 weak comparison: the same characters, weak or not."""
    return any(tag.opaque == current for tag in tags)


def quoted(opaque: str) -> str:
    """The ETag header's value for a strong tag."""
    return f'"{opaque}"'


NOT_MODIFIED = "not modified"


def evaluate_preconditions(headers, method: str, current: str) -> str | None:
    """RFC 9110 §13.2.2's order for a resource that exists, with entity tag `current`.

    Raises `PreconditionFailed` (412); returns `NOT_MODIFIED` when a GET or HEAD should
    be answered 304, else None: carry on. Steps 2 and 4, the date conditions
    (If-Unmodified-Since, If-Modified-Since), are left out by choice: we send no
    Last-Modified, so no client has a date of ours to send back, and a version says
    more than a time with one-second resolution could.
    """
    # Step 1: If-Match, strong comparison (§13.1.1).
    if_match = parse_entity_tags(headers.get_all("If-Match"))
    if if_match is not None and if_match != ANY and not strong_match(if_match, current):
        raise PreconditionFailed("the record has changed since the version If-Match names")
    # Step 3: If-None-Match, weak comparison (§13.1.2).
    if_none_match = parse_entity_tags(headers.get_all("If-None-Match"))
    if if_none_match is not None and (if_none_match == ANY or weak_match(if_none_match, current)):
        if method in ("GET", "HEAD"):
            return NOT_MODIFIED
        raise PreconditionFailed("the record matches If-None-Match")
    return None


@dataclass(frozen=True)
class ByteRange:
    start: int
    length: int

    def content_range(self, size: int) -> str:
        """§14.4: Content-Range: bytes first-last/complete-length."""
        return f"bytes {self.start}-{self.start + self.length - 1}/{size}"


# §14.1.2: int-range = first-pos "-" [ last-pos ], suffix-range = "-" suffix-length,
# each position 1*DIGIT. The unit name is case-insensitive (§14.1). Positions of more
# than 18 digits (past any file's size, and past what int() takes cheaply) are malformed.
_RANGE_SPEC = re.compile(r"([0-9]{1,18})-([0-9]{0,18})|-([0-9]{1,18})")
_BYTES_UNIT = re.compile(r"bytes=", re.IGNORECASE)


def requested_range(headers, size: int, current: str) -> ByteRange | None:
    """The one byte range a GET asks for, or None to send the whole representation.

    §14.2 lets a server ignore Range, and we do when the header is malformed, names
    several ranges (a multipart/byteranges answer is more than a teaching server
    needs), or If-Range names another version (§13.1.5). A range that starts past the
    end raises `RangeNotSatisfiable` (416).
    """
    value = headers.get("Range")
    if value is None or not if_range_holds(headers, current):
        return None
    unit = _BYTES_UNIT.match(value)
    if unit is None:
        return None
    # A range-spec holds no comma, so here the list may be split on commas (§5.6.1).
    specs = [spec for spec in (element.strip(" \t") for element in value[unit.end():].split(",")) if spec]
    if len(specs) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        # §14.1.3: the last N bytes (all of them if the file is shorter); N = 0 asks for nothing.
        if int(suffix) == 0:
            raise RangeNotSatisfiable("a suffix range of zero bytes selects nothing", headers=unsatisfied(size))
        length = min(int(suffix), size)
        return ByteRange(size - length, length)
    start = int(first)
    if last and int(last) < start:
        return None  # §14.1.1: an invalid range-spec; the field is ignored
    if start >= size:
        raise RangeNotSatisfiable(f"the range starts at or after the end of the file ({size} bytes)",
                                  headers=unsatisfied(size))
    end = size - 1 if not last else min(int(last), size - 1)  # a last-pos past the end means "to the end"
    return ByteRange(start, end - start + 1)


def unsatisfied(size: int) -> tuple[tuple[str, str], ...]:
    """§15.5.17: a 416 to a byte range says the file's size in Content-Range."""
    return (("Content-Range", f"bytes */{size}"),)


def if_range_holds(headers, current: str) -> bool:
    """§13.1.5: without If-Range, a Range applies; with it, only if it is a strong tag
    equal to the current one. (A date there never matches: we send no Last-Modified.)"""
    value = headers.get("If-Range")
    if value is None:
        return True
    match = _ENTITY_TAG.fullmatch(value.strip(" \t"))
    return match is not None and match[1] is None and match[2] == current
