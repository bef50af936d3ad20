"""The FHIR R4 view of a user's records: read, search, $everything, and a streamed export.

The same records as /patients, with the same rules (a user sees only their own:
another user's patient is 403, a missing one 404), shaped as FHIR resources by
handlers/fhir_mapping.py. FHIR's RESTful API (https://hl7.org/fhir/R4/http.html)
asks for a few things the plain API does differently:

- responses are `application/fhir+json`, and errors an OperationOutcome, never
  problem+json (`fhir_error_response`, which the dispatcher uses under /fhir/);
- the version is the resource's `meta.versionId`, and its ETag is weak: `W/"3"`
  (http.html#versioning), so If-None-Match answers 304 as on /patients;
- a search answers a Bundle that counts every match (`total`) and links to the next
  page; `_count` is the page size, `cursor` the same opaque cursor as /patients;
- references are absolute URLs: every Bundle entry's `fullUrl` can be read back.

`GET /export` writes every Patient and DocumentReference the user owns as NDJSON,
one resource per line (FHIR Bulk Data's format), a page of patients at a time: the
response is sent in chunks as it is made, so the server's memory does not grow with
the number of patients and the first line leaves at once. It is not a snapshot: a
patient created while an export runs may or may not be in it.

Each handler takes `FhirView` first: the records, and the server's public URL.
"""

import re
from typing import Iterator
from urllib.parse import urlencode

from handlers import fhir_mapping
from handlers.inputs import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_of, path_id, query_id, query_int
from handlers.patients import PatientRecords, etag_of
from handlers.reports import report_of
from storage.errors import NotFound
from web.conditional import NOT_MODIFIED, evaluate_preconditions
from web.messages import Request, Response, encode_json
from web.problems import Forbidden, headers_for, public_detail, status_for

EXPORT_PAGE = 100  # patients read from the store at a time by an export
# A Host header we echo into URLs: a name or an address, and a port (RFC 9110 §7.2).
HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


class FhirView:
    """What the FHIR handlers depend on: the patient records, and the URL clients reach
    the server at (MEDITRACK_PUBLIC_URL), which absolute references are made from."""

    def __init__(self, records: PatientRecords, public_url: str | None = None):
        self.records = records
        self.public_url = public_url

    def base_url(self, request: Request) -> str:
        """The public URL if one is set (behind a TLS proxy it is the only way to know
        the scheme); else http:// and the request's Host. A Host that is not a plain
        name or address (it is the client's to write) is not echoed: "localhost"
        stands in for it."""
        if self.public_url:
            return self.public_url
        host = request.headers.get("Host", "")
        return f"http://{host if HOST.fullmatch(host) else 'localhost'}"


def fhir_response(resource: dict, status: int = 200, headers=()) -> Response:
    return Response(status, encode_json(resource), [("Content-Type", fhir_mapping.FHIR_JSON), *headers])


def weak_etag(patient: dict) -> str:
    return f'W/"{etag_of(patient)}"'  # FHIR R4 http.html#versioning: W/"<versionId>"


def read_patient(view: FhirView, request: Request) -> Response:
    """GET /fhir/Patient/{patientId}: the Patient, at its current version."""
    patient = view.records.owned_patient(request)
    if evaluate_preconditions(request.headers, request.method, etag_of(patient)) == NOT_MODIFIED:
        return Response(304, headers=[("ETag", weak_etag(patient))])
    resource = fhir_mapping.patient_resource(patient, view.base_url(request))
    return fhir_response(resource, headers=[("ETag", weak_etag(patient))])


def read_document_reference(view: FhirView, request: Request) -> Response:
    """GET /fhir/DocumentReference/{reportId}: one report's DocumentReference, for whoever
    owns its patient (a Bundle's fullUrl for a report points here)."""
    report_id = path_id(request, "reportId")
    patient_id = view.records.store.report_patient(report_id)
    if patient_id is None:
        raise NotFound("no report with this id")
    request.facts["patientId"] = patient_id  # for the audit event, refused or not
    patient = view.records.store.get_patient(patient_id)  # NotFound if deleted meanwhile
    if patient["ownerId"] != request.user["id"]:
        raise Forbidden("this report belongs to another user's patient")
    report = report_of(patient, report_id)
    if report is None:
        raise NotFound("no report with this id")  # deleted between the two reads
    return fhir_response(fhir_mapping.document_reference(patient_id, report, view.base_url(request)))


def patient_everything(view: FhirView, request: Request) -> Response:
    """GET /fhir/Patient/{patientId}/$everything: the Patient and a DocumentReference
    per report, in one Bundle (FHIR R4 patient-operation-everything.html)."""
    patient = view.records.owned_patient(request)
    base = view.base_url(request)
    resources = fhir_mapping.patient_with_documents(patient, base)
    link = {"self": f"{base}/fhir/Patient/{patient['id']}/$everything"}
    return fhir_response(fhir_mapping.bundle(resources, base, total=len(resources), links=link))


def search_patients(view: FhirView, request: Request) -> Response:
    """GET /fhir/Patient?_count=&cursor=: a page of the user's patients as a searchset Bundle.

    FHIR R4 search.html#count: the server "is not bound to return the number
    requested, but cannot return more", so a _count above the page limit is served
    as the limit rather than refused."""
    count = min(query_int(request, "_count", default=DEFAULT_PAGE_SIZE, minimum=1, maximum=999_999_999), MAX_PAGE_SIZE)
    cursor = query_id(request, "cursor")
    owner, base = request.user["id"], view.base_url(request)
    patients = view.records.store.list_patients(owner, limit=count + 1, after=cursor)
    page, next_cursor = page_of(patients, count)
    links = {"self": search_url(base, count, cursor)}
    if next_cursor is not None:
        links["next"] = search_url(base, count, next_cursor)
    resources = [fhir_mapping.patient_resource(patient, base) for patient in page]
    total = view.records.store.count_patients(owner)
    return fhir_response(fhir_mapping.bundle(resources, base, total=total, links=links))


def search_url(base: str, count: int, cursor: str | None) -> str:
    query = {"_count": count, **({"cursor": cursor} if cursor else {})}
    return f"{base}/fhir/Patient?{urlencode(query)}"


def export(view: FhirView, request: Request) -> Response:
    """GET /export: every Patient and DocumentReference the user owns, one per line."""
    lines = export_lines(view.records, request.user["id"], view.base_url(request))
    # content_length=None: sent chunked, as it is made (RFC 9112 §7.1).
    return Response(200, lines, [("Content-Type", fhir_mapping.FHIR_NDJSON)], content_length=None)


def export_lines(records: PatientRecords, owner_id: str, base: str) -> Iterator[bytes]:
    """The export's bytes, a page of patients at a time: only one page is ever in
    memory, and the first page leaves before the second is read."""
    after = None
    while True:
        patients = records.store.list_patients(owner_id, limit=EXPORT_PAGE, after=after)
        yield b"".join(encode_json(resource) + b"\n" for patient in patients
                       for resource in fhir_mapping.patient_with_documents(patient, base))
        if len(patients) < EXPORT_PAGE:
            return
        after = patients[-1]["id"]


def fhir_error_response(exc: BaseException, statuses) -> Response:
    """Any error under /fhir/ as an OperationOutcome (FHIR R4 http.html: a server
    returns one with an error status), with the headers the status calls for."""
    status = status_for(exc, statuses)
    outcome = fhir_mapping.operation_outcome(status, public_detail(exc, status))
    return fhir_response(outcome, status, headers_for(exc))
