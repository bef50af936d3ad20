"""FHIR search, parameter by parameter (handlers/fhir_search.py): what matches, what is
refused, and what Prefer: handling=lenient leaves out. No server: a query is parsed and
its tests run on stored-patient dicts."""

from datetime import datetime, timezone

import pytest

from handlers import fhir_search
from handlers.fhir_dates import date_range, instant
from handlers.fhir_errors import Refused, Unsupported
from handlers.fhir_search import parse_patient_search

SYSTEM = "urn:meditrack:patient-id"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def patient(pid: int, first: str, last: str, born: str, gender: str = "female",
            updated: str = "2026-11-24T11:02:00.000Z") -> dict:
    return {"id": f"{pid:024x}", "firstName": first, "lastName": last, "dateOfBirth": born, "gender": gender,
            "updatedAt": updated, "version": 1, "reports": []}


PATIENTS = [
    patient(1, "Ada", "Lovelace", "1815-12-10"),
    patient(2, "Émile", "Zola", "1840-04-02", "male", "2026-11-25T08:00:00.000Z"),
    patient(3, "Alan", "Turing", "1912-06-23", "male", "2026-11-26T23:59:59.999Z"),
    patient(4, "Grace", "Hopper", "1906-12-09", "female", "2026-11-27T00:00:00.000Z"),
    patient(5, "Łukasz", "Lövgren", "1985-12-31", "other"),
    patient(6, "Ada", "Lovelace-Byron", "1985-01-01", "unknown"),
]


def search(query: dict[str, str | list[str]], *, lenient: bool = False) -> fhir_search.Search:
    raw = {name: value if isinstance(value, list) else [value] for name, value in query.items()}
    return parse_patient_search(raw, lenient=lenient, identifier_system=SYSTEM, now=NOW)


def found(query: dict, **options) -> list[str]:
    """The last names that match, in the search's order."""
    parsed = search(query, **options)
    return [p["lastName"] for p in sorted((p for p in PATIENTS if parsed.matches(p)), key=parsed.key)]


# -- strings --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query, expected", [
    ({"family": "lov"}, ["Lovelace", "Lövgren", "Lovelace-Byron"]),    # starts with, case and accents ignored
    ({"family": "LOVELACE"}, ["Lovelace", "Lovelace-Byron"]),
    ({"family": "zzz"}, []),
    ({"family": "ace"}, []),                                          # not a prefix
    ({"family:contains": "ace"}, ["Lovelace", "Lovelace-Byron"]),
    ({"family:exact": "Lovelace"}, ["Lovelace"]),
    ({"family:exact": "lovelace"}, []),                               # exact: case counts
    ({"family:exact": "Lovgren"}, []),                                # and accents do
    ({"given": "emile"}, ["Zola"]),
    ({"given": "lukasz"}, []),                                        # Ł is a letter of its own, not L + a mark
    ({"name": "ada"}, ["Lovelace", "Lovelace-Byron"]),                # name: given or family
    ({"name": "tur"}, ["Turing"]),
    ({"name:contains": "race"}, ["Hopper"]),
    ({"family": "zola,turing"}, ["Zola", "Turing"]),                  # comma: OR
    ({"family": ["lov", "lovelace-"]}, ["Lovelace-Byron"]),           # repeated: AND
])
def test_string_parameters(query, expected):
    assert found(query) == expected


def test_accent_insensitivity_is_exactly_unicodes_decomposition():
    # Ł (U+0141) has no decomposition under NFKD, so only "ł" finds it; ö is o + a mark.
    assert found({"given": "ŁUK"}) == ["Lövgren"]
    assert found({"family": "LOVG"}) == ["Lövgren"]


