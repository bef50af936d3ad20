"""FHIR search on Patient: a query becomes tests on each patient, and never answers more than it asked.

FHIR R4 search (https://hl7.org/fhir/R4/search.html) in the parts MediTrack serves:

    ?family=lov&birthdate=ge1980,lt1950&_sort=-birthdate
        → family starts with "lov"  AND  (born in or after 1980 OR before 1950), the youngest first

- Each parameter is one test; a parameter given twice is two tests (AND), and values
  separated by commas are alternatives (OR). `\\,` is a comma inside a value (§3.1.1.1).
- **Strings** (`name`, `family`, `given`) match a name that *starts with* the value,
  ignoring case and accents ("lö" finds "Lovelace"); `:exact` compares exactly, case
  and accents included; `:contains` finds the value anywhere.
- **Tokens** (`_id`, `identifier`, `gender`): `code`, `system|code`, `|code` (no
  system) or `system|` (any code of that system).
- **Dates** (`birthdate`, `_lastUpdated`): a value is a range as wide as it is precise
  (`1985` is the whole year), and a prefix says how it must relate to the record's
  own range: eq ne lt gt le ge sa eb ap (`date_test`).
- A parameter, modifier or sort key this server does not support is **refused with
  400, naming it** — never ignored, since ignoring it answers more than was asked (a
  search for one patient that returns another is a safety defect). A client that
  prefers the other way sends `Prefer: handling=lenient` (§3.1.1.4): then a parameter
  or modifier it does not know is left out, and, as always, the Bundle's `self` link
  lists exactly what was applied. A value the server cannot serve (a date that does
  not exist, `_sort=address`, `_summary=true`) is refused either way.

Parsing reads nothing from the store, so a refused search costs nothing.
"""

import base64
import binascii
import calendar
import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable
from urllib.parse import quote

from handlers.inputs import MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE, whole_number
from storage.ids import is_object_id
from web.problems import BadRequest

GENDER_SYSTEM = "http://hl7.org/fhir/administrative-gender"
GENDERS = ("male", "female", "other", "unknown")

# Patient's search parameters: name → (FHIR type, what it matches). The CapabilityStatement
# lists exactly these (handlers/fhir_capability.py).
PATIENT_PARAMETERS = {
    "_id": ("token", "the patient's id"),
    "identifier": ("token", "the patient's id as an identifier under the server's identifier system"),
    "name": ("string", "the family or the given name: starts with, ignoring case and accents; :exact, :contains"),
    "family": ("string", "the family name: starts with, ignoring case and accents; :exact, :contains"),
    "given": ("string", "the given name: starts with, ignoring case and accents; :exact, :contains"),
    "birthdate": ("date", "the date of birth; prefixes eq ne lt gt le ge sa eb ap; YYYY, YYYY-MM or YYYY-MM-DD"),
    "gender": ("token", "male, female, other or unknown"),
    "_lastUpdated": ("date", "when the record last changed; prefixes as for birthdate, or a dateTime"),
}
STRING_MODIFIERS = {"": "starts", "exact": "exact", "contains": "contains"}
SORT_KEYS = {  # _sort name → the patient's value it orders by
    "birthdate": lambda patient: patient["dateOfBirth"],
    "family": lambda patient: folded(patient["lastName"]),
    "given": lambda patient: folded(patient["firstName"]),
    "_lastUpdated": lambda patient: patient["updatedAt"],
}
TOTAL_MODES = ("none", "estimate", "accurate")


class Refused(BadRequest):
    """A value the server cannot read: 400, OperationOutcome issue `invalid`."""
    issue = "invalid"


class Unsupported(Refused):
    """A parameter, modifier or sort key the server does not support: 400, with the
    OperationOutcome's issue `not-supported` (FHIR value set issue-type)."""
    issue = "not-supported"


@dataclass
class Criterion:
    """One applied parameter: as written (for the self link) and its test."""
    name: str                          # with its modifier: "family:exact"
    value: str                         # as written, commas and escapes included
    test: Callable[[dict], bool]


