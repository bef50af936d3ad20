"""Tests for web/jsonbody.py: strict RFC 8259 JSON for bodies from strangers.

How depth is counted (see `_check_value`): the top-level value is at level 0 and every
member of an array or object is one level deeper than its container; an object's keys
sit at the object's own level. `max_depth` is the deepest level any value may reach,
so `[[0]]` reaches level 2 and `[[]]` reaches level 1.
"""

import pytest

from web.jsonbody import InvalidJSON, parse_json

# Put into every refused body, so a test can prove the error message does not echo it.
MARKER = "patient-Ada-Lovelace-1815"


# --- what is accepted ---------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    (b'{"firstName": "Ada", "address": {"city": "London"}, "allergies": ["pollen"]}',
     {"firstName": "Ada", "address": {"city": "London"}, "allergies": ["pollen"]}),
    (b"{}", {}),
    (b"[1, 2.5, -0.25, \"x\", true, false, null, [], {}]", [1, 2.5, -0.25, "x", True, False, None, [], {}]),
    (b"[]", []),
    (b"0", 0),
    (b"-12", -12),
    (b"1.5e3", 1500.0),
    (b'"text"', "text"),
    (b"true", True),
    (b"false", False),
    (b"null", None),
    (b' \r\n\t{"a": 1} \n', {"a": 1}),
])
def test_valid_json_is_parsed(raw, expected):
    assert parse_json(raw) == expected


def test_utf8_text_is_decoded():
    assert parse_json('{"name": "Zoë 李 🩺"}'.encode("utf-8")) == {"name": "Zoë 李 🩺"}


def test_escaped_unicode_is_decoded():
    assert parse_json(b'"caf\\u00e9"') == "café"


def test_large_finite_numbers_are_kept():
    assert parse_json(b"1e308") == 1e308
    assert parse_json(b"12345678901234567890123") == 12345678901234567890123


def test_same_key_in_sibling_objects_is_not_a_duplicate():
    assert parse_json(b'[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]


# --- encoding -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b'{"a": "\xff"}',
    b'{"a": "\xc3"}',               # a truncated two-byte sequence
    b'{"a": "\xed\xa0\x80"}',       # an encoded UTF-16 surrogate
    b'{"a": "\xc0\xaf"}',           # an over-long encoding of '/'
    '{"a": "é"}'.encode("latin-1"),
    '{"a": 1}'.encode("utf-16"),
])
def test_invalid_utf8_is_refused(raw):
    with pytest.raises(InvalidJSON, match="UTF-8"):
        parse_json(raw)


def test_utf8_byte_order_mark_is_refused():
    with pytest.raises(InvalidJSON, match="byte order mark"):
        parse_json(b'\xef\xbb\xbf{"a": 1}')


# --- syntax ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"",
    b"   ",
    b"{",
    b"[1, 2",
    b'{"a": 1,}',
    b"[1, 2,]",
    b"{'a': 1}",
    b"{a: 1}",
    b'{"a" 1}',
    b'{"a": 1} {"b": 2}',
    b'{"a": 1} x',
    b"01",
    b"+1",
    b".5",
    b"1.",
    b"0x10",
    b"True",
    b"undefined",
    b'"unterminated',
    b'"bad escape \\x41"',
    b'"a\x01b"',                     # a raw control character inside a string
    b"// comment\n1",
])
def test_malformed_json_is_refused(raw):
    with pytest.raises(InvalidJSON, match="not valid JSON"):
        parse_json(raw)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("template", ["{}", '{{"a": {}}}', "[1, {}]", '{{"a": [{{"b": {}}}]}}'])
def test_nan_and_infinity_are_refused(constant, template):
    with pytest.raises(InvalidJSON):
        parse_json(template.format(constant).encode())


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1.5e400", "-0.1e1000"])
def test_numbers_that_overflow_to_infinity_are_refused(number):
    with pytest.raises(InvalidJSON, match="too large"):
        parse_json(f'{{"a": {number}}}'.encode())


@pytest.mark.parametrize("sign", ["", "-"])
def test_a_5000_digit_integer_is_refused(sign):
    with pytest.raises(InvalidJSON):
        parse_json(f'{{"a": {sign}{"7" * 5000}}}'.encode())


# --- duplicate keys -------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b'{"a": 1, "a": 2}',
    b'{"a": 1, "a": 1}',
    b'{"a": 1, "b": 2, "a": 3}',
    b'{"outer": {"a": 1, "a": 2}}',
    b'[{"ok": 1}, {"a": 1, "a": 2}]',
    b'{"x": [{"y": {"a": 1, "a": 2}}]}',
    b'{"\\u0061": 1, "a": 2}',          # the same key, once escaped
])
def test_duplicate_keys_are_refused_at_any_depth(raw):
    with pytest.raises(InvalidJSON, match="duplicate key"):
        parse_json(raw)


# --- NUL ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b'"\\u0000"',
    b'{"name": "Ada\\u0000"}',
    b'{"na\\u0000me": "Ada"}',
    b'{"allergies": ["pollen", "du\\u0000st"]}',
    b'[[["\\u0000"]]]',
    b'{"address": {"city": "Lon\\u0000don"}}',
    b'{"address": {"ci\\u0000ty": "London"}}',
])
def test_nul_anywhere_in_a_string_is_refused(raw):
    with pytest.raises(InvalidJSON, match="NUL"):
        parse_json(raw)


