"""How a MediTrack record reads in HL7 FHIR R4: pure functions from stored dicts to resources.

FHIR (https://hl7.org/fhir/R4/) is the format health systems exchange records in. A
resource is a JSON object whose `resourceType` names its definition; every element
below is named as the specification names it, e.g. `Patient.birthDate`.

    stored patient  →  Patient            (patient_resource)
    stored report   →  DocumentReference  (document_reference): the file itself stays
                                           at its download URL, the resource points there
    a list of them  →  Bundle             (bundle): type searchset, with total and links
    its versions    →  Bundle             (history_bundle): type history, the newest first
    an error        →  OperationOutcome   (operation_outcome)

Decisions where MediTrack's record and FHIR's Patient differ:

- `bloodType`, `allergies` and `notes` have no element in Patient. FHIR's own homes for
  them are other resources (an `Observation` for the blood group, one
  `AllergyIntolerance` per allergy), which a reader of a plain record does not have. So
  they travel as extensions (FHIR's way to carry what the base definition lacks,
  https://hl7.org/fhir/R4/extensibility.html), each with a URL under the server's own
  base: `<base>/fhir/StructureDefinition/blood-type`, `.../allergy` (one per
  allergy) and `.../notes`. Nothing of the record is left out.
- `address.line` is one string in MediTrack and a list of lines in FHIR: a list of one.
- Only what was given appears: FHIR forbids empty elements (`ele-1`), so a missing
  phone is no telecom entry, an empty address no address.
- Each resource carries a generated narrative (`text`), which FHIR asks every resource
  to have (`dom-6`) so that a person can read it without knowing the resource.

Each Patient carries one `identifier`: its MediTrack id as `value`, under the
deployment's `identifier_system` (MEDITRACK_FHIR_IDENTIFIER_SYSTEM), a URI that stays
the same whatever name a client used for the server, as an identifier must (US Core
asks every Patient for one).

Every function takes `base`, the server's URL as clients reach it (e.g.
"https://records.example.org", MEDITRACK_PUBLIC_URL; unset, the request's Host):
references between resources are made absolute from it. Set it in production, or an
extension's URL would differ with the name a client used for the server.
"""

from html import escape
from http import HTTPStatus

FHIR_JSON = "application/fhir+json"      # FHIR R4 http.html#mime-type
FHIR_NDJSON = "application/fhir+ndjson"  # FHIR Bulk Data: one resource per line
XHTML = "http://www.w3.org/1999/xhtml"

# The FHIR issue type (value set issue-type) that says what kind of error a status is,
# for the statuses a request under /fhir/ can be answered with, the HTTP codec's own
# refusals included (web/http11.py); anything else is an "exception".
ISSUE_TYPES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               411: "required", 413: "too-long", 414: "too-long", 429: "throttled", 431: "too-long",
               503: "transient", 505: "not-supported"}


def weak_etag(version: int) -> str:
    return f'W/"{version}"'  # FHIR R4 http.html#versioning: W/"<versionId>"


def extension_url(base: str, name: str) -> str:
    return f"{base}/fhir/StructureDefinition/{name}"


def narrative(text: str) -> dict:
    """Narrative: status `generated` (made from the structured data) and an XHTML div
    (FHIR R4 narrative.html: the div's namespace is required, the text escaped)."""
    return {"status": "generated", "div": f'<div xmlns="{XHTML}"><p>{escape(text)}</p></div>'}


def patient_resource(patient: dict, base: str, *, identifier_system: str) -> dict:
    resource = {
        "resourceType": "Patient",
        "id": patient["id"],                                     # Resource.id
        "meta": {"versionId": str(patient["version"]),           # Resource.meta.versionId
                 "lastUpdated": patient["updatedAt"]},           # Resource.meta.lastUpdated
        "text": narrative(f"{patient['firstName']} {patient['lastName']}, born {patient['dateOfBirth']}"),
    }
    extensions = [*blood_type_extensions(patient, base), *allergy_extensions(patient, base),
                  *notes_extensions(patient, base)]
    if extensions:
        resource["extension"] = extensions                       # DomainResource.extension
    resource["identifier"] = [{"system": identifier_system,      # Patient.identifier.system
                               "value": patient["id"]}]          # Patient.identifier.value
    resource["name"] = [{"use": "official",                      # Patient.name.use
                         "family": patient["lastName"],          # Patient.name.family
                         "given": [patient["firstName"]]}]       # Patient.name.given
    telecom = [{"system": system, "value": patient[field]}       # Patient.telecom.system / .value
               for system, field in (("phone", "phone"), ("email", "email")) if patient.get(field)]
    if telecom:
        resource["telecom"] = telecom
    resource["gender"] = patient["gender"]                       # Patient.gender: the same four codes
    resource["birthDate"] = patient["dateOfBirth"]               # Patient.birthDate: YYYY-MM-DD as stored
    address = address_element(patient.get("address"))
    if address:
        resource["address"] = [address]                          # Patient.address
    return resource


def address_element(address: dict | None) -> dict | None:
    """Address: `line` is a list in FHIR (Address.line), the other parts are the same."""
    if not address:
        return None
    element = {"line": [address["line"]]} if address.get("line") else {}
    for part in ("city", "state", "postalCode", "country"):      # Address.city, .state, .postalCode, .country
        if address.get(part):
            element[part] = address[part]
    return element or None


