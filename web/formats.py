"""The string rules a JSON Schema can ask for: formats and patterns.

`FORMATS` holds the formats the contract asserts (JSON Schema 2020-12 validation
§7.3): `date` (RFC 3339 full-date, a real calendar date), `date-time` (RFC 3339
date-time) and `email` (a pragmatic subset of RFC 5321). `ANNOTATIONS` holds the one
it only states: `binary`, which OpenAPI's generators read to type a body as bytes
(beside `contentMediaType`, JSON Schema's own way to say it) and which says nothing a
string could fail. `compile_pattern` turns a schema's `pattern`, written in ECMA-262
regular-expression syntax (validation §6.3.3), into a Python regex that means the same
thing. `web/validation.py` applies both; they are pure functions of a string.
"""

import re
from datetime import date
from functools import lru_cache
from typing import Callable

_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
# RFC 3339 §5.6: full-date "T" partial-time time-offset; "T" and "Z" may be lower case (§5.6 NOTE).
_DATE_TIME = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
                        r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))")
_EMAIL_LOCAL_PART = re.compile(r"[!-~]{1,64}")  # printable ASCII, no space; RFC 5321 §4.5.3.1.1
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # RFC 1035 §2.3.1


def is_date(text: str) -> bool:
    # RFC 3339 §5.6 full-date (validation §7.3.1). [0-9], not \d, which also matches
    # "２" and other non-ASCII digits; fullmatch, not $, which also matches before a
    # trailing newline.
    match = _DATE.fullmatch(text)
    if match is None:
        return False
    try:
        date(*map(int, match.groups()))  # the calendar: no 2023-02-29, no month 13
    except ValueError:
        return False
    return True


def is_date_time(text: str) -> bool:
    # RFC 3339 §5.6 date-time (validation §7.3.1): a real date, hours 00-23, minutes
    # 00-59, seconds 00-59, or 60 for a leap second, which only ever happens at 23:59
    # UTC (§5.7): 1998-12-31T15:59:60-08:00 is one, 1998-12-31T22:59:60Z is not.
    match = _DATE_TIME.fullmatch(text)
    if match is None or not is_date(match[1]):
        return False
    hour, minute, second = int(match[2]), int(match[3]), int(match[4])
    offset_sign, offset_hour, offset_minute = match[5], int(match[6] or 0), int(match[7] or 0)
    if hour > 23 or minute > 59 or second > 60 or offset_hour > 23 or offset_minute > 59:
        return False
    if second == 60:
        sign = -1 if offset_sign == "+" else 1  # UTC = local time - offset
        utc_minutes = (hour * 60 + minute + sign * (offset_hour * 60 + offset_minute)) % (24 * 60)
        return utc_minutes == 23 * 60 + 59
    return True


def is_email(text: str) -> bool:
    # A pragmatic subset of RFC 5321 §4.1.2 Mailbox (validation §7.3.2): no quoted
    # local parts, no IP literals. A second "@" lands in the domain, where no label
    # may hold it. 254 is the longest address a path can carry (RFC 5321 §4.5.3.1.3,
    # RFC 3696 erratum 1690).
    local_part, _, domain = text.partition("@")
    labels = domain.split(".")
    return (
        len(text) <= 254
        and _EMAIL_LOCAL_PART.fullmatch(local_part) is not None
        and len(labels) >= 2
        and all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
    )


# Each format: its check, and the message for a value that fails it.
FORMATS: dict[str, tuple[Callable[[str], bool], str]] = {
    "date": (is_date, "must be a valid date (YYYY-MM-DD)"),
    "date-time": (is_date_time, "must be a valid date-time (RFC 3339, e.g. 2026-11-24T10:15:30Z)"),
    "email": (is_email, "must be a valid email address"),
}
ANNOTATIONS = frozenset({"binary"})


# --- patterns: validation §6.3.3, ECMA-262 regular expressions ---


# NOTE: unbounded, and shared by threads (lru_cache is thread-safe): patterns come only
# from the schema, never from a request, so the cache cannot grow without limit.
@lru_cache(maxsize=None)
def compile_pattern(pattern: str) -> re.Pattern:
    """A schema's ECMA-262 pattern as a Python regex; `re.error` if it does not compile."""
    # NOTE: two Python differences from ECMA-262 would let through input the contract
    # forbids: \d and \w match non-ASCII digits and letters unless re.ASCII is set,
    # and $ also matches before a final newline, so "123\n" would pass ^[0-9]+$.
    return re.compile(_end_anchors_to_python(pattern), re.ASCII)


def _end_anchors_to_python(pattern: str) -> str:
    """Rewrite each `$` anchor as `\\Z`, Python's "only at the very end"."""
    rewritten, escaped, in_class = [], False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"  # inside [...] a $ is a literal dollar sign
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        rewritten.append(char)
    return "".join(rewritten)
