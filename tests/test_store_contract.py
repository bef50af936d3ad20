"""The Store contract (storage/base.py): one suite that every store implementation must pass.

Every test talks to the interface only: plain dicts in, plain dicts out, the project's
own errors. Add a store by adding its name to the `store_kind` fixture's params and a
branch to `open_test_store` (tests/support/stores.py); nothing else here may know which
database is underneath.
"""

import hashlib
import random
from datetime import datetime, timezone

import pytest

from storage.base import base64_sha1, utc_timestamp
from storage.errors import Conflict, NotFound
from storage.ids import is_object_id, new_id
from tests.support.clock import FakeClock
from tests.support.concurrency import race
from tests.support.records import PATIENT, REPORT_METADATA, write_report
from tests.support.stores import START, forget_report_sha1, reopen


FULL_PATIENT = {
    "firstName": "Zoë",
    "lastName": "Ñúñez-李 🩺",
    "dateOfBirth": "1990-02-28",
    "gender": "female",
    "email": "zoe@example.org",
    "phone": "+44 (0)20 7946-0000",
    "address": {"line": "1 Rue de l'Église", "city": "Zürich", "state": "ZH",
                "postalCode": "8001", "country": "CH"},
    "bloodType": "AB-",
    "allergies": ["pénicilline", "peanuts", "ласточка"],
    "notes": "Line one\nLine two \"quoted\" \\ back-slash\ttab",
}

STORE_KEYS = {"id", "ownerId", "reports", "version", "createdAt", "updatedAt"}


@pytest.fixture
def owner(store) -> dict:
    return store.create_user("owner", b"$2b$04$hash-of-owner")


@pytest.fixture
def other_owner(store) -> dict:
    return store.create_user("someone-else", b"$2b$04$hash-of-someone-else")


def input_fields(patient: dict) -> dict:
    """The PatientInput part of a stored patient: everything the store did not add."""
    return {key: value for key, value in patient.items() if key not in STORE_KEYS}


def unknown_id() -> str:
    return new_id()


# --- users ----------------------------------------------------------------------------


def test_create_user_returns_id_username_and_created_at(store, clock):
    user = store.create_user("Ada.L", b"hash")
    assert set(user) == {"id", "username", "createdAt"}
    assert is_object_id(user["id"])
    assert user["username"] == "Ada.L"
    assert user["createdAt"] == utc_timestamp(clock())


def test_find_user_returns_the_user_with_its_password_hash(store):
    hash_bytes = b"$2b$04$" + bytes(range(256))
    created = store.create_user("ada", hash_bytes)
    found = store.find_user("ada")
    assert found == {**created, "passwordHash": hash_bytes}
    assert type(found["passwordHash"]) is bytes


@pytest.mark.parametrize("asked", ["ADA_L", "ada_l", "Ada_L", "aDa_l"])
def test_find_user_ignores_case(store, asked):
    created = store.create_user("Ada_L", b"hash")
    assert store.find_user(asked)["id"] == created["id"]
    assert store.find_user(asked)["username"] == "Ada_L"   # stored as registered


def test_find_user_of_an_unknown_name_is_none(store):
    store.create_user("ada", b"hash")
    assert store.find_user("grace") is None
    assert store.find_user("ad") is None
    assert store.find_user("ada2") is None


@pytest.mark.parametrize("pattern", ["%", "a%", "_da", "a.a", ".*", "^ada$"])
def test_find_user_treats_the_name_literally(store, pattern):
    store.create_user("ada", b"hash")
    assert store.find_user(pattern) is None


@pytest.mark.parametrize("second", ["ada", "ADA", "Ada", "aDa"])
def test_usernames_are_unique_ignoring_case(store, second):
    store.create_user("Ada", b"first")
    with pytest.raises(Conflict):
        store.create_user(second, b"second")
    assert store.find_user("ada")["passwordHash"] == b"first"


def test_different_usernames_do_not_conflict(store):
    first, second = store.create_user("ada", b"h"), store.create_user("ada2", b"h")
    assert first["id"] != second["id"]


# --- patients: one record ---------------------------------------------------------------


@pytest.mark.parametrize("fields", [PATIENT, FULL_PATIENT], ids=["minimal", "every-field"])
def test_create_patient_round_trip_preserves_the_fields_exactly(store, owner, clock, fields):
    created = store.create_patient(owner["id"], fields)
    assert is_object_id(created["id"])
    assert created["ownerId"] == owner["id"]
    assert created["reports"] == []
    assert created["createdAt"] == created["updatedAt"] == utc_timestamp(clock())
    assert input_fields(created) == fields
    fetched = store.get_patient(created["id"])
    assert fetched == created
    assert input_fields(fetched) == fields


