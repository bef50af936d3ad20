"""web/conditional.py against RFC 9110: entity tags and their comparison (§8.8.3), the
order preconditions are evaluated in (§13.2.2), and byte ranges (§14) at every edge.
Pure functions, so every case is one call: no server."""

import pytest

from web.conditional import (ANY, NOT_MODIFIED, ByteRange, EntityTag, PreconditionFailed, RangeNotSatisfiable,
                             evaluate_preconditions, parse_entity_tags, requested_range, strong_match, weak_match)
from web.http11 import Headers


def headers(*fields: tuple[str, str]) -> Headers:
    result = Headers()
    for name, value in fields:
        result.add(name, value)
    return result


# -- entity tags -------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ('"3"', [EntityTag("3")]),
    ('W/"3"', [EntityTag("3", weak=True)]),
    ('"1", W/"2" ,"3"', [EntityTag("1"), EntityTag("2", weak=True), EntityTag("3")]),
    ('"", "a b"', []),                 # a space is not an etagc: the field is malformed
    ('""', [EntityTag("")]),           # the empty opaque-tag is a tag
    ('*', ANY),
    (' * ', ANY),
    ('"1",,', [EntityTag("1")]),       # §5.6.1: empty list elements are allowed
    ('3', []),                         # unquoted: malformed, so it matches nothing
    ('w/"3"', []),                     # the weak prefix is case-sensitive (%s"W/")
    ('"3', []),
    ('"3"x', []),
    ('*, "3"', []),                    # * stands alone
    ('"a,b", "c"', [EntityTag("a,b"), EntityTag("c")]),  # a comma is an etagc
    ('"1" "2"', []),                   # two tags need a comma between them
    ('"1",' + " " * 5000 + "x", []),   # a long run of blanks, then garbage: refused in one pass
    ('"1"' + " \t" * 2000 + ', "2"', [EntityTag("1"), EntityTag("2")]),
])
def test_entity_tag_lists_parse_as_rfc_9110_8_8_3_says(value, expected):
    assert parse_entity_tags([value]) == expected


def test_several_header_lines_are_one_list():
    assert parse_entity_tags(['"1"', 'W/"2"']) == [EntityTag("1"), EntityTag("2", weak=True)]


def test_an_absent_field_is_none():
    assert parse_entity_tags(None) is None


# RFC 9110 §8.8.3.2's table; the server's own tag is always strong, so the second column is "1" or "2".
@pytest.mark.parametrize("sent, current, strong, weak", [
    ('W/"1"', "1", False, True),
    ('W/"1"', "2", False, False),
    ('"1"', "1", True, True),
    ('"1"', "2", False, False),
])
def test_strong_and_weak_comparison_follow_the_rfc_table(sent, current, strong, weak):
    tags = parse_entity_tags([sent])
    assert strong_match(tags, current) is strong
    assert weak_match(tags, current) is weak


# -- the order of evaluation ----------------------------------------------------------------

@pytest.mark.parametrize("if_match", ['"3"', '"1", "3"', '*', '"2", "3" , W/"4"'])
def test_if_match_naming_the_current_tag_passes(if_match):
    assert evaluate_preconditions(headers(("If-Match", if_match)), "PUT", "3") is None


@pytest.mark.parametrize("if_match", ['"2"', 'W/"3"', '3', '"3', 'garbage', '""'])
def test_if_match_that_does_not_match_strongly_fails(if_match):
    with pytest.raises(PreconditionFailed):
        evaluate_preconditions(headers(("If-Match", if_match)), "PUT", "3")


def test_if_match_is_evaluated_before_if_none_match():
    # §13.2.2 step 1 fails first: 412, never a 304.
    with pytest.raises(PreconditionFailed):
        evaluate_preconditions(headers(("If-Match", '"2"'), ("If-None-Match", '"3"')), "GET", "3")


@pytest.mark.parametrize("if_none_match", ['"3"', 'W/"3"', '*', '"1", "3"'])
def test_if_none_match_that_matches_is_not_modified_on_get_and_head(if_none_match):
    for method in ("GET", "HEAD"):
        assert evaluate_preconditions(headers(("If-None-Match", if_none_match)), method, "3") == NOT_MODIFIED


