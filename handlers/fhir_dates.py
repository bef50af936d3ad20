"""FHIR dates in a search: each value a range of instants, and the prefixes that compare two.

FHIR R4 search.html#date: a date is as wide as it is precise. `1985` is the whole year,
`1985-12` the month, `1985-12-10` the day, `1985-12-10T09:30Z` a minute. A search
value and a record's own date are both ranges, and a prefix (`eq`, `lt`, `sa`, ...)
says how the two must relate (`date_test`).

Each instant is a whole number of microseconds since 1970 (UTC): plain integers, so
year 1 and year 9999 need no special case, and widening a range (`ap`) can never
overflow.
"""

import calendar
import re
from datetime import datetime, timedelta, timezone
from typing import Callable

from handlers.fhir_errors import Refused


PREFIXES = ("eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap")
# FHIR's date and dateTime (datatypes.html), ASCII digits only; a zone is at most ±14:00.
DATE = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})(?:T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?"
                  r"(Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?)?)?")
EPOCH = datetime(1970, 1, 1)
MICROSECONDS = {"day": 86_400_000_000, "minute": 60_000_000, "second": 1_000_000}


def instant_text(value: int) -> str:
    """Microseconds since 1970 as a stored timestamp ("2026-11-24T10:15:30.123Z"),
    clamped to years 1 to 9999."""
    value = min(max(value, microseconds(datetime(1, 1, 1))), microseconds(datetime(9999, 12, 31, 23, 59, 59, 999000)))
    return (EPOCH + timedelta(microseconds=value)).isoformat(timespec="milliseconds") + "Z"


def microseconds(moment: datetime) -> int:
    """A naive UTC datetime as microseconds since 1970."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def date_range(text: str) -> tuple[int, int]:
    """The instants a date or dateTime covers: 1985 is the whole year, 1985-12-10 the
    day, 1985-12-10T09:30Z one minute. A time without a zone is taken as UTC."""
    match = DATE.fullmatch(text)
    if not match:
        raise Refused(f"{text!r} is not a date (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.fff]][Z|±hh:mm])")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        first_day = datetime(int(year), int(month or 1), int(day or 1))
        days = calendar.monthrange(first_day.year, first_day.month)[1] if day is None else 1
        if month is None:
            days = 366 if calendar.isleap(first_day.year) else 365
        start = microseconds(first_day)
        if hour is None:
            return start, start + days * MICROSECONDS["day"]
        if not (int(hour) < 24 and int(minute) < 60 and int(second or 0) < 60):
            raise ValueError("no such time")
        offset = 0 if zone in (None, "Z") else (-1 if zone[0] == "-" else 1) * (int(zone[1:3]) * 60 + int(zone[4:6]))
        start += (int(hour) * 60 + int(minute) - offset) * MICROSECONDS["minute"] + int(second or 0) * 1_000_000
        start += int((fraction or "0")[:6].ljust(6, "0"))
        width = (MICROSECONDS["minute"] if second is None else MICROSECONDS["second"] if fraction is None
                 else 10 ** (6 - min(len(fraction), 6)))
        return start, start + width
    except ValueError:
        raise Refused(f"{text!r} is not a date that exists") from None


def instant(text: str) -> str:
    """A FHIR instant (a dateTime with seconds and a zone, as `_since` takes) as a stored
    timestamp, so that it compares with updatedAt as text. Finer than a millisecond is
    cut, which keeps `updatedAt > instant` exact."""
    match = DATE.fullmatch(text)
    if match is None or match[6] is None or match[8] is None:
        raise Refused(f"{text!r} is not an instant: a date and time with seconds and a zone, "
                      f"such as 2026-01-31T09:30:00Z")
    start, _ = date_range(text)
    return instant_text(start)


def birth_date_range(patient: dict) -> tuple[int, int]:
    return date_range(patient["dateOfBirth"])


def updated_range(patient: dict) -> tuple[int, int]:
    """updatedAt is stored to the millisecond ("2026-11-24T11:02:00.000Z")."""
    start, _ = date_range(patient["updatedAt"])
    return start, start + 1000


def date_test(target: Callable[[dict], tuple[int, int]], text: str, now: datetime):
    """FHIR R4 search.html#prefix, for a search range [low, high) and the record's [start, end):

        eq  the search range holds the record's        ne  it does not
        gt  the record's reaches past the search's      lt  the record's starts before it
        ge  gt or eq                                     le  lt or eq
        sa  the record's starts after the search's end  eb  it ends before the search's start
        ap  the ranges meet once the search range is widened by a tenth of its distance
            from now (the spec leaves "approximately" to the server and suggests 10%)
    """
    prefix = text[:2] if text[:2] in PREFIXES else "eq"
    low, high = date_range(text[2:] if text[:2] in PREFIXES else text)
    if prefix == "ap":
        slack = abs(microseconds(now.astimezone(timezone.utc).replace(tzinfo=None)) - low) // 10
        low, high = low - slack, high + slack

    def holds(start, end):
        return low <= start and end <= high

    tests = {
        "eq": holds,
        "ne": lambda start, end: not holds(start, end),
        "gt": lambda start, end: end > high,
        "lt": lambda start, end: start < low,
        "ge": lambda start, end: end > high or holds(start, end),
        "le": lambda start, end: start < low or holds(start, end),
        "sa": lambda start, end: start >= high,
        "eb": lambda start, end: end <= low,
        "ap": lambda start, end: start < high and low < end,
    }
    compare = tests[prefix]
    return lambda patient: compare(*target(patient))
