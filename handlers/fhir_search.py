"""FHIR search on Patient: a query becomes tests on each patient, and never answers more than it asked.

FHIR R4 search (https://hl7.org/fhir/R4/search.html) in the parts MediTrack serves:

    ?family=lov&birthdate=ge1980,lt1950&_sort=-birthdate
        → family starts with "lov"  AND  (born in or after 1980 OR before 1950), the youngest first

- Each parameter is one test; a parameter given twice is two tests (AND), and values
  separated by commas are alternatives (OR). `\\,` is a comma inside a value, `\\|` a
  bar, `\\\\` a backslash (§3.1.1.1). An empty alternative (`family=zola,`) is refused:
  every name starts with nothing, so it would match every patient.
- **Strings** (`name`, `family`, `given`) match a name that *starts with* the value,
  ignoring case and accents ("lö" finds "Lovelace"); `:exact` compares exactly, case
  and accents included; `:contains` finds the value anywhere.
- **Tokens** (`_id`, `identifier`, `gender`): `code`, `system|code`, `|code` (no
  system) or `system|` (any code of that system).
- **Dates** (`birthdate`, `_lastUpdated`): ranges compared by prefix (handlers/fhir_dates.py).
- A parameter, modifier or sort key this server does not support is **refused with
  400, naming it** — never ignored, since ignoring it answers more than was asked (a
  search for one patient that returns another is a safety defect). A client that
  prefers the other way sends `Prefer: handling=lenient` (§3.1.1.4): then a parameter
  it does not know is left out, and, as always, the Bundle's `self` link lists exactly
  what was applied. A modifier the server does not support on a parameter it knows
  (`family:missing`), or a value it cannot serve (a date that does not exist,
  `_sort=address`, `_summary=true`), is refused either way: leaving those out would
  widen the search.

Parsing reads nothing from the store, so a refused search costs nothing.
"""

import base64
import binascii
import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable
from urllib.parse import quote

from handlers.fhir_dates import birth_date_range, date_test, updated_range
from handlers.fhir_errors import Refused, Unsupported
from handlers.inputs import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, whole_number
from storage.ids import is_object_id

GENDER_SYSTEM = "http://hl7.org/fhir/administrative-gender"
GENDERS = ("male", "female", "other", "unknown")
MAX_VALUE = 500  # characters in one parameter's value
MAX_CURSOR = 2000  # a sorted search's cursor holds the last entry's sort values: names can be long
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4 datatypes.html#id

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
CONTROL = ("_count", "cursor", "_sort", "_total", "_summary", "_format", "_pretty")
JSON_FORMATS = ("json", "application/json", "application/fhir+json")  # _format values this server answers


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


def checked_value(name: str, value: str) -> str:
    if len(value) > (MAX_CURSOR if name == "cursor" else MAX_VALUE) or "\x00" in value:
        raise Refused(f"the value of {name} is too long or contains NUL")
    return value


def page_size(text: str | None) -> int:
    """_count: FHIR R4 search.html#count says a server "is not bound to return the number
    requested, but cannot return more", so one above the page limit gets the limit."""
    return DEFAULT_PAGE_SIZE if text is None else min(whole_number(text, "_count", 1, 999_999_999), MAX_PAGE_SIZE)


def parse_patient_search(query: dict[str, list[str]], *, lenient: bool, identifier_system: str,
                         now: datetime) -> Search:
    """The search a query asks for. `lenient` leaves out a parameter this server does
    not know; anything else it cannot serve is refused either way."""
    search, cursor = Search(), None
    for raw_name, values in query.items():
        name, _, modifier = raw_name.partition(":")
        if name in CONTROL and not modifier and len(values) > 1:
            raise Refused(f"the parameter {name} may be given only once")
        for value in (checked_value(raw_name, value) for value in values):
            if name == "cursor" and not modifier:
                cursor = value  # read once the sort is known
            elif name in CONTROL and not modifier:
                shape_answer(search, name, value)
            elif name in PATIENT_PARAMETERS:
                kind = PATIENT_PARAMETERS[name][0]
                if modifier and not (kind == "string" and modifier in STRING_MODIFIERS):
                    raise Unsupported(f"the modifier :{modifier} of {name} is not supported")
                search.criteria.append(Criterion(raw_name, value,
                                                 patient_test(name, modifier, value, identifier_system, now)))
            elif name in CONTROL:
                raise Unsupported(f"the modifier :{modifier} of {name} is not supported")
            elif not lenient:
                raise Unsupported(f"the search parameter {raw_name} is not supported "
                                  f"(supported: {', '.join(PATIENT_PARAMETERS)})")
    if cursor is not None:
        search.cursor = read_cursor(cursor, len(search.sort))
    return search


def shape_answer(search: Search, name: str, value: str) -> None:
    """A parameter that shapes the answer rather than chooses patients."""
    if name == "_count":
        search.count = page_size(value)
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
        search.format = answer_format(value)
    elif name == "_pretty":
        pretty(value)


def answer_format(value: str) -> str:
    """_format: one of JSON's names (the only format served), else 400."""
    if value not in JSON_FORMATS:
        raise Unsupported(f"_format {value!r} is not supported: this server answers JSON only")
    return value