def test_create_patient_does_not_keep_a_reference_to_the_callers_dict(store, owner):
    fields = {**FULL_PATIENT, "allergies": list(FULL_PATIENT["allergies"])}
    created = store.create_patient(owner["id"], fields)
    fields["allergies"].append("added later")
    fields["firstName"] = "changed"
    assert input_fields(store.get_patient(created["id"])) == FULL_PATIENT


def test_each_patient_gets_its_own_id(store, owner):
    ids = {store.create_patient(owner["id"], PATIENT)["id"] for _ in range(5)}
    assert len(ids) == 5


def test_replace_patient_replaces_every_field(store, owner):
    created = store.create_patient(owner["id"], FULL_PATIENT)
    replaced = store.replace_patient(created["id"], PATIENT)
    assert input_fields(replaced) == PATIENT          # fields absent from the new input are gone
    assert replaced["id"] == created["id"] and replaced["ownerId"] == owner["id"]
    assert store.get_patient(created["id"]) == replaced


def test_replace_keeps_created_at_and_moves_updated_at(store, owner, clock):
    created = store.create_patient(owner["id"], PATIENT)
    clock.advance(90.5)
    replaced = store.replace_patient(created["id"], {**PATIENT, "notes": "seen again"})
    assert replaced["createdAt"] == created["createdAt"] == utc_timestamp(START)
    assert replaced["updatedAt"] == utc_timestamp(START + 90.5)
    assert store.get_patient(created["id"])["updatedAt"] == utc_timestamp(START + 90.5)


def test_delete_patient_removes_it(store, owner):
    kept = store.create_patient(owner["id"], PATIENT)
    deleted = store.create_patient(owner["id"], FULL_PATIENT)
    assert store.delete_patient(deleted["id"]) is None
    with pytest.raises(NotFound):
        store.get_patient(deleted["id"])
    assert store.get_patient(kept["id"]) == kept


def test_deleting_twice_is_not_found_the_second_time(store, owner):
    created = store.create_patient(owner["id"], PATIENT)
    store.delete_patient(created["id"])
    with pytest.raises(NotFound):
        store.delete_patient(created["id"])


def test_replacing_a_deleted_patient_is_not_found(store, owner):
    created = store.create_patient(owner["id"], PATIENT)
    store.delete_patient(created["id"])
    with pytest.raises(NotFound):
        store.replace_patient(created["id"], PATIENT)


@pytest.mark.parametrize("operation", [
    lambda store, patient_id: store.get_patient(patient_id),
    lambda store, patient_id: store.replace_patient(patient_id, PATIENT),
    lambda store, patient_id: store.delete_patient(patient_id),
], ids=["get", "replace", "delete"])
def test_unknown_patient_id_is_not_found(store, owner, operation):
    store.create_patient(owner["id"], PATIENT)
    with pytest.raises(NotFound):
        operation(store, unknown_id())


def test_a_users_id_is_not_a_patients_id(store, owner):
    with pytest.raises(NotFound):
        store.get_patient(owner["id"])


# --- patients: listing ----------------------------------------------------------------


def create_many(store, owner_id: str, count: int, clock: FakeClock | None = None) -> list[dict]:
    patients = []
    for number in range(count):
        patients.append(store.create_patient(owner_id, {**PATIENT, "firstName": f"Patient{number}"}))
        if clock is not None:
            clock.advance(1)
    return patients


def ids_of(patients: list[dict]) -> list[str]:
    return [patient["id"] for patient in patients]


def test_list_returns_only_the_owners_patients(store, owner, other_owner):
    mine = create_many(store, owner["id"], 3)
    theirs = create_many(store, other_owner["id"], 2)
    assert sorted(ids_of(store.list_patients(owner["id"], limit=100))) == sorted(ids_of(mine))
    assert sorted(ids_of(store.list_patients(other_owner["id"], limit=100))) == sorted(ids_of(theirs))


def test_list_of_an_owner_without_patients_is_empty(store, owner, other_owner):
    create_many(store, owner["id"], 2)
    assert store.list_patients(other_owner["id"], limit=100) == []


def test_list_returns_whole_patients(store, owner):
    created = store.create_patient(owner["id"], FULL_PATIENT)
    assert store.list_patients(owner["id"], limit=10) == [created]


def test_list_is_in_id_order(store, owner, clock):
    # The fake clock moves between creates and also stays put, so ids differ in
    # their time part for some and only in their counter part for others.
    patients = create_many(store, owner["id"], 4, clock) + create_many(store, owner["id"], 4)
    listed = ids_of(store.list_patients(owner["id"], limit=100))
    assert listed == sorted(ids_of(patients))


