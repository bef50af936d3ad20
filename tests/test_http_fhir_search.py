"""HTTP tests for what FHIR clients start with and look for, on every store: the
CapabilityStatement, Patient search through the server (refusals, lenient handling,
paging while patients are added, never another user's patient), a patient's history
and its versions, and DocumentReference search.

Which patient each parameter matches is tests/test_fhir_search.py's; here, the routes."""

import json
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path


from handlers.fhir_search import PATIENT_PARAMETERS, SORT_KEYS
from tests.support.uploads import PNG, pdf_of_size
from tests.test_http_fhir import FHIR_JSON, assert_outcome, upload

ADA = {"firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1815-12-10", "gender": "female"}
EMILE = {"firstName": "Émile", "lastName": "Zola", "dateOfBirth": "1840-04-02", "gender": "male"}


def bundle_of(response) -> dict:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == FHIR_JSON
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle"
    return bundle


def ids_in(bundle: dict) -> list[str]:
    return [entry["resource"]["id"] for entry in bundle.get("entry", [])]


def links_of(bundle: dict) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}


def follow(client, url: str) -> list[dict]:
    """Every page of a search, from its first URL along the next links."""
    pages = []
    while url:
        pages.append(bundle_of(client.session.get(url, timeout=10)))
        url = links_of(pages[-1]).get("next")
    return pages


# -- metadata ----------------------------------------------------------------------------------------

def test_metadata_needs_no_token_and_lists_exactly_what_is_built(anonymous):
    response = anonymous.get("/fhir/metadata")
    assert response.status_code == 200 and response.headers["Content-Type"] == FHIR_JSON
    statement = response.json()
    assert (statement["resourceType"], statement["kind"], statement["fhirVersion"], statement["format"]) == (
        "CapabilityStatement", "instance", "4.0.1", ["json"])
    assert statement["implementation"]["url"] == anonymous.url + "/fhir"
    rest = statement["rest"][0]
    assert rest["mode"] == "server" and "Bearer" in rest["security"]["description"]
    resources = {resource["type"]: resource for resource in rest["resource"]}
    assert set(resources) == {"Patient", "DocumentReference"}
    patient = resources["Patient"]
    assert [i["code"] for i in patient["interaction"]] == ["read", "vread", "search-type", "history-instance"]
    assert {(p["name"], p["type"]) for p in patient["searchParam"]} == {
        (name, kind) for name, (kind, _) in PATIENT_PARAMETERS.items()}
    assert [o["name"] for o in patient["operation"]] == ["everything", "export"]
    spec = json.loads((Path(__file__).resolve().parent.parent / "openapi.json").read_text(encoding="utf-8"))
    assert statement["software"]["version"] == spec["info"]["version"]
    assert [o["name"] for o in rest["operation"]] == ["export"]
    assert all(key in patient["documentation"] for key in SORT_KEYS)
    assert [i["code"] for i in resources["DocumentReference"]["interaction"]] == ["read", "search-type"]


# -- Patient search ----------------------------------------------------------------------------------

def test_a_name_that_matches_nothing_is_an_empty_bundle_never_another_patient(client):
    client.post("/patients", json=ADA)
    bundle = bundle_of(client.get("/fhir/Patient?family=Zzz"))
    assert bundle["total"] == 0 and "entry" not in bundle
    assert links_of(bundle)["self"].endswith("/fhir/Patient?family=Zzz&_count=20")


def test_a_search_finds_the_patient_asked_for_and_says_what_it_applied(client):
    ada = client.post("/patients", json=ADA).json()
    client.post("/patients", json=EMILE)
    bundle = bundle_of(client.get("/fhir/Patient", params={"given": "ADA", "birthdate": "lt1900"}))
    assert ids_in(bundle) == [ada["id"]] and bundle["total"] == 1
    assert links_of(bundle)["self"].endswith("?given=ADA&birthdate=lt1900&_count=20")
    resource = bundle["entry"][0]["resource"]
    assert resource["identifier"] == [{"system": "urn:meditrack:patient-id", "value": ada["id"]}]
    assert ids_in(bundle_of(client.get("/fhir/Patient", params={"identifier": resource["identifier"][0]["system"]
                                                                 + "|" + ada["id"]}))) == [ada["id"]]


