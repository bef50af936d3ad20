"""The FHIR R4 view of a user's records: read, history, search, $everything, and a streamed export.

The same records as /patients, with the same rules (a user sees only their own:
another user's patient is 403, a missing one 404), shaped as FHIR resources by
handlers/fhir_mapping.py. FHIR's RESTful API (https://hl7.org/fhir/R4/http.html)
asks for a few things the plain API does differently:

- responses are `application/fhir+json`, and errors an OperationOutcome, never
  problem+json (`fhir_error_response`, which the dispatcher uses under /fhir/);
- the version is the resource's `meta.versionId`, and its ETag is weak: `W/"3"`
  (http.html#versioning), so If-None-Match answers 304 as on /patients;
- a search answers a Bundle that counts every match (`total`) and links to the next
  page; `_count` is the page size, `cursor` says where the previous page ended. What a
  search may ask, and how it is refused, is handlers/fhir_search.py's;
- a patient's versions are its history (`_history`), each readable (`_history/{vid}`);
- references are absolute URLs: every Bundle entry's `fullUrl` can be read back.

`GET /export` writes every Patient and DocumentReference the user owns as NDJSON,
one resource per line (FHIR Bulk Data's format), a page of patients at a time: the
response is sent in chunks as it is made, so the server's memory does not grow with
the number of patients and the first line leaves at once. It is not a snapshot: a
patient created while an export runs may or may not be in it.

Each handler takes `FhirView` first: the records, the server's public URL and the
identifier system.
"""

import heapq
from datetime import datetime, timezone
from typing import Iterator

from handlers import fhir_capability, fhir_mapping, fhir_search
from handlers.fhir_errors import Refused, Unsupported
from handlers.inputs import base_url, path_id, query_id, query_value
from handlers.patients import PatientRecords, etag_of, patient_pages
from handlers.reports import report_of
from handlers.versions import version_of, version_page
from storage.errors import NotFound
from storage.ids import is_object_id
from web.conditional import NOT_MODIFIED, evaluate_preconditions
from web.messages import Request, Response, encode_json
from web.problems import Forbidden, headers_for, public_detail, status_for
from web.server import http_date


class FhirView:
    """What the FHIR handlers depend on: the patient records, the URL clients reach the
    server at (MEDITRACK_PUBLIC_URL), which absolute references are made from, the
    system of each Patient's identifier."""

    def __init__(self, records: PatientRecords, public_url: str | None = None, *,
                 identifier_system: str = "urn:meditrack:patient-id"):
        self.records = records
        self.public_url = public_url
        self.identifier_system = identifier_system

    def patient(self, patient: dict, base: str) -> dict:
        return fhir_mapping.patient_resource(patient, base, identifier_system=self.identifier_system)

    def now(self) -> datetime:
        """The records' clock (a search's `ap` is relative to now)."""
        return datetime.fromtimestamp(self.records.clock(), timezone.utc)

    def base_url(self, request: Request) -> str:
        return base_url(request, self.public_url)


def fhir_response(resource: dict, status: int = 200, headers=()) -> Response:
    return Response(status, encode_json(resource), [("Content-Type", fhir_mapping.FHIR_JSON), *headers])


def version_headers(patient: dict) -> list[tuple[str, str]]:
    """What FHIR R4 http.html#read asks a read to carry: the version as a weak ETag, and
    when it was written as Last-Modified (an HTTP-date: whole seconds, in GMT)."""
    written = datetime.fromisoformat(patient["updatedAt"].replace("Z", "+00:00"))
    return [("ETag", fhir_mapping.weak_etag(patient["version"])), ("Last-Modified", http_date(written.timestamp()))]


def read_patient(view: FhirView, request: Request) -> Response:
    """GET /fhir/Patient/{patientId}: the Patient, at its current version."""
    patient = view.records.owned_patient(request)
    if evaluate_preconditions(request.headers, request.method, etag_of(patient)) == NOT_MODIFIED:
        return Response(304, headers=[("ETag", fhir_mapping.weak_etag(patient["version"]))])
    return fhir_response(view.patient(patient, view.base_url(request)), headers=version_headers(patient))


def capabilities(view: FhirView, request: Request) -> Response:
    """GET /fhir/metadata: what this server can do (handlers/fhir_capability.py)."""
    return fhir_response(fhir_capability.capability_statement(view.base_url(request)))


def patient_history(view: FhirView, request: Request) -> Response:
    """GET /fhir/Patient/{patientId}/_history?_count=&cursor=: every version, the newest
    first, a page at a time; `cursor` is the last version of the page before (as on
    /patients/{id}/versions). `total` is the number of versions: each one is kept."""
    patient = view.records.owned_patient(request)
    count = fhir_search.page_size(query_value(request, "_count", max_length=10))
    page, cursor, next_cursor = version_page(view.records, patient, request, count)
    versions = [{"id": patient["id"], **view.records.store.get_version(patient["id"], item["version"])}
                for item in page]
    base = view.base_url(request)
    url = f"{base}/fhir/Patient/{patient['id']}/_history"
    links = {"self": f"{url}?_count={count}" + (f"&cursor={cursor}" if cursor else "")}
    if next_cursor is not None:
        links["next"] = f"{url}?_count={count}&cursor={next_cursor}"
    return fhir_response(fhir_mapping.history_bundle(versions, base, total=patient["version"], links=links,
                                                     identifier_system=view.identifier_system))