@pytest.mark.parametrize("limit", [1, 2, 5, 7, 8])
def test_list_returns_at_most_limit_patients_the_first_ones_in_id_order(store, owner, limit):
    patients = create_many(store, owner["id"], 7)
    listed = ids_of(store.list_patients(owner["id"], limit=limit))
    assert listed == sorted(ids_of(patients))[:limit]


@pytest.mark.parametrize("page_size", [1, 3, 4, 10, 11])
def test_after_cursor_pages_cover_every_patient_exactly_once(store, owner, other_owner, clock, page_size):
    patients = create_many(store, owner["id"], 5, clock) + create_many(store, owner["id"], 5)
    create_many(store, other_owner["id"], 3)
    seen, after, pages = [], None, 0
    while True:
        page = store.list_patients(owner["id"], limit=page_size, after=after)
        assert len(page) <= page_size
        if not page:
            break
        seen += ids_of(page)
        after = page[-1]["id"]
        pages += 1
        assert pages <= 10, "pagination does not end"
    assert seen == sorted(ids_of(patients))
    assert len(seen) == len(set(seen)) == 10


def test_after_the_last_id_there_is_nothing(store, owner):
    patients = create_many(store, owner["id"], 3)
    assert store.list_patients(owner["id"], limit=10, after=max(ids_of(patients))) == []


def test_after_a_deleted_id_continues_from_where_it_was(store, owner):
    patients = sorted(create_many(store, owner["id"], 4), key=lambda patient: patient["id"])
    store.delete_patient(patients[1]["id"])
    listed = store.list_patients(owner["id"], limit=10, after=patients[1]["id"])
    assert ids_of(listed) == ids_of(patients[2:])


# --- patients: name search ------------------------------------------------------------


def named(store, owner_id: str, first: str, last: str, **extra) -> str:
    return store.create_patient(owner_id, {**PATIENT, "firstName": first, "lastName": last, **extra})["id"]


def search(store, owner_id: str, text: str) -> set[str]:
    return set(ids_of(store.list_patients(owner_id, limit=100, name_contains=text)))


def test_name_search_matches_a_substring_of_the_first_or_the_last_name(store, owner):
    ada = named(store, owner["id"], "Ada", "Lovelace")
    grace = named(store, owner["id"], "Grace", "Hopper")
    alan = named(store, owner["id"], "Alan", "Turing")
    assert search(store, owner["id"], "love") == {ada}
    assert search(store, owner["id"], "ace") == {ada, grace}       # Lovelace, Grace
    assert search(store, owner["id"], "a") == {ada, grace, alan}
    assert search(store, owner["id"], "hop") == {grace}
    assert search(store, owner["id"], "xyz") == set()


def test_name_search_compares_case_folded_names(store, owner):
    ada = named(store, owner["id"], "ADA", "LoveLace")
    strauss = named(store, owner["id"], "Johann", "Strauß")
    sigma = named(store, owner["id"], "ΣΊΣΥΦΟΣ", "Ölçer")
    assert search(store, owner["id"], "ada") == {ada}
    assert search(store, owner["id"], "lovelace") == {ada}
    assert search(store, owner["id"], "strauss") == {strauss}         # "ß".casefold() == "ss"
    assert search(store, owner["id"], "σίσυφοσ") == {sigma}          # final sigma folds to σ
    assert search(store, owner["id"], "öl") == {sigma}


def test_name_search_does_not_span_first_and_last_name(store, owner):
    named(store, owner["id"], "Ada", "Lovelace")
    assert search(store, owner["id"], "adalove") == set()
    assert search(store, owner["id"], "ada love") == set()


def test_name_search_looks_at_names_only(store, owner):
    named(store, owner["id"], "Ada", "Lovelace", notes="hopper", email="hopper@example.org",
          address={"city": "Hopperton"})
    assert search(store, owner["id"], "hopper") == set()


def test_name_search_keeps_to_the_owners_patients(store, owner, other_owner):
    mine = named(store, owner["id"], "Ada", "Lovelace")
    named(store, other_owner["id"], "Ada", "Byron")
    assert search(store, owner["id"], "ada") == {mine}


def test_name_search_combines_with_limit_and_after(store, owner):
    matching = sorted(named(store, owner["id"], f"Ada{number}", "Lovelace") for number in range(5))
    for number in range(5):
        named(store, owner["id"], f"Grace{number}", "Hopper")
    first = store.list_patients(owner["id"], limit=2, name_contains="ada")
    rest = store.list_patients(owner["id"], limit=10, after=first[-1]["id"], name_contains="ada")
    assert ids_of(first) + ids_of(rest) == matching