@pytest.mark.parametrize("query", [
    {"family": ""}, {"family": "zola,"}, {"family": ",zola"}, {"name": "a,,b"}, {"family": "zola\\"},
    {"identifier": ","}, {"gender": "male,"}, {"birthdate": "1985,"}, {"_id": ""},
])
def test_an_empty_value_or_alternative_is_refused_never_matching_everyone(query):
    # Every name starts with nothing: an empty alternative would answer every patient.
    with pytest.raises(Refused):
        search(query)


def test_a_value_of_combining_marks_only_is_compared_as_it_is():
    assert found({"family": "\u0301"}) == [] and found({"family:contains": "\u0308"}) == []


def test_escapes_split_before_they_are_undone():
    assert fhir_search.split_values(r"a\,b,c") == ["a,b", "c"]
    assert fhir_search.split_values(r"a\\,b") == ["a\\", "b"]
    assert fhir_search.split_escaped(r"urn:x\|y|code", "|") == [r"urn:x\|y", "code"]
    # An escaped bar is part of the value, not the system's end: no patient has this id.
    assert found({"identifier": f"{1:024x}\\|x"}) == []


# -- tokens ----------------------------------------------------------------------------------------

def test_id_identifier_and_gender():
    assert found({"_id": f"{3:024x}"}) == ["Turing"]
    assert found({"_id": f"{3:024x},{4:024x}"}) == ["Turing", "Hopper"]
    assert found({"identifier": f"{SYSTEM}|{2:024x}"}) == ["Zola"]
    assert found({"identifier": f"{2:024x}"}) == ["Zola"]                # any system
    assert found({"identifier": f"urn:other|{2:024x}"}) == []              # another system's id is not ours
    assert found({"identifier": f"|{2:024x}"}) == []                       # no system: ours always has one
    assert len(found({"identifier": f"{SYSTEM}|"})) == len(PATIENTS)       # every id of our system
    assert found({"gender": "male"}) == ["Zola", "Turing"]
    assert found({"gender": "http://hl7.org/fhir/administrative-gender|other"}) == ["Lövgren"]
    assert found({"gender": "other,unknown"}) == ["Lövgren", "Lovelace-Byron"]
    assert len(found({"gender": "http://hl7.org/fhir/administrative-gender|"})) == len(PATIENTS)  # any code
    assert found({"gender": "|male"}) == []                                  # no system: a gender has one


@pytest.mark.parametrize("query", [{"gender": "f"}, {"gender": "urn:x|female"}, {"_id": f"{SYSTEM}|{1:024x}"},
                                   {"_id": "not an id"}, {"identifier": "a|b|c"}])
def test_a_token_that_cannot_be_read_is_refused(query):
    with pytest.raises(Refused):
        search(query)


# -- dates ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("query, expected", [
    ({"birthdate": "1985"}, ["Lövgren", "Lovelace-Byron"]),            # a year is the whole year
    ({"birthdate": "1985-12"}, ["Lövgren"]),
    ({"birthdate": "eq1985-12-31"}, ["Lövgren"]),
    ({"birthdate": "ne1985"}, ["Lovelace", "Zola", "Turing", "Hopper"]),
    ({"birthdate": "lt1900"}, ["Lovelace", "Zola"]),
    ({"birthdate": "gt1912-06-22"}, ["Turing", "Lövgren", "Lovelace-Byron"]),
    ({"birthdate": "gt1912-06-23"}, ["Lövgren", "Lovelace-Byron"]),     # not after itself
    ({"birthdate": "ge1912-06-23"}, ["Turing", "Lövgren", "Lovelace-Byron"]),
    ({"birthdate": "le1840-04-02"}, ["Lovelace", "Zola"]),
    ({"birthdate": "sa1906"}, ["Turing", "Lövgren", "Lovelace-Byron"]),  # starts after 1906 ends
    ({"birthdate": "eb1906"}, ["Lovelace", "Zola"]),
    ({"birthdate": "ge1900", "_sort": "birthdate"}, ["Hopper", "Turing", "Lovelace-Byron", "Lövgren"]),
    ({"birthdate": ["ge1900", "lt1950"]}, ["Turing", "Hopper"]),       # repeated: AND
    ({"birthdate": "lt1820,gt1985-06"}, ["Lovelace", "Lövgren"]),       # comma: OR
    ({"_lastUpdated": "gt2026-11-26"}, ["Hopper"]),
    ({"_lastUpdated": "2026-11-26"}, ["Turing"]),
    ({"_lastUpdated": "ge2026-11-27T00:00:00Z"}, ["Hopper"]),
    ({"_lastUpdated": "lt2026-11-27T01:00:00+01:00"}, ["Lovelace", "Zola", "Turing", "Lövgren",
                                                        "Lovelace-Byron"]),  # = 00:00Z: Hopper's own instant
])
def test_date_parameters_and_prefixes(query, expected):
    assert found(query) == expected