def read_patient_version(view: FhirView, request: Request) -> Response:
    """GET /fhir/Patient/{patientId}/_history/{vid}: the Patient as it was at
    that version (FHIR's vread), with that version's weak ETag."""
    patient = view.records.owned_patient(request)
    then = version_of(view.records, patient, request.params["vid"], "vid")
    return fhir_response(view.patient(then, view.base_url(request)), headers=version_headers(then))


def read_document_reference(view: FhirView, request: Request) -> Response:
    """GET /fhir/DocumentReference/{reportId}: one report's DocumentReference, for whoever
    owns its patient (a Bundle's fullUrl for a report points here)."""
    report_id = path_id(request, "reportId")
    patient_id = view.records.store.report_patient(report_id)
    if patient_id is None:
        raise NotFound("no report with this id")
    request.facts["patientId"] = patient_id  # for the audit event, refused or not
    patient = view.records.store.get_patient(patient_id)  # NotFound if deleted meanwhile
    request.facts["ownerId"] = patient["ownerId"]
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
    resources = fhir_mapping.patient_with_documents(patient, base, identifier_system=view.identifier_system)
    link = {"self": f"{base}/fhir/Patient/{patient['id']}/$everything"}
    return fhir_response(fhir_mapping.bundle(resources, base, total=len(resources), links=link))


def search_patients(view: FhirView, request: Request) -> Response:
    """GET /fhir/Patient?...: the user's patients that match every parameter, as a
    searchset Bundle a page at a time (handlers/fhir_search.py reads the query; a
    parameter it does not support is 400, or left out under Prefer: handling=lenient)."""
    search = fhir_search.parse_patient_search(request.query, lenient=prefers(request, "handling=lenient"),
                                              identifier_system=view.identifier_system, now=view.now())
    base = view.base_url(request)
    page, total = matching_patients(view.records.store, request.user["id"], search)
    url = f"{base}/fhir/Patient"
    links = {"self": fhir_search.link(url, search.applied() + cursor_pair(request, search))}
    if search.summary_count:
        page = []  # _summary=count: the total alone
    elif len(page) > search.count:
        page = page[:search.count]
        links["next"] = fhir_search.link(url, [*search.applied(), ("cursor", search.cursor_after(page[-1]))])
    resources = [view.patient(patient, base) for patient in page]
    # _summary=count answers the total, whatever _total says: it is all that is asked for.
    shown = total if search.summary_count or search.total != "none" else None
    return fhir_response(fhir_mapping.bundle(resources, base, total=shown, links=links))


def cursor_pair(request: Request, search: fhir_search.Search) -> list[tuple[str, str]]:
    return [("cursor", request.query["cursor"][0])] if search.cursor is not None else []


def prefers(request: Request, preference: str) -> bool:
    """Whether the request's Prefer header holds this preference, e.g. "handling=lenient"
    or "respond-async". RFC 7240 §2: preferences are comma-separated, possibly over
    several fields, each `token[=value]` and then its own `; parameters`, which are
    set aside here; a value may be quoted."""
    fields = request.headers.get_all("Prefer") or []
    for item in (item for field in fields for item in field.split(",")):
        name, _, value = item.split(";")[0].strip().lower().partition("=")
        if (f"{name.strip()}={value.strip().strip(chr(34))}" if value else name.strip()) == preference:
            return True
    return False


def matching_patients(store, owner_id: str, search: fhir_search.Search) -> tuple[list[dict], int]:
    """Up to `count + 1` matches past the cursor, in the search's order (the extra one
    says a next page exists), and how many match in all.

    With no test and id order, the store pages for us. Otherwise every patient of the
    user is read, a page at a time, and tested here; only the best `count + 1` are
    kept (heapq.nsmallest), so memory holds one page whatever the user has. Paging by
    the last entry's place in the order (not by offset) keeps the next page right
    while patients are added or removed: nothing seen twice, nothing that was there
    throughout skipped."""
    if not search.criteria and not search.sort:
        after = search.cursor[0] if search.cursor else None
        return store.list_patients(owner_id, limit=search.count + 1, after=after), store.count_patients(owner_id)
    total = 0

    def past_the_cursor():
        nonlocal total
        for patient in (patient for page in patient_pages(store, owner_id) for patient in page):
            if search.matches(patient):
                total += 1
                if search.past_cursor(patient):
                    yield patient
    page = heapq.nsmallest(search.count + 1, past_the_cursor(), key=search.key)
    return page, total