# Names that contain pattern characters, and decoys a pattern would match but text would not.
LITERAL_NAMES = {
    "percent": ("100%", "Sure"),
    "underscore": ("a_b", "Under"),
    "dot": ("x.y", "Dotty"),
    "star": ("Star*", "Light"),
    "backslash": ("Back\\slash", "Esc"),
    "brackets": ("[abc]", "Set"),
    "alternation": ("(x|y)", "Alt"),
    "anchors": ("^start$", "Anchor"),
    "plus": ("a+b", "Plus"),
    "question": ("why?", "Ask"),
    "braces": ("{2}", "Count"),
}
DECOYS = [("1000", "Surely"), ("axb", "Undo"), ("xzy", "Dot"), ("Starr", "Lightly"),
          ("Backslash", "Escape"), ("abc", "Settle"), ("x", "y"), ("start", "Anchors"),
          ("aab", "Plush"), ("why", "Asked"), ("aa", "Counted"), ("", "q")]


@pytest.mark.parametrize("text, expected_key", [
    ("%", "percent"),
    ("0%", "percent"),
    ("_", "underscore"),
    ("a_b", "underscore"),
    (".", "dot"),
    ("x.y", "dot"),
    ("*", "star"),
    ("r*", "star"),
    ("\\", "backslash"),
    ("k\\s", "backslash"),
    ("[abc]", "brackets"),
    ("(x|y)", "alternation"),
    ("x|y", "alternation"),
    ("^start$", "anchors"),
    ("^", "anchors"),
    ("$", "anchors"),
    ("a+b", "plus"),
    ("?", "question"),
    ("{2}", "braces"),
])
def test_name_search_treats_pattern_characters_literally(store, owner, text, expected_key):
    ids = {key: named(store, owner["id"], first, last) for key, (first, last) in LITERAL_NAMES.items()}
    for first, last in DECOYS:
        named(store, owner["id"], first or "Zed", last)
    assert search(store, owner["id"], text) == {ids[expected_key]}


@pytest.mark.parametrize("text", ["de la", "la c", "#1", "~&", " "])
def test_name_search_finds_spaces_and_punctuation_literally(store, owner, text):
    wanted = named(store, owner["id"], "María", "de la Cruz #1 ~&")
    named(store, owner["id"], "Dela", "Cruz")
    assert search(store, owner["id"], text) == {wanted}


@pytest.mark.parametrize("text", [".*", "%%", "_%", "a.b", "[a-z]", "\\w", "(?i)ada", "a{2}", ".+", "'"])
def test_name_search_with_a_pattern_that_no_name_contains_finds_nothing(store, owner, text):
    for first, last in [*LITERAL_NAMES.values(), *DECOYS]:
        named(store, owner["id"], first or "Zed", last)
    assert search(store, owner["id"], text) == set()


# --- lifecycle and concurrency --------------------------------------------------------


def test_ping_answers(store):
    assert store.ping() is None


def test_store_names_itself(store):
    assert store.name in ("sqlite", "mongodb")


def test_concurrent_creates_all_succeed_with_unique_ids(store, owner):
    threads, per_thread = 8, 25

    def create(index: int) -> list[str]:
        return [store.create_patient(owner["id"], {**PATIENT, "firstName": f"T{index}", "lastName": f"N{number}"})["id"]
                for number in range(per_thread)]

    created, errors = race(threads, create)
    assert errors == []
    every_id = [patient_id for batch in created for patient_id in batch]
    assert len(every_id) == len(set(every_id)) == threads * per_thread
    listed = store.list_patients(owner["id"], limit=threads * per_thread + 1)
    assert sorted(ids_of(listed)) == sorted(every_id)
    names = {(patient["firstName"], patient["lastName"]) for patient in listed}
    assert names == {(f"T{index}", f"N{number}") for index in range(threads) for number in range(per_thread)}


# --- reports --------------------------------------------------------------------------

def read_back(store, patient_id, report_id) -> tuple[dict, bytes]:
    report, chunks = store.open_report(patient_id, report_id)
    try:
        return report, b"".join(chunks)
    finally:
        chunks.close()


def test_a_committed_report_is_listed_on_its_patient_and_reads_back_byte_exact(store, owner, clock):
    patient = store.create_patient(owner["id"], PATIENT)
    data = bytes(range(256)) * 1000
    report = write_report(store, patient["id"], data)
    assert set(report) == {"id", "filename", "contentType", "size", "sha256", "sha1", "description", "uploadedAt"}
    assert report["uploadedAt"] == utc_timestamp(clock()) and report["size"] == len(data)
    assert store.get_patient(patient["id"])["reports"] == [report]
    assert read_back(store, patient["id"], report["id"]) == (report, data)