@pytest.mark.parametrize("if_none_match", ['"3"', 'W/"3"', '*'])
def test_if_none_match_that_matches_fails_a_write(if_none_match):
    with pytest.raises(PreconditionFailed):
        evaluate_preconditions(headers(("If-None-Match", if_none_match)), "PUT", "3")


@pytest.mark.parametrize("if_none_match", ['"2"', 'W/"2"', '3', 'garbage'])
def test_if_none_match_that_does_not_match_carries_on(if_none_match):
    assert evaluate_preconditions(headers(("If-None-Match", if_none_match)), "GET", "3") is None


def test_date_conditions_are_ignored_without_last_modified():
    sent = headers(("If-Unmodified-Since", "Sat, 01 Jan 2000 00:00:00 GMT"),
                   ("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT"))
    assert evaluate_preconditions(sent, "GET", "3") is None


# -- byte ranges ------------------------------------------------------------------------------

SIZE = 10


@pytest.mark.parametrize("value, start, length", [
    ("bytes=0-0", 0, 1),            # the first byte
    ("bytes=9-9", 9, 1),            # the last byte
    ("bytes=0-9", 0, 10),           # all of it
    ("bytes=0-", 0, 10),
    ("bytes=9-", 9, 1),
    ("bytes=3-100", 3, 7),          # a last-pos past the end means "to the end"
    ("bytes=-1", 9, 1),             # the last byte
    ("bytes=-10", 0, 10),
    ("bytes=-11", 0, 10),           # a suffix longer than the file: all of it
    ("BYTES=2-3", 2, 2),            # the unit is case-insensitive
    ("bytes=2-3,", 2, 2),           # an empty list element
    ("bytes= 2-3", 2, 2),           # OWS around list elements
])
def test_one_satisfiable_range_is_that_range(value, start, length):
    assert requested_range(headers(("Range", value)), SIZE, "tag") == ByteRange(start, length)


@pytest.mark.parametrize("value", ["bytes=10-", "bytes=10-20", "bytes=11-", "bytes=-0"])
def test_a_range_past_the_end_is_not_satisfiable_and_says_the_size(value):
    with pytest.raises(RangeNotSatisfiable) as refused:
        requested_range(headers(("Range", value)), SIZE, "tag")
    assert refused.value.headers == (("Content-Range", f"bytes */{SIZE}"),)


@pytest.mark.parametrize("value", [
    "bytes=0-1,3-4", "bytes=0-1, -2",     # several ranges: the whole file (§14.2 allows it)
    "bytes=5-4",                          # last-pos before first-pos: invalid
    "bytes=", "bytes=-", "bytes=a-b", "bytes=1-2-3", "bytes =0-1", "items=0-1", "0-1", "bytes=+1-2",
    "bytes=0x1-2", "bytes=1.5-2", "bytes=٣-4",
    "bytes=" + "9" * 19 + "-",            # more digits than any size needs
    "bytes=1" + " " * 5000 + "x",         # a long run of blanks: refused in one pass
])
def test_several_or_malformed_ranges_are_ignored(value):
    assert requested_range(headers(("Range", value)), SIZE, "tag") is None


def test_no_range_header_is_the_whole_file():
    assert requested_range(headers(), SIZE, "tag") is None


@pytest.mark.parametrize("if_range, applies", [
    ('"tag"', True),
    ('"other"', False),                   # the file changed: send all of it
    ('W/"tag"', False),                   # §13.1.5: If-Range needs a strong match
    ("Wed, 21 Oct 2015 07:28:00 GMT", False),  # a date, and we send no Last-Modified
    ("tag", False),
])
def test_if_range_applies_the_range_only_to_the_same_file(if_range, applies):
    wanted = requested_range(headers(("Range", "bytes=2-3"), ("If-Range", if_range)), SIZE, "tag")
    assert wanted == (ByteRange(2, 2) if applies else None)


def test_if_range_that_fails_also_spares_an_unsatisfiable_range():
    sent = headers(("Range", "bytes=50-"), ("If-Range", '"other"'))
    assert requested_range(sent, SIZE, "tag") is None


def test_content_range_names_first_last_and_size():
    assert ByteRange(2, 3).content_range(SIZE) == "bytes 2-4/10"