def search_document_references(view: FhirView, request: Request) -> Response:
    """GET /fhir/DocumentReference?patient=<id>&_count=&cursor=: the reports of the
    patients named (`patient` or `subject`, as `<id>`, `Patient/<id>` or the Patient's
    full URL; commas for several), or of all the caller's patients when none is named,
    in report id order. A patient the caller does not own, or that does not exist,
    simply has no reports here: a search never says whose it is."""
    base = view.base_url(request)
    named, applied = document_search(request, base)
    count = fhir_search.page_size(query_value(request, "_count", max_length=10))
    cursor = query_id(request, "cursor")
    total = 0

    def past_the_cursor():
        nonlocal total
        for patient in owned_patients(view.records.store, request.user["id"], named):
            for report in patient["reports"]:
                total += 1
                if cursor is None or report["id"] > cursor:
                    yield report["id"], patient["id"], report
    page = heapq.nsmallest(count + 1, past_the_cursor(), key=lambda document: document[0])
    url = f"{base}/fhir/DocumentReference"
    applied.append(("_count", str(count)))
    links = {"self": fhir_search.link(url, applied + ([("cursor", cursor)] if cursor else []))}
    if len(page) > count:
        page = page[:count]
        links["next"] = fhir_search.link(url, [*applied, ("cursor", page[-1][0])])
    resources = [fhir_mapping.document_reference(patient_id, report, base) for _, patient_id, report in page]
    return fhir_response(fhir_mapping.bundle(resources, base, total=total, links=links))


def document_search(request: Request, base: str) -> tuple[set[str] | None, list[tuple[str, str]]]:
    """The patient ids a DocumentReference search names (None: it names none) and the
    parameters it applied. `patient` and `subject` given twice must both hold (AND);
    commas inside one are alternatives (OR)."""
    lenient = prefers(request, "handling=lenient")
    named: set[str] | None = None
    applied: list[tuple[str, str]] = []
    for raw_name, values in request.query.items():
        name, _, modifier = raw_name.partition(":")
        if name in ("patient", "subject", "_format", "_pretty") and modifier:
            raise Unsupported(f"the modifier :{modifier} of {name} is not supported")
        if name in ("_format", "_pretty", "_count", "cursor") and len(values) > 1:
            raise Refused(f"the parameter {name} may be given only once")
        for value in (fhir_search.checked_value(raw_name, value) for value in values):
            if name in ("patient", "subject"):
                ids = {patient_reference(item, base) for item in fhir_search.split_values(value)} - {None}
                named = ids if named is None else named & ids
                applied.append((name, value))
            elif name == "_format":
                applied.append((name, fhir_search.answer_format(value)))
            elif name == "_pretty":
                fhir_search.pretty(value)
            elif name not in ("_count", "cursor") and not lenient:
                raise Unsupported(f"the search parameter {raw_name} is not supported on "
                                  f"DocumentReference (supported: patient, subject, _count)")
    return named, applied


def owned_patients(store, owner_id: str, named: set[str] | None) -> Iterator[dict]:
    """The owner's patients among those named (all of them when None)."""
    if named is None:
        yield from (patient for page in patient_pages(store, owner_id) for patient in page)
        return
    for patient_id in sorted(named):
        try:
            patient = store.get_patient(patient_id)
        except NotFound:
            continue
        if patient["ownerId"] == owner_id:
            yield patient


def patient_reference(text: str, base: str) -> str | None:
    """The patient id a reference names: `<id>`, `Patient/<id>`, or `<url>/Patient/<id>`,
    which is one of ours only when `<url>` is this server's FHIR base (another
    server's patient is not ours, whatever its id: None). Anything else is 400."""
    prefix, _, patient_id = text.rpartition("Patient/")
    if not is_object_id(patient_id if _ else text) or (prefix and not prefix.endswith("/")):
        raise Refused(f"{text!r} is not a reference to a Patient (<id> or Patient/<id>)")
    if not _:
        return text
    return patient_id if prefix in ("", f"{base}/fhir/") else None


def export(view: FhirView, request: Request) -> Response:
    """GET /export: every Patient and DocumentReference the user owns, one per line."""
    lines = export_lines(view.records, request.user["id"], view.base_url(request), view.identifier_system)
    # content_length=None: sent chunked, as it is made (RFC 9112 §7.1).
    return Response(200, lines, [("Content-Type", fhir_mapping.FHIR_NDJSON)], content_length=None)


def export_lines(records: PatientRecords, owner_id: str, base: str, identifier_system: str) -> Iterator[bytes]:
    """The export's bytes, a page of patients at a time: only one page is ever in
    memory, and the first page leaves before the second is read."""
    for page in patient_pages(records.store, owner_id):
        yield b"".join(encode_json(resource) + b"\n" for patient in page
                       for resource in fhir_mapping.patient_with_documents(patient, base,
                                                                           identifier_system=identifier_system))


def fhir_error_response(exc: BaseException, statuses) -> Response:
    """Any error under /fhir/ as an OperationOutcome (FHIR R4 http.html: a server
    returns one with an error status), with the headers the status calls for."""
    status = status_for(exc, statuses)
    outcome = fhir_mapping.operation_outcome(status, public_detail(exc, status), getattr(exc, "issue", None))
    return fhir_response(outcome, status, headers_for(exc, statuses))