def test_reports_are_listed_in_id_order_with_their_patient_in_a_listing(store, owner):
    patient = store.create_patient(owner["id"], PATIENT)
    reports = [write_report(store, patient["id"], description=str(i)) for i in range(3)]
    listed = store.list_patients(owner["id"], limit=10)
    assert listed[0]["reports"] == sorted(reports, key=lambda report: report["id"])


def test_a_writer_left_without_commit_leaves_no_report(store, owner):
    patient = store.create_patient(owner["id"], PATIENT)
    with pytest.raises(RuntimeError):
        with store.report_writer() as writer:
            writer.write(b"%PDF-1.7 half an upload")
            raise RuntimeError("the client went away")
    assert store.get_patient(patient["id"])["reports"] == []
    with pytest.raises(NotFound):
        store.open_report(patient["id"], writer.report_id)


def test_commit_to_a_patient_deleted_meanwhile_is_not_found_and_leaves_no_report(store, owner):
    patient = store.create_patient(owner["id"], PATIENT)
    data = b"%PDF-1.7 bytes"
    with pytest.raises(NotFound):
        with store.report_writer() as writer:
            writer.write(data)
            store.delete_patient(patient["id"])
            writer.commit(patient["id"], {**REPORT_METADATA, "size": len(data),
                                          "sha256": hashlib.sha256(data).hexdigest()})
    with pytest.raises(NotFound):
        store.open_report(patient["id"], writer.report_id)
    assert writer.report_id not in store.stored_report_ids()  # the bytes went too


def test_a_report_is_found_only_under_its_own_patient(store, owner):
    first = store.create_patient(owner["id"], PATIENT)
    second = store.create_patient(owner["id"], PATIENT)
    report = write_report(store, first["id"])
    with pytest.raises(NotFound):
        store.open_report(second["id"], report["id"])
    with pytest.raises(NotFound):
        store.delete_report(second["id"], report["id"])
    assert read_back(store, first["id"], report["id"])[0] == report


def test_delete_report_removes_it_and_a_second_delete_is_not_found(store, owner):
    patient = store.create_patient(owner["id"], PATIENT)
    kept, deleted = write_report(store, patient["id"]), write_report(store, patient["id"])
    store.delete_report(patient["id"], deleted["id"])
    assert store.get_patient(patient["id"])["reports"] == [kept]
    with pytest.raises(NotFound):
        store.open_report(patient["id"], deleted["id"])
    with pytest.raises(NotFound):
        store.delete_report(patient["id"], deleted["id"])


# --- timestamps -------------------------------------------------------------------------

@pytest.mark.parametrize("seconds", [0.0, 0.0005, 0.9999995, 1.0, START, START + 0.0929997, START + 0.9999996,
                                     3282435263.5869994, 4102444799.999])
def test_utc_timestamp_matches_datetime_to_the_millisecond(seconds):
    # utc_timestamp keeps the formatted second for speed; it must round the fraction
    # exactly as datetime.fromtimestamp does, a second boundary included.
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert utc_timestamp(seconds) == expected


def test_utc_timestamp_matches_datetime_over_many_random_moments():
    rng = random.Random(7)
    for _ in range(20_000):
        seconds = rng.choice([rng.uniform(0, 4e9), START + rng.random() * 3, round(rng.uniform(0, 4e9), 6)])
        moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
        assert utc_timestamp(seconds) == moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_count_patients_counts_only_the_owners(store, owner):
    other = store.create_user("someone-else", b"hash")
    for _ in range(3):
        store.create_patient(owner["id"], PATIENT)
    store.create_patient(other["id"], PATIENT)
    assert (store.count_patients(owner["id"]), store.count_patients(other["id"])) == (3, 1)


def test_a_report_stored_without_its_sha1_gets_it_from_its_bytes_at_the_next_start(store, owner, clock):
    patient = store.create_patient(owner["id"], PATIENT)
    data = b"%PDF-1.7 " + random.randbytes(300_000)  # more than one GridFS chunk
    report = write_report(store, patient["id"], data)
    write_report(store, patient["id"], b"%PDF-1.7 another")  # a later version lists the first report too
    forget_report_sha1(store, report["id"])
    assert store.get_patient(patient["id"])["reports"][0].get("sha1") is None
    store = reopen(store, clock)
    try:
        assert store.get_patient(patient["id"])["reports"][0]["sha1"] == base64_sha1([data])
    finally:
        store.close()