def blood_type_extensions(patient: dict, base: str) -> list[dict]:
    blood_type = patient.get("bloodType")
    return [{"url": extension_url(base, "blood-type"), "valueString": blood_type}] if blood_type else []


def allergy_extensions(patient: dict, base: str) -> list[dict]:
    return [{"url": extension_url(base, "allergy"), "valueString": allergy} for allergy in patient.get("allergies")
            or () if allergy]


def notes_extensions(patient: dict, base: str) -> list[dict]:
    # FHIR R4 datatypes.html#string: a string is never empty.
    notes = patient.get("notes")
    return [{"url": extension_url(base, "notes"), "valueString": notes}] if notes else []


def document_reference(patient_id: str, report: dict, base: str) -> dict:
    attachment = {"contentType": report["contentType"],          # Attachment.contentType: the sniffed type
                  "url": f"{base}/patients/{patient_id}/reports/{report['id']}",  # Attachment.url: the download
                  "size": report["size"]}                        # Attachment.size: bytes
    if report.get("sha1"):
        attachment["hash"] = report["sha1"]                      # Attachment.hash: base64 SHA-1 of the bytes
    attachment["title"] = report["filename"]                     # Attachment.title: the name it was sent as
    attachment["creation"] = report["uploadedAt"]                # Attachment.creation
    resource = {
        "resourceType": "DocumentReference",
        "id": report["id"],
        "meta": {"lastUpdated": report["uploadedAt"]},           # a report never changes once stored
        "text": narrative(f"{report['filename']} ({report['contentType']}, {report['size']} bytes)"),
        "status": "current",                                     # DocumentReference.status
        "subject": {"reference": f"Patient/{patient_id}"},       # DocumentReference.subject
        "date": report["uploadedAt"],                            # DocumentReference.date: when it was made
    }
    if report.get("description"):
        resource["description"] = report["description"]          # DocumentReference.description
    resource["content"] = [{"attachment": attachment}]           # DocumentReference.content.attachment
    return resource


def patient_with_documents(patient: dict, base: str, *, identifier_system: str) -> list[dict]:
    """The patient's resources: its Patient, then a DocumentReference per report."""
    return [patient_resource(patient, base, identifier_system=identifier_system),
            *(document_reference(patient["id"], report, base) for report in patient["reports"])]


def full_url(resource: dict, base: str) -> str:
    return f"{base}/fhir/{resource['resourceType']}/{resource['id']}"


def bundle(resources: list[dict], base: str, *, total: int | None, links: dict[str, str]) -> dict:
    """A searchset Bundle (FHIR R4 bundle.html): `total` counts every match, not only
    this page's (None, when the client asked for no total: left out); `link` holds
    `self` and, when there is one, `next`."""
    bundle = {"resourceType": "Bundle", "type": "searchset"}     # Bundle.type
    if total is not None:
        bundle["total"] = total                                  # Bundle.total
    bundle["link"] = [{"relation": relation, "url": url} for relation, url in links.items()]  # Bundle.link
    if resources:  # FHIR R4 json.html: an array is never empty, it is left out
        bundle["entry"] = [{"fullUrl": full_url(resource, base),  # Bundle.entry.fullUrl: where to read it
                            "resource": resource,
                            "search": {"mode": "match"}}         # Bundle.entry.search.mode
                           for resource in resources]
    return bundle


def history_bundle(versions: list[dict], base: str, *, total: int, links: dict[str, str],
                   identifier_system: str) -> dict:
    """A patient's history (FHIR R4 http.html#history): a Bundle of type `history`, one
    entry per version, the newest first. Each entry says how that version was made: the
    first by a create (POST, 201), every later one by an update (PUT, 200), with the
    version's weak ETag and when it was written (bdl-3 and bdl-4: a history entry has
    `request` and `response`)."""
    entries = []
    for version in versions:
        resource = patient_resource(version, base, identifier_system=identifier_system)
        created = version["version"] == 1
        entries.append({
            "fullUrl": full_url(resource, base),                 # Bundle.entry.fullUrl
            "resource": resource,
            "request": {"method": "POST" if created else "PUT",  # Bundle.entry.request
                        "url": "Patient" if created else f"Patient/{version['id']}"},
            "response": {"status": "201" if created else "200",  # Bundle.entry.response
                         "etag": weak_etag(version["version"]), "lastModified": version["updatedAt"]},
        })
    bundle = {"resourceType": "Bundle", "type": "history", "total": total,
              "link": [{"relation": relation, "url": url} for relation, url in links.items()]}
    if entries:
        bundle["entry"] = entries
    return bundle


def operation_outcome(status: int, detail: str, code: str | None = None) -> dict:
    """An error as FHIR says a server reports one (FHIR R4 http.html#2.21.0.18): an
    OperationOutcome with one issue, its `code` the kind of error the status is, unless
    the error names its own (a search parameter that is not supported)."""
    return {"resourceType": "OperationOutcome",
            "text": narrative(f"{status} {HTTPStatus(status).phrase}: {detail}"),
            "issue": [{"severity": "error", "code": code or ISSUE_TYPES.get(status, "exception"),
                       "diagnostics": detail}]}