def test_ap_widens_the_range_by_a_tenth_of_its_distance_from_now():
    # 1985 is 41 years before NOW: about 4.1 years either side.
    assert found({"birthdate": "ap1981"}) == ["Lövgren", "Lovelace-Byron"]
    assert found({"birthdate": "ap1980"}) == ["Lovelace-Byron"]         # 1985-01-01 is just within
    assert found({"birthdate": "ap1979"}) == []


def test_a_date_is_the_range_its_precision_names():
    day = 86_400_000_000
    start, end = date_range("2024-02")
    assert end - start == 29 * day                                       # a leap February
    start, end = date_range("2023")
    assert end - start == 365 * day
    start, end = date_range("1985-12-10T09:30+01:00")
    assert end - start == 60_000_000 and start == date_range("1985-12-10T08:30Z")[0]
    start, end = date_range("1985-12-10T09:30:15.25Z")
    assert end - start == 10_000                                         # two decimals: a hundredth
    assert date_range("9999-12-31")[1] - date_range("0001")[0] > 0      # no overflow at either end


@pytest.mark.parametrize("text", ["2021-02-29", "1985-13", "0000", "85", "1985-1-1", "1985-12-10T24:00Z",
                                  "1985-12-10T10:00:60Z", "ge", "xx1985", "1985-12-10 10:00",
                                  "1985-12-10T10:00+14:30", "١٩٨٥"])
def test_a_date_that_does_not_exist_or_cannot_be_read_is_refused(text):
    with pytest.raises(Refused):
        search({"birthdate": text})


# -- refusals and Prefer: handling=lenient ---------------------------------------------------------------

@pytest.mark.parametrize("query, named", [
    ({"address": "London"}, "address"),
    ({"family:missing": "true"}, ":missing"),
    ({"gender:not": "male"}, ":not"),
    ({"_sort": "address"}, "address"),
    ({"_summary": "true"}, "_summary"),
    ({"_format": "xml"}, "_format"),
    ({"_include": "Patient:organization"}, "_include"),
])
def test_what_is_not_supported_is_refused_naming_it(query, named):
    with pytest.raises(Unsupported) as refused:
        search(query)
    assert named in str(refused.value) and refused.value.issue == "not-supported"


def test_lenient_handling_leaves_out_what_it_does_not_know_and_the_self_link_says_so():
    parsed = search({"family": "lov", "address": "London", "_sort": "-birthdate",
                     "_format": "application/fhir+json", "_pretty": "true"}, lenient=True)
    assert parsed.applied() == [("family", "lov"), ("_sort", "-birthdate"), ("_format", "application/fhir+json"),
                                ("_count", "20")]
    assert [p["lastName"] for p in sorted(filter(parsed.matches, PATIENTS), key=parsed.key)] == [
        "Lövgren", "Lovelace-Byron", "Lovelace"]


@pytest.mark.parametrize("query", [{"birthdate": "2021-02-29"}, {"_sort": "address"}, {"_summary": "true"},
                                   {"_total": "maybe"}, {"_format": "xml"}, {"_pretty": "yes"},
                                   {"family:missing": "false"}, {"gender:not": "male"}, {"_count:x": "1"}])