@dataclass
class Search:
    """A parsed search: what to match, in which order, and how much of it to answer."""
    criteria: list[Criterion] = field(default_factory=list)
    sort: list[tuple[str, bool]] = field(default_factory=list)   # (key, descending)
    count: int = DEFAULT_PAGE_SIZE
    total: str = "accurate"
    summary_count: bool = False
    format: str | None = None          # _format, when given: one of the JSON forms
    cursor: tuple | None = None        # the sort values and id of the last entry of the previous page

    def key(self, patient: dict) -> tuple:
        """Where a patient stands in this search's order; ties go by id."""
        return self.ordered([SORT_KEYS[name](patient) for name, _ in self.sort] + [patient["id"]])

    def ordered(self, values: list) -> tuple:
        """Sort values as a tuple that compares in this search's order."""
        return tuple(Descending(value) if descending else value
                     for value, (_, descending) in zip(values, [*self.sort, ("id", False)]))

    def past_cursor(self, patient: dict) -> bool:
        """Whether the patient comes after the previous page (all do on the first)."""
        return self.cursor is None or self.key(patient) > self.ordered(list(self.cursor))

    def matches(self, patient: dict) -> bool:
        return all(criterion.test(patient) for criterion in self.criteria)

    def applied(self) -> list[tuple[str, str]]:
        """The query that was applied, in the order it came, for the Bundle's links."""
        pairs = [(criterion.name, criterion.value) for criterion in self.criteria]
        if self.sort:
            pairs.append(("_sort", ",".join(("-" if descending else "") + name for name, descending in self.sort)))
        if self.total != "accurate":
            pairs.append(("_total", self.total))
        if self.summary_count:
            pairs.append(("_summary", "count"))
        if self.format:
            pairs.append(("_format", self.format))
        return [*pairs, ("_count", str(self.count))]

    def cursor_after(self, patient: dict) -> str:
        """The cursor a next link carries: the last entry's place in the order. In id
        order that is the id itself; sorted, its sort values and id, base64url JSON."""
        if not self.sort:
            return patient["id"]
        raw = [SORT_KEYS[name](patient) for name, _ in self.sort] + [patient["id"]]
        return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


class Descending:
    """A sort value that orders backwards, so one tuple sorts keys in mixed directions."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __lt__(self, other):
        return other.value < self.value

    def __gt__(self, other):
        return other.value > self.value

    def __eq__(self, other):
        return self.value == other.value


def link(base: str, pairs: list[tuple[str, str]]) -> str:
    """A search URL; `:`, `,` and `|` stay as FHIR writes them, the rest is escaped."""
    query = "&".join(f"{quote(name, safe=':')}={quote(value, safe=':,|')}" for name, value in pairs)
    return f"{base}?{query}"


CONTROL = ("_count", "cursor", "_sort", "_total", "_summary", "_format", "_pretty")
JSON_FORMATS = ("json", "application/json", "application/fhir+json")  # _format values this server answers


def parse_patient_search(query: dict[str, list[str]], *, lenient: bool, identifier_system: str,
                         now: datetime) -> Search:
    """The search a query asks for. `lenient` leaves out a parameter or modifier this
    server does not know; a value it cannot serve is refused either way (a known
    parameter with a wrong value is a mistake, not an extension)."""
    search, cursor = Search(), None
    for raw_name, values in query.items():
        name, _, modifier = raw_name.partition(":")
        if name in CONTROL and not modifier and len(values) > 1:
            raise Refused(f"the parameter {name} may be given only once")
        for value in values:
            if len(value) > 500 or "\x00" in value:
                raise Refused(f"the value of {raw_name} is too long or contains NUL")
            if name in CONTROL and not modifier:
                cursor = control(search, name, value, cursor)
            elif name in PATIENT_PARAMETERS and (not modifier or PATIENT_PARAMETERS[name][0] == "string"
                                                 and modifier in STRING_MODIFIERS):
                search.criteria.append(Criterion(raw_name, value,
                                                 patient_test(name, modifier, value, identifier_system, now)))
            elif not lenient:
                raise Unsupported(f"the modifier :{modifier} of {name} is not supported"
                                  if modifier and (name in PATIENT_PARAMETERS or name in CONTROL) else
                                  f"the search parameter {raw_name} is not supported "
                                  f"(supported: {', '.join(PATIENT_PARAMETERS)})")
    if cursor is not None:
        search.cursor = read_cursor(cursor, len(search.sort))
    return search


def control(search: Search, name: str, value: str, cursor: str | None) -> str | None:
    """One of the parameters that shape the answer rather than choose patients."""
    if name == "_count":
        search.count = min(whole_number(value, "_count", 1, 999_999_999), MAX_PAGE_SIZE)
    elif name == "cursor":
        return value  # read once the sort is known
    elif name == "_sort":
        search.sort = sort_keys(value)
    elif name == "_total":
        if value not in TOTAL_MODES:
            raise Refused(f"_total must be one of {', '.join(TOTAL_MODES)}")
        search.total = value
    elif name == "_summary":
        if value in ("true", "text", "data"):
            raise Unsupported(f"_summary={value} is not supported (supported: count, false)")
        if value not in ("count", "false"):
            raise Refused("_summary must be one of true, text, data, count, false")
        search.summary_count = value == "count"
    elif name == "_format":
        if value not in JSON_FORMATS:
            raise Unsupported(f"_format {value!r} is not supported: this server answers JSON only")
        search.format = value
    elif value not in ("true", "false"):  # _pretty: a request for layout; the answer is compact either way
        raise Refused("_pretty must be true or false")
    return cursor


def sort_keys(value: str) -> list[tuple[str, bool]]:
    keys = []
    for item in value.split(","):
        descending, name = item.startswith("-"), item.removeprefix("-")
        if name not in SORT_KEYS:
            raise Unsupported(f"_sort by {name!r} is not supported (supported: {', '.join(SORT_KEYS)})")
        keys.append((name, descending))
    return keys


def read_cursor(text: str, sort_length: int) -> tuple:
    """A cursor back into the key it was made from; 400 for anything else."""
    if sort_length == 0:
        if not is_object_id(text):
            raise Refused("cursor must be the cursor of a next link, unchanged")
        return (text,)
    try:
        raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        raise Refused("cursor must be the cursor of a next link, unchanged") from None
    if (not isinstance(raw, list) or len(raw) != sort_length + 1 or not all(isinstance(item, str) for item in raw)
            or not is_object_id(raw[-1])):
        raise Refused("cursor must be the cursor of a next link made with the same _sort")
    return tuple(raw)


# -- one parameter's test ----------------------------------------------------------------------------

def split_values(text: str, separator: str = ",") -> list[str]:
    """Split at each `separator` not escaped by a backslash, then unescape (§3.1.1.1)."""
    parts, current, escaped = [], [], False
    for character in text:
        if escaped:
            current.append(character)
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(character)
    parts.append("".join(current))
    return parts


def any_of(tests: list[Callable[[dict], bool]]) -> Callable[[dict], bool]:
    return lambda patient: any(test(patient) for test in tests)


def patient_test(name: str, modifier: str, text: str, identifier_system: str, now: datetime):
    """The test one parameter's values make: any of them (OR) matches."""
    if text == "":
        raise Refused(f"the search parameter {name} needs a value")
    if name in ("name", "family", "given"):
        fields = {"name": ("lastName", "firstName"), "family": ("lastName",), "given": ("firstName",)}[name]
        return any_of([string_test(fields, STRING_MODIFIERS[modifier], value) for value in split_values(text)])
    if name in ("birthdate", "_lastUpdated"):
        target = birth_date_range if name == "birthdate" else updated_range
        return any_of([date_test(target, value, now) for value in split_values(text)])
    return any_of([token_test(name, value, identifier_system) for value in split_values(text)])