# --- unpaired surrogates ---------------------------------------------------------------


def test_an_escaped_surrogate_pair_is_one_character():
    assert parse_json(b'"\\ud83e\\ude7a"') == "\U0001fa7a"


@pytest.mark.parametrize("raw", [
    b'"\\ud800"',
    b'"\\udfff"',
    b'{"firstName": "Ada\\ud800"}',
    b'{"first\\udc00Name": "Ada"}',
    b'{"allergies": ["\\ude7a\\ud83e"]}',     # a pair in the wrong order
])
def test_unpaired_surrogate_escapes_are_refused(raw):
    # RFC 8259 §8.2 leaves unpaired surrogates unpredictable and RFC 7493 §2.1 forbids
    # them: such a string has no UTF-8 form, so no store or response could hold it.
    with pytest.raises(InvalidJSON):
        parse_json(raw)


# --- depth ----------------------------------------------------------------------------


def nested_arrays(levels: int, innermost: str = "0") -> bytes:
    """`levels` nested arrays around `innermost`: the innermost value is at level `levels`."""
    return ("[" * levels + innermost + "]" * levels).encode()


def nested_objects(levels: int) -> bytes:
    """`levels` nested objects around 0: the 0 is at level `levels`."""
    return ('{"k": ' * levels + "0" + "}" * levels).encode()


@pytest.mark.parametrize("max_depth", [1, 3, 32])
@pytest.mark.parametrize("nest", [nested_arrays, nested_objects])
def test_values_exactly_at_max_depth_are_accepted(nest, max_depth):
    value = parse_json(nest(max_depth), max_depth=max_depth)
    for _ in range(max_depth):  # down through every level to the 0 at the bottom
        value = value[0] if isinstance(value, list) else value["k"]
    assert value == 0


@pytest.mark.parametrize("max_depth", [1, 3, 32])
@pytest.mark.parametrize("nest", [nested_arrays, nested_objects])
def test_values_one_level_deeper_than_max_depth_are_refused(nest, max_depth):
    with pytest.raises(InvalidJSON, match=f"deeper than {max_depth} levels"):
        parse_json(nest(max_depth + 1), max_depth=max_depth)


def test_default_max_depth_is_32():
    parse_json(nested_arrays(32))
    with pytest.raises(InvalidJSON):
        parse_json(nested_arrays(33))


def test_an_empty_container_counts_as_a_value_at_its_own_level():
    # Three arrays: the innermost, empty one is at level 2.
    parse_json(nested_arrays(3, innermost=""), max_depth=2)
    with pytest.raises(InvalidJSON):
        parse_json(nested_arrays(4, innermost=""), max_depth=2)


def test_object_keys_are_at_their_objects_level():
    # The key "k" is at level 1 with its object; the value 0 is at level 2.
    parse_json(b'[{"k": 0}]', max_depth=2)
    with pytest.raises(InvalidJSON):
        parse_json(b'[{"k": 0}]', max_depth=1)


def test_one_deep_branch_among_shallow_ones_is_refused():
    with pytest.raises(InvalidJSON):
        parse_json(b'[1, [2], {"a": [[3]]}, 4]', max_depth=3)  # the 3 is at level 4
    parse_json(b'[1, [2], {"a": [3]}, 4]', max_depth=3)


@pytest.mark.parametrize("raw", [
    b"[" * 100_000,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
    b"[" * 5_000 + b"]" * 5_000,
    b"[" * 500 + b"]" * 500,
])
def test_deep_nesting_is_refused_without_a_recursion_error(raw):
    with pytest.raises(InvalidJSON):
        parse_json(raw)


# --- error messages -------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    f'{{"{MARKER}": '.encode(),
    f'{{"name": "{MARKER}" "x"}}'.encode(),
    f'{{"{MARKER}": NaN}}'.encode(),
    f'{{"{MARKER}": -Infinity}}'.encode(),
    f'{{"{MARKER}": 1e999}}'.encode(),
    f'{{"{MARKER}": {"9" * 5000}}}'.encode(),
    f'{{"{MARKER}": 1, "{MARKER}": 2}}'.encode(),
    f'{{"name": "{MARKER}\\u0000"}}'.encode(),
    f'{{"{MARKER}\\u0000": 1}}'.encode(),
    f'{{"{MARKER}": "\xff"}}'.encode("latin-1"),
    f'\ufeff{{"{MARKER}": 1}}'.encode(),
    ("[" * 40 + f'"{MARKER}"' + "]" * 40).encode(),
    ("[" * 100_000 + f'"{MARKER}"').encode(),
    f"{MARKER}".encode(),
])
def test_error_messages_never_contain_the_input(raw):
    with pytest.raises(InvalidJSON) as caught:
        parse_json(raw)
    assert MARKER not in str(caught.value)
    assert MARKER not in repr(caught.value)
    # The driver's own message (which quotes the input) is not chained on either.
    assert caught.value.__cause__ is None
    assert MARKER not in str(caught.value.__context__ or "")