def test_lenient_handling_still_refuses_what_would_widen_the_search(query):
    # A wrong value or an unknown modifier of a parameter the server knows: leaving it
    # out would answer patients that were not asked for.
    with pytest.raises(Refused):
        search(query, lenient=True)


@pytest.mark.parametrize("name", ["_count", "_sort", "_total", "_summary", "cursor", "_format", "_pretty"])
def test_a_control_parameter_given_twice_is_refused(name):
    with pytest.raises(Refused):
        search({name: ["1", "2"]})


# -- order and paging -------------------------------------------------------------------------------

def test_sort_keys_in_both_directions_with_ties_by_id():
    assert found({"_sort": "family"}) == ["Hopper", "Lovelace", "Lovelace-Byron", "Lövgren", "Turing", "Zola"]
    # Descending given names (ł sorts after z; Émile as emile), the two Adas by family.
    assert found({"_sort": "-given,family"}) == ["Lövgren", "Hopper", "Zola", "Turing", "Lovelace",
                                                 "Lovelace-Byron"]
    assert found({"_sort": "-_lastUpdated"})[:3] == ["Hopper", "Turing", "Zola"]


def test_a_sorted_cursor_resumes_after_the_last_entry_even_if_a_patient_is_added_before_it():
    parsed = search({"_sort": "-birthdate", "_count": "2"})
    ordered = sorted(PATIENTS, key=parsed.key)
    cursor = parsed.cursor_after(ordered[1])
    resumed = search({"_sort": "-birthdate", "_count": "2", "cursor": cursor})
    newcomer = patient(7, "Nova", "Newborn", "2026-01-01")        # sorts first: before the cursor
    rest = [p for p in sorted([*PATIENTS, newcomer], key=resumed.key) if resumed.past_cursor(p)]
    assert rest == ordered[2:]


@pytest.mark.parametrize("query", [
    {"cursor": "not-a-cursor"},
    {"_sort": "family", "cursor": f"{1:024x}"},                      # an id where a sort position belongs
    {"_sort": "family", "cursor": "WyJhIl0"},                         # ["a"]: no id
    {"_sort": "family", "cursor": "W!yJhIl0"},                        # a character base64url lacks
    {"_sort": "family,given", "cursor": "WyJhIiwgIjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMSJd"},  # one sort value short
])
def test_a_cursor_that_is_not_from_a_next_link_of_this_search_is_refused(query):
    with pytest.raises(Refused):
        search(query)


def test_a_since_instant_needs_seconds_and_a_zone_and_is_cut_to_the_millisecond():
    assert instant("2026-01-31T09:30:00.123456+01:00") == "2026-01-31T08:30:00.123Z"
    assert instant("0001-01-01T00:00:00+14:00") == "0001-01-01T00:00:00.000Z"  # before year 1 in UTC: year 1
    assert instant("9999-12-31T23:59:59.999-14:00") == "9999-12-31T23:59:59.999Z"
    for text in ("2026-01-31", "2026-01-31T09:30Z", "2026-01-31T09:30:00", "2026-02-30T00:00:00Z"):
        with pytest.raises(Refused):
            instant(text)


def test_count_is_capped_at_the_page_limit_and_summary_and_total_are_read():
    parsed = search({"_count": "5000", "_summary": "count", "_total": "estimate"})
    assert (parsed.count, parsed.summary_count, parsed.total) == (100, True, "estimate")
    assert parsed.applied() == [("_total", "estimate"), ("_summary", "count"), ("_count", "100")]


def test_the_link_keeps_fhir_punctuation_and_escapes_the_rest():
    url = fhir_search.link("http://h/fhir/Patient", [("family:exact", "O'Brien & Co"), ("gender", "a|b,c")])
    assert url == "http://h/fhir/Patient?family:exact=O%27Brien%20%26%20Co&gender=a|b,c"