def test_an_unsupported_parameter_is_400_naming_it_unless_the_client_prefers_lenient(client):
    ada = client.post("/patients", json=ADA).json()
    outcome = assert_outcome(client.get("/fhir/Patient?family=lov&address-city=Paris"), 400, "not-supported")
    assert "address-city" in outcome["issue"][0]["diagnostics"]
    assert_outcome(client.get("/fhir/Patient?family:missing=true"), 400, "not-supported")
    bundle = bundle_of(client.get("/fhir/Patient?family=lov&address-city=Paris",
                                  headers={"Prefer": "return=minimal, handling=lenient"}))
    assert ids_in(bundle) == [ada["id"]]
    assert links_of(bundle)["self"].endswith("/fhir/Patient?family=lov&_count=20")  # only what was applied


def test_an_empty_alternative_is_400_never_everyone(client):
    client.post("/patients", json=ADA)
    for query in ("family=zzz,", "family=%5C", "identifier=,", "name=a,,b"):
        assert_outcome(client.get(f"/fhir/Patient?{query}"), 400, "invalid")


def test_a_value_that_cannot_be_read_is_400_invalid(client):
    assert_outcome(client.get("/fhir/Patient?birthdate=2021-02-29"), 400, "invalid")
    assert_outcome(client.get("/fhir/Patient?gender=f"), 400, "invalid")
    assert_outcome(client.get("/fhir/Patient?_sort=family&cursor=abc"), 400, "invalid")


def test_another_users_patient_is_never_found_whatever_is_asked(client, other_client):
    theirs = other_client.post("/patients", json=ADA).json()
    for query in ({"_id": theirs["id"]}, {"identifier": theirs["id"]}, {"family": "Lovelace"}, {}):
        assert "entry" not in bundle_of(client.get("/fhir/Patient", params=query)), query


def test_sorted_paging_sees_each_patient_once_while_patients_are_added(client):
    born = ["1990-01-01", "1950-06-15", "2001-03-03", "1970-07-07", "1930-12-12", "1985-05-05", "1960-02-02"]
    created = {client.post("/patients", json={**ADA, "dateOfBirth": day}).json()["id"]: day for day in born}
    seen, url = [], client.url + "/fhir/Patient?_sort=-birthdate&_count=2"
    while url:
        bundle = bundle_of(client.session.get(url, timeout=10))
        seen += ids_in(bundle)
        url = links_of(bundle).get("next")
        # One patient younger than everyone (it sorts before every cursor), one older (after).
        client.post("/patients", json={**ADA, "dateOfBirth": "2020-01-01"})
        client.post("/patients", json={**ADA, "dateOfBirth": "1900-01-01"})
    originals = [pid for pid in seen if pid in created]
    assert originals == sorted(created, key=lambda pid: created[pid], reverse=True)  # each once, in order
    assert len(seen) == len(set(seen))


def test_a_sorted_cursor_over_long_names_still_pages(client):
    long = {**ADA, "firstName": "A" * 100, "lastName": "L" * 100}
    for _ in range(3):
        client.post("/patients", json=long)
    pages = follow(client, f"{client.url}/fhir/Patient?_sort=family,given,-_lastUpdated,birthdate&_count=1")
    assert [len(page["entry"]) for page in pages] == [1, 1, 1]


def test_summary_count_and_total_none(client):
    for _ in range(3):
        client.post("/patients", json=ADA)
    counted = bundle_of(client.get("/fhir/Patient?family=lov&_summary=count"))
    assert counted["total"] == 3 and "entry" not in counted and "next" not in links_of(counted)
    assert bundle_of(client.get("/fhir/Patient?_summary=count&_total=none"))["total"] == 3  # the count is the answer
    untotalled = bundle_of(client.get("/fhir/Patient?_total=none&_count=1"))
    assert "total" not in untotalled and len(untotalled["entry"]) == 1 and "next" in links_of(untotalled)


# -- history -----------------------------------------------------------------------------------------