def never(patient: dict) -> bool:
    return False


def token_test(name: str, value: str, identifier_system: str) -> Callable[[dict], bool]:
    """`code` (any system), `system|code`, `|code` (no system: ours always have one, so
    nothing) or `system|` (any code of that system)."""
    system, bar, code = value.rpartition("|")
    system = system if bar else None
    if name == "_id":
        if bar:
            raise Refused("_id takes an id, without a system")
        return lambda patient: patient["id"] == code
    if name == "identifier":
        if system not in (None, identifier_system):
            return never                       # another system, or none
        return lambda patient: code == "" or patient["id"] == code
    if code not in GENDERS or system not in (None, "", GENDER_SYSTEM):
        raise Refused(f"gender must be one of {', '.join(GENDERS)}, optionally as {GENDER_SYSTEM}|code")
    return never if system == "" else lambda patient: patient["gender"] == code


def folded(text: str) -> str:
    """Case- and accent-free: decompose (NFKD), drop the combining marks, casefold."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def string_test(fields: tuple[str, ...], how: str, value: str) -> Callable[[dict], bool]:
    if how == "exact":
        return lambda patient: any(patient[name] == value for name in fields)
    wanted = folded(value)
    if how == "contains":
        return lambda patient: any(wanted in folded(patient[name]) for name in fields)
    return lambda patient: any(folded(patient[name]).startswith(wanted) for name in fields)


# -- dates -------------------------------------------------------------------------------------------
# A date is compared as a range of instants, [start, end), each instant a whole number of
# microseconds since 1970 (UTC): plain integers, so year 1 and year 9999 need no special
# case, and widening a range (`ap`) can never overflow.

PREFIXES = ("eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap")
# FHIR's date and dateTime (datatypes.html), ASCII digits only; a zone is at most ±14:00.
DATE = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})(?:T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?"
                  r"(Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?)?)?")
EPOCH = datetime(1970, 1, 1)
MICROSECONDS = {"day": 86_400_000_000, "minute": 60_000_000, "second": 1_000_000}


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
