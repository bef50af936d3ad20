"""Tests for the two ways MediTrack writes a moment: the HTTP Date header
(web/server.py http_date, RFC 9110 §5.6.7) and the stored timestamps
(storage/base.py utc_timestamp, ISO 8601 in UTC to the millisecond)."""

import random
from email.utils import formatdate

import pytest

from storage.base import utc_timestamp
from web.server import http_date


@pytest.mark.parametrize("seconds, expected", [
    (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
    (784111777, "Sun, 06 Nov 1994 08:49:37 GMT"),  # RFC 9110 §5.6.7's own example
    (951782400, "Tue, 29 Feb 2000 00:00:00 GMT"),
    (2147483648, "Tue, 19 Jan 2038 03:14:08 GMT"),  # past a signed 32-bit time_t
    (1796587673.999, "Sun, 06 Dec 2026 20:07:53 GMT"),  # a fraction never rounds up
])
def test_http_date_known_answers(seconds, expected):
    assert http_date(seconds) == expected


def test_http_date_agrees_with_the_standard_library():
    moments = random.Random(7).sample(range(0, 4_102_444_800), 2000)  # 1970 to 2100
    for seconds in moments:
        assert http_date(seconds) == formatdate(seconds, usegmt=True)


@pytest.mark.parametrize("seconds, expected", [
    (0, "1970-01-01T00:00:00.000Z"),
    (1796587673.5, "2026-12-06T20:07:53.500Z"),
    (1796587673.9999, "2026-12-06T20:07:53.999Z"),  # milliseconds are cut, not rounded
    (1796587673.9999996, "2026-12-06T20:07:54.000Z"),  # ... after rounding to the microsecond
    (951782400.001, "2000-02-29T00:00:00.001Z"),
])
def test_utc_timestamp_known_answers(seconds, expected):
    assert utc_timestamp(seconds) == expected


def test_utc_timestamps_sort_as_their_moments_do():
    moments = sorted(random.Random(8).uniform(0, 4_102_444_800) for _ in range(2000))
    stamps = [utc_timestamp(seconds) for seconds in moments]
    assert stamps == sorted(stamps)
