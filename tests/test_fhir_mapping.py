"""The mapping from MediTrack's records to FHIR R4 resources, element by element
(handlers/fhir_mapping.py), and the export's streaming (handlers/fhir.py): pure
functions, tested without a server."""

from handlers import fhir_mapping
from handlers.fhir import export_lines

BASE = "http://meditrack.test"
SYSTEM = "urn:meditrack:patient-id"
STORED = {"id": "65f1c2a9b4d3e8f7a6b5c4d3", "ownerId": "65f1c2a9b4d3e8f7a6b5c4d0", "firstName": "Ada",
          "lastName": "Lovelace", "dateOfBirth": "1815-12-10", "gender": "female", "email": "ada@example.org",
          "phone": "+44 20 7946 0018", "address": {"line": "12 St James's Square", "city": "London",
                                                   "state": "Westminster", "postalCode": "SW1Y 4JH", "country": "GB"},
          "bloodType": "O-", "allergies": ["penicillin", "latex"], "notes": "Prefers mornings.",
          "reports": [], "version": 3, "createdAt": "2026-11-24T10:00:00.000Z", "updatedAt": "2026-11-24T11:02:00.000Z"}
MINIMAL = {**STORED, "gender": "unknown", "email": None, "phone": None, "address": None, "bloodType": None,
           "allergies": [], "notes": None}
REPORT = {"id": "65f1c3b0e2a1d4c5b6a7f8e9", "filename": "panel <1>.pdf", "contentType": "application/pdf", "size": 11,
          "sha256": "0" * 64, "sha1": "2jmj7l5rSw0yVb/vlWAYkK/YBwk=", "description": "Blood panel",
          "uploadedAt": "2026-11-24T11:02:00.000Z"}


def patient(stored=STORED) -> dict:
    return fhir_mapping.patient_resource(stored, BASE, identifier_system=SYSTEM)


def test_id_and_meta_carry_the_id_the_version_and_the_last_update():
    resource = patient()
    assert (resource["resourceType"], resource["id"]) == ("Patient", STORED["id"])
    assert resource["meta"] == {"versionId": "3", "lastUpdated": "2026-11-24T11:02:00.000Z"}


def test_the_names_are_name_family_and_given():
    assert patient()["name"] == [{"use": "official", "family": "Lovelace", "given": ["Ada"]}]


def test_birth_date_and_gender_keep_their_values():
    assert (patient()["birthDate"], patient()["gender"]) == ("1815-12-10", "female")
    assert patient(MINIMAL)["gender"] == "unknown"


def test_phone_and_email_are_telecom_entries():
    assert patient()["telecom"] == [{"system": "phone", "value": "+44 20 7946 0018"},
                                    {"system": "email", "value": "ada@example.org"}]
    assert patient({**MINIMAL, "email": "ada@example.org"})["telecom"] == [{"system": "email", "value": "ada@example.org"}]


def test_the_address_line_becomes_a_list_of_one():
    assert patient()["address"] == [{"line": ["12 St James's Square"], "city": "London", "state": "Westminster",
                                      "postalCode": "SW1Y 4JH", "country": "GB"}]
    assert patient({**MINIMAL, "address": {"city": "London"}})["address"] == [{"city": "London"}]


def test_blood_type_allergies_and_notes_are_extensions_under_the_servers_base():
    assert patient()["extension"] == [
        {"url": f"{BASE}/fhir/StructureDefinition/blood-type", "valueString": "O-"},
        {"url": f"{BASE}/fhir/StructureDefinition/allergy", "valueString": "penicillin"},
        {"url": f"{BASE}/fhir/StructureDefinition/allergy", "valueString": "latex"},
        {"url": f"{BASE}/fhir/StructureDefinition/notes", "valueString": "Prefers mornings."}]


def test_what_was_not_given_is_left_out_never_empty():
    # ele-1: a FHIR element has a value or children; an empty string is no value.
    resource = patient({**MINIMAL, "address": {"line": "", "city": ""}, "notes": ""})
    assert not {"telecom", "address", "extension"} & set(resource)


def test_the_narrative_is_escaped_xhtml():
    resource = patient({**STORED, "firstName": "<b>Ada</b>"})
    assert resource["text"]["status"] == "generated"
    assert resource["text"]["div"] == ('<div xmlns="http://www.w3.org/1999/xhtml"><p>&lt;b&gt;Ada&lt;/b&gt; Lovelace, '
                                       'born 1815-12-10</p></div>')


def test_a_report_is_a_current_document_reference_pointing_at_its_download():
    document = fhir_mapping.document_reference(STORED["id"], REPORT, BASE)
    assert (document["resourceType"], document["id"], document["status"]) == ("DocumentReference", REPORT["id"], "current")
    assert document["subject"] == {"reference": f"Patient/{STORED['id']}"}
    assert (document["date"], document["description"]) == (REPORT["uploadedAt"], "Blood panel")
    assert document["content"] == [{"attachment": {
        "contentType": "application/pdf", "url": f"{BASE}/patients/{STORED['id']}/reports/{REPORT['id']}",
        "size": 11, "hash": REPORT["sha1"], "title": "panel <1>.pdf", "creation": REPORT["uploadedAt"]}}]
    assert "&lt;1&gt;" in document["text"]["div"]


def test_a_report_without_description_or_sha1_leaves_them_out():
    document = fhir_mapping.document_reference(STORED["id"], {**REPORT, "description": None, "sha1": None}, BASE)
    assert "description" not in document and "hash" not in document["content"][0]["attachment"]


def test_a_bundle_counts_total_links_pages_and_gives_absolute_full_urls():
    resources = fhir_mapping.patient_with_documents({**STORED, "reports": [REPORT]}, BASE, identifier_system=SYSTEM)
    bundle = fhir_mapping.bundle(resources, BASE, total=7, links={"self": f"{BASE}/fhir/Patient", "next": "n"})
    assert (bundle["type"], bundle["total"]) == ("searchset", 7)
    assert bundle["link"] == [{"relation": "self", "url": f"{BASE}/fhir/Patient"}, {"relation": "next", "url": "n"}]
    assert [entry["fullUrl"] for entry in bundle["entry"]] == [
        f"{BASE}/fhir/Patient/{STORED['id']}", f"{BASE}/fhir/DocumentReference/{REPORT['id']}"]
    assert all(entry["search"] == {"mode": "match"} for entry in bundle["entry"])


def test_an_operation_outcome_names_the_kind_of_error():
    outcome = fhir_mapping.operation_outcome(404, "no patient with this id")
    assert outcome["issue"] == [{"severity": "error", "code": "not-found", "diagnostics": "no patient with this id"}]
    assert fhir_mapping.operation_outcome(500, "x")["issue"][0]["code"] == "exception"


class PagedStore:
    """A store that counts the pages an export asks it for."""

    def __init__(self, patients: int):
        self.patients = [{**MINIMAL, "id": f"{n:024x}"} for n in range(patients)]
        self.pages_read = 0

    def list_patients(self, owner_id, *, limit, after=None):
        self.pages_read += 1
        later = [p for p in self.patients if after is None or p["id"] > after]
        return later[:limit]


class Records:
    def __init__(self, store):
        self.store = store


def test_the_export_sends_its_first_page_before_reading_the_next():
    store = PagedStore(250)
    lines = export_lines(Records(store), "owner", BASE, SYSTEM)
    first = next(lines)
    assert store.pages_read == 1 and first.count(b"\n") == 100
    assert sum(chunk.count(b"\n") for chunk in lines) == 150 and store.pages_read == 3