def pretty(value: str) -> None:
    """_pretty asks for layout: accepted, and the answer is compact JSON either way."""
    if value not in ("true", "false"):
        raise Refused("_pretty must be true or false")


def sort_keys(value: str) -> list[tuple[str, bool]]:
    keys = []
    for item in value.split(","):
        descending, name = item.startswith("-"), item.removeprefix("-")
        if name not in SORT_KEYS:
            raise Unsupported(f"_sort by {name!r} is not supported (supported: {', '.join(SORT_KEYS)})")
        keys.append((name, descending))
    return keys


BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def read_cursor(text: str, sort_length: int) -> tuple:
    """A cursor back into the key it was made from; 400 for anything else."""
    if sort_length == 0:
        if not is_object_id(text):
            raise Refused("cursor must be the cursor of a next link, unchanged")
        return (text,)
    try:
        if not BASE64URL.fullmatch(text):  # b64decode would skip stray characters
            raise ValueError(text)
        raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        raise Refused("cursor must be the cursor of a next link, unchanged") from None
    if (not isinstance(raw, list) or len(raw) != sort_length + 1 or not all(isinstance(item, str) for item in raw)
            or not is_object_id(raw[-1])):
        raise Refused("cursor must be the cursor of a next link made with the same _sort")
    return tuple(raw)


# -- one parameter's test ----------------------------------------------------------------------------

def split_escaped(text: str, separator: str) -> list[str]:
    """Split at each `separator` not escaped by a backslash; the parts keep their escapes,
    so that a value can be split again (a token at its bar) before it is unescaped."""
    parts, current, escaped = [], [], False
    for character in text:
        if escaped:
            current.append(character)
            escaped = False
        elif character == "\\":
            current.append(character)
            escaped = True
        elif character == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(character)
    if escaped:
        raise Refused(f"{text!r} ends in a backslash that escapes nothing")
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def split_values(text: str) -> list[str]:
    """A parameter's alternatives (its comma-separated values), unescaped; none empty."""
    values = [unescape(part) for part in split_escaped(text, ",")]
    if "" in values:
        raise Refused(f"{text!r} has an empty value: every record would match it")
    return values


def any_of(tests: list[Callable[[dict], bool]]) -> Callable[[dict], bool]:
    return lambda patient: any(test(patient) for test in tests)


def patient_test(name: str, modifier: str, text: str, identifier_system: str, now: datetime):
    """The test one parameter's values make: any of them (OR) matches."""
    if name in ("name", "family", "given"):
        fields = {"name": ("lastName", "firstName"), "family": ("lastName",), "given": ("firstName",)}[name]
        return any_of([string_test(fields, STRING_MODIFIERS[modifier], value) for value in split_values(text)])
    if name in ("birthdate", "_lastUpdated"):
        target = birth_date_range if name == "birthdate" else updated_range
        return any_of([date_test(target, value, now) for value in split_values(text)])
    tokens = split_escaped(text, ",")
    if "" in tokens:
        raise Refused(f"{text!r} has an empty value: every record would match it")
    return any_of([token_test(name, token, identifier_system) for token in tokens])


def never(patient: dict) -> bool:
    return False


def token_test(name: str, token: str, identifier_system: str) -> Callable[[dict], bool]:
    """`code` (any system), `system|code`, `|code` (no system: ours always have one, so
    nothing) or `system|` (any code of that system). `token` still has its escapes:
    it is split at an unescaped bar first."""
    parts = split_escaped(token, "|")
    if len(parts) > 2:
        raise Refused(f"{unescape(token)!r} has more than one '|' (escape a bar in a value as \\|)")
    system, code = (None, unescape(parts[0])) if len(parts) == 1 else (unescape(parts[0]), unescape(parts[1]))
    if name == "_id":
        if system is not None or not FHIR_ID.fullmatch(code):
            raise Refused(f"_id takes an id (letters, digits, '-' and '.', at most 64), not {unescape(token)!r}")
        return lambda patient: patient["id"] == code
    if name == "identifier":
        if system is not None and system != identifier_system:
            return never                   # no system, or another one: never ours
        return lambda patient: code == "" or patient["id"] == code
    if system not in (None, "", GENDER_SYSTEM) or (code not in GENDERS and not (system and code == "")):
        raise Refused(f"gender must be one of {', '.join(GENDERS)}, optionally as {GENDER_SYSTEM}|code")
    if system == "":
        return never                       # a gender always has its system
    return (lambda patient: True) if code == "" else (lambda patient: patient["gender"] == code)


def folded(text: str) -> str:
    """Case- and accent-free: decompose (NFKD), drop the combining marks, casefold."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def string_test(fields: tuple[str, ...], how: str, value: str) -> Callable[[dict], bool]:
    if how == "exact":
        return lambda patient: any(patient[name] == value for name in fields)
    # A value of combining marks only folds to nothing, which every name would start
    # with: it is then compared as it is.
    wanted = folded(value) or value.casefold()
    if how == "contains":
        return lambda patient: any(wanted in folded(patient[name]) for name in fields)
    return lambda patient: any(folded(patient[name]).startswith(wanted) for name in fields)
