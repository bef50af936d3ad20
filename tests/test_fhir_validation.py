"""Every resource shape the FHIR view emits, checked by HAPI FHIR's validator against the
FHIR R4 base profiles: zero errors. Collected only under `make test-fhir`, which fetches
the validator (tests/hapi_validator.py) and names it in MEDITRACK_FHIR_VALIDATOR.

The shapes: a patient with every field set and one with only the required ones, a
report of each type (PDF, PNG, JPEG; with and without a description), $everything's
Bundle, a search Bundle with a next link and the last page without one, a sorted
search, a `_summary=count` Bundle, a history Bundle and a past version, a
DocumentReference search, the CapabilityStatement, every line of an export and of a
bulk export's files, and the
OperationOutcomes of a 400 (a value, and a parameter not supported), 401, 403 and 404. They are taken
from a live server, as a client receives them, and validated in one run of the
validator (its start-up, loading the R4 definitions, takes most of the time).
"""

import json
import os
import shlex
import subprocess
import time
from collections import Counter

from tests.support.api import ApiClient
from tests.support.records import PATIENT
from tests.support.uploads import JPEG, PNG, pdf_of_size

FULL = {**PATIENT, "gender": "female", "email": "ada@example.org", "phone": "+44 20 7946 0018",
        "address": {"line": "12 St James's Square", "city": "London", "state": "Westminster",
                    "postalCode": "SW1Y 4JH", "country": "GB"},
        "bloodType": "O-", "allergies": ["penicillin", "latex"], "notes": "Prefers morning appointments."}
VALIDATION_TIMEOUT = 600  # seconds: the validator's start-up is most of it


def emitted_resources(client: ApiClient, other_client: ApiClient, anonymous: ApiClient) -> dict[str, dict]:
    """Every shape the FHIR routes answer, by a name that says which it is."""
    full = client.post("/patients", json=FULL).json()
    minimal = client.post("/patients", json=PATIENT).json()
    uploads = [(pdf_of_size(4000), "panel.pdf", "Blood panel"), (PNG, "x-ray.png", None), (JPEG, "photo.jpg", "A photo")]
    client.request("PATCH", f"/patients/{full['id']}", json={"notes": "Moved to the afternoon."},
                   headers={"Content-Type": "application/merge-patch+json"})
    for data, filename, description in uploads:
        response = client.post(f"/patients/{full['id']}/reports", files={"file": (filename, data)},
                               data={"description": description} if description else {})
        assert response.status_code == 201, response.text
    shapes = {
        "patient-full": client.get(f"/fhir/Patient/{full['id']}"),
        "patient-minimal": client.get(f"/fhir/Patient/{minimal['id']}"),
        "everything-full": client.get(f"/fhir/Patient/{full['id']}/$everything"),
        "everything-minimal": client.get(f"/fhir/Patient/{minimal['id']}/$everything"),
        "search-first-page": client.get("/fhir/Patient?_count=1"),
        "search-last-page": client.get(f"/fhir/Patient?_count=1&cursor={min(full['id'], minimal['id'])}"),
        "search-sorted": client.get("/fhir/Patient?family=lov&birthdate=ge1800&_sort=-birthdate,given"),
        "search-summary-count": client.get("/fhir/Patient?_summary=count"),
        "document-reference-search": client.get(f"/fhir/DocumentReference?patient={full['id']}&_count=2"),
        "capability-statement": anonymous.get("/fhir/metadata"),
        "outcome-400": client.get("/fhir/Patient?_count=0"),
        "outcome-400-not-supported": client.get("/fhir/Patient?address=London"),
        "outcome-401": anonymous.get(f"/fhir/Patient/{full['id']}"),
        "outcome-403": other_client.get(f"/fhir/Patient/{full['id']}"),
        "outcome-404": client.get("/fhir/Patient/0123456789abcdef01234567"),
    }
    shapes["history"] = client.get(f"/fhir/Patient/{full['id']}/_history")
    shapes["version-1"] = client.get(f"/fhir/Patient/{full['id']}/_history/1")
    resources = {name: response.json() for name, response in shapes.items()}
    export = client.get("/export")
    for number, line in enumerate(export.content.splitlines()):
        resources[f"export-line-{number}"] = json.loads(line)
    for number, line in enumerate(bulk_export_lines(client)):
        resources[f"bulk-line-{number}"] = line
    assert Counter(resource["resourceType"] for name, resource in resources.items() if name.startswith("export")) == \
        {"Patient": 2, "DocumentReference": 3}
    return resources


def bulk_export_lines(client: ApiClient) -> list[dict]:
    """Every line of every file of an asynchronous bulk export, once it has finished."""
    status_url = client.get("/fhir/$export", headers={"Prefer": "respond-async"}).headers["Content-Location"]
    for _ in range(30):
        status = client.session.get(status_url, timeout=10)
        if status.status_code == 200:
            return [json.loads(line) for entry in status.json()["output"]
                    for line in client.session.get(entry["url"], timeout=10).content.splitlines()]
        time.sleep(float(status.headers.get("Retry-After", "1")))  # the pace the server asks for
    raise AssertionError(f"the bulk export did not finish: {status.status_code}")


def validate(paths: list[str]) -> list[tuple[str, str, str, str]]:
    """(severity, file, location, message) for every message the validator gives."""
    command = shlex.split(os.environ["MEDITRACK_FHIR_VALIDATOR"]) + paths
    finished = subprocess.run(command, capture_output=True, text=True, timeout=VALIDATION_TIMEOUT)
    assert finished.returncode == 0, finished.stderr[-2000:]
    lines = finished.stdout.splitlines()
    assert [line.split("\t")[1] for line in lines if line.startswith("DONE\t")] == paths, "a file was not validated"
    return [tuple(line.split("\t", 3)) for line in lines if not line.startswith("DONE\t")]


def test_every_emitted_resource_validates_against_the_r4_base_profiles(client, other_client, anonymous, tmp_path):
    resources = emitted_resources(client, other_client, anonymous)
    paths = []
    for name, resource in resources.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(resource, ensure_ascii=False), encoding="utf-8")
        paths.append(str(path))
    # A canary the validator must refuse, so a validator that passes everything fails here.
    canary = tmp_path / "canary-invalid-gender.json"
    canary.write_text(json.dumps({**resources["patient-minimal"], "gender": "robot"}), encoding="utf-8")
    messages = validate([*paths, str(canary)])
    assert any(severity == "ERROR" and path == str(canary) and "gender" in location
               for severity, path, location, _ in messages), "the validator did not refuse an invalid gender"
    messages = [message for message in messages if message[1] != str(canary)]
    # What the validator says short of an error is shown (pytest -rP), and listed in the note.
    for severity, path, location, message in messages:
        print(f"{severity} {os.path.basename(path)} {location}: {message}")
    errors = [message for message in messages if message[0] in ("ERROR", "FATAL")]
    assert not errors, "\n".join(f"{os.path.basename(path)} {location}: {message}"
                                 for _, path, location, message in errors)