def test_history_is_every_version_newest_first_paged_and_each_reads_back(client):
    created = client.post("/patients", json=ADA).json()
    client.request("PATCH", f"/patients/{created['id']}", json={"notes": "first visit"},
                 headers={"Content-Type": "application/merge-patch+json"})
    client.request("PATCH", f"/patients/{created['id']}", json={"lastName": "King"},
                 headers={"Content-Type": "application/merge-patch+json"})
    pages = follow(client, f"{client.url}/fhir/Patient/{created['id']}/_history?_count=2")
    assert [len(page["entry"]) for page in pages] == [2, 1]
    entries = [entry for page in pages for entry in page["entry"]]
    assert all((page["type"], page["total"]) == ("history", 3) for page in pages)
    assert [entry["resource"]["meta"]["versionId"] for entry in entries] == ["3", "2", "1"]
    assert [entry["resource"]["name"][0]["family"] for entry in entries] == ["King", "Lovelace", "Lovelace"]
    assert [(e["request"]["method"], e["response"]["status"], e["response"]["etag"]) for e in entries] == [
        ("PUT", "200", 'W/"3"'), ("PUT", "200", 'W/"2"'), ("POST", "201", 'W/"1"')]
    for entry in entries:
        version = entry["resource"]["meta"]["versionId"]
        response = client.get(f"/fhir/Patient/{created['id']}/_history/{version}")
        assert response.status_code == 200 and response.headers["ETag"] == f'W/"{version}"'
        assert response.json() == entry["resource"]
        assert parsedate_to_datetime(response.headers["Last-Modified"]) == datetime.fromisoformat(
            entry["response"]["lastModified"].replace("Z", "+00:00")).replace(microsecond=0)


def test_history_of_a_missing_foreign_or_deleted_patient_and_a_version_it_never_had(client, other_client):
    theirs = other_client.post("/patients", json=ADA).json()
    assert_outcome(client.get(f"/fhir/Patient/{theirs['id']}/_history"), 403, "forbidden")
    assert_outcome(client.get(f"/fhir/Patient/{theirs['id']}/_history/1"), 403, "forbidden")
    mine = client.post("/patients", json=ADA).json()
    assert_outcome(client.get(f"/fhir/Patient/{mine['id']}/_history/2"), 404, "not-found")
    assert_outcome(client.get(f"/fhir/Patient/{mine['id']}/_history/0"), 400, "invalid")
    client.delete(f"/patients/{mine['id']}")
    assert_outcome(client.get(f"/fhir/Patient/{mine['id']}/_history"), 404, "not-found")
    assert_outcome(client.get(f"/fhir/Patient/{mine['id']}/_history/1"), 404, "not-found")


# -- DocumentReference search --------------------------------------------------------------------------

def test_document_references_of_a_patient_by_each_form_of_reference(client, other_client):
    ada, emile = client.post("/patients", json=ADA).json(), client.post("/patients", json=EMILE).json()
    reports = [upload(client, ada, PNG, "x-ray.png", "image/png")["id"],
               upload(client, ada, pdf_of_size(2000), "labs.pdf", "application/pdf")["id"]]
    upload(client, emile, PNG, "scan.png", "image/png")
    for query in (f"patient={ada['id']}", f"subject=Patient/{ada['id']}",
                  f"patient={client.url}/fhir/Patient/{ada['id']}"):
        bundle = bundle_of(client.get(f"/fhir/DocumentReference?{query}"))
        assert ids_in(bundle) == sorted(reports) and bundle["total"] == 2, query
    assert bundle_of(client.get("/fhir/DocumentReference"))["total"] == 3          # all the caller's
    foreign = bundle_of(client.get(f"/fhir/DocumentReference?patient=https://elsewhere.example/fhir/Patient/"
                                   f"{ada['id']}"))
    assert "entry" not in foreign                                                   # another server's patient
    assert "entry" not in bundle_of(other_client.get(f"/fhir/DocumentReference?patient={ada['id']}"))
    pages = follow(client, f"{client.url}/fhir/DocumentReference?_count=2")
    assert sum(len(page.get("entry", [])) for page in pages) == 3 and len(pages) == 2
    assert_outcome(client.get("/fhir/DocumentReference?patient=Observation/1"), 400, "invalid")
    assert_outcome(client.get("/fhir/DocumentReference?status=current"), 400, "not-supported")
    lenient = {"Prefer": "handling=lenient"}
    # A modifier on patient would widen the search if left out: refused even when lenient.
    assert_outcome(client.get(f"/fhir/DocumentReference?patient:Patient={ada['id']}", headers=lenient),
                   400, "not-supported")
    assert_outcome(client.get(f"/fhir/DocumentReference?patient={ada['id']},"), 400, "invalid")
    assert_outcome(client.get("/fhir/DocumentReference?_format=json&_format=json"), 400, "invalid")
    formatted = bundle_of(client.get(f"/fhir/DocumentReference?patient={ada['id']}&_format=json"))
    assert links_of(formatted)["self"].endswith(f"?patient={ada['id']}&_format=json&_count=20")
