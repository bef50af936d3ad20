"""Strict JSON for request bodies (RFC 8259), with the limits a public API needs.

`json.loads` alone is too forgiving for input from strangers: it accepts `NaN` and
`Infinity` (not JSON), silently keeps the last of two duplicate keys, turns `1e999`
into infinity, and will recurse as deep as the text nests. `parse_json` refuses all
of these, and strings containing NUL, which some stores cannot hold, so every store
sees the same input.
"""

import json
import math
import re

# json.loads joins a valid "\ud83d\ude00" pair into one character; what is left in
# this range afterwards is a half of a pair.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidJSON(Exception):
    """The body is not acceptable JSON; the message says why without quoting it."""


def _refuse_constant(name: str):
    # RFC 8259 §6: "Numeric values that cannot be represented ... (such as Infinity
    # and NaN) are not permitted."
    raise InvalidJSON(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJSON("a number is too large")
    return value


def _object_without_duplicates(pairs: list) -> dict:
    # RFC 8259 §4: names within an object SHOULD be unique; when they are not,
    # parsers disagree about which value wins, so we refuse to guess.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise InvalidJSON("an object has a duplicate key")
    return result


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise InvalidJSON("a string contains a NUL character")
    # Only a non-ASCII string can hold a surrogate, so most strings skip the search.
    if not text.isascii() and LONE_SURROGATE.search(text):
        # RFC 8259 §8.2 allows "\ud800" escapes that name no character; such a
        # string has no UTF-8 form, so no store could keep it (RFC 7493 §2.1).
        raise InvalidJSON("a string contains an unpaired surrogate escape")


def _check_value(value, depth: int, max_depth: int) -> None:
    """`value` sits at level `depth` and its items one deeper: none may sit deeper than
    `max_depth`, and every string (keys included) must be storable."""
    if isinstance(value, str):
        _check_string(value)
    elif isinstance(value, (dict, list)):
        if value and depth >= max_depth:  # its items would sit deeper than max_depth
            raise InvalidJSON(f"JSON nests deeper than {max_depth} levels")
        if isinstance(value, dict):
            for key in value:
                _check_string(key)
            value = value.values()
        for item in value:
            if isinstance(item, (str, dict, list)):  # numbers, booleans and null need no check
                _check_value(item, depth + 1, max_depth)


# json.loads with hooks would build this decoder anew on every call; its rules never change.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float,
                            object_pairs_hook=_object_without_duplicates)


def parse_json(raw: bytes, *, max_depth: int = 32):
    """Decode a request body; raise `InvalidJSON` for anything RFC 8259 or we refuse."""
    try:
        # RFC 8259 §8.1: JSON exchanged between systems MUST be UTF-8, without a BOM.
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJSON("the body is not valid UTF-8") from None
    if text.startswith("\ufeff"):
        raise InvalidJSON("the body starts with a byte order mark")
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise InvalidJSON(f"JSON nests deeper than {max_depth} levels") from None
    except ValueError:  # JSONDecodeError, and int() refusing a 5000-digit number
        raise InvalidJSON("the body is not valid JSON") from None
    _check_value(value, 0, max_depth)
    return value
