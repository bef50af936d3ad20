"""A patient's history: the list of its versions, and each version's fields as they were.

Every change to a patient makes a new version (handlers/patients.py), and the store
keeps them all, so nothing a PUT or PATCH overwrote is lost: this is where it is
read back. Deleting the patient deletes its history with it.
"""

from handlers.inputs import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_VERSION, page_of, query_int, whole_number
from handlers.patients import PatientRecords
from storage.errors import NotFound
from web.messages import Request, Response, json_response


def list_versions(records: PatientRecords, request: Request) -> Response:
    """{items: [{version, updatedAt}], nextCursor}: the newest first; the cursor is the
    last version of the page before."""
    patient = records.owned_patient(request)
    limit = query_int(request, "limit", default=DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE)
    page, _, next_cursor = version_page(records, patient, request, limit)
    return json_response({"items": page, "nextCursor": next_cursor})


def version_page(records: PatientRecords, patient: dict, request: Request,
                 limit: int) -> tuple[list[dict], int | None, int | None]:
    """Up to `limit` of the patient's versions below `?cursor=`, the newest first: the
    page, the cursor asked with, and the next page's (this page's last version, or None).
    Shared with the FHIR history (handlers/fhir.py)."""
    # Any version number of up to ten digits: versions below it, so one past the newest
    # (or past MAX_VERSION) simply means "from the newest".
    cursor = query_int(request, "cursor", default=None, minimum=1, maximum=10**10 - 1)
    # Never past the version the patient is at: a version a writer has claimed but not
    # applied yet (storage/mongo/versions.py) is not history yet.
    below = patient["version"] + 1 if cursor is None else min(cursor, patient["version"] + 1)
    versions = records.store.list_versions(patient["id"], below=below, limit=limit + 1)
    page, next_cursor = page_of(versions, limit, key="version")
    return page, cursor, next_cursor


def get_version(records: PatientRecords, request: Request) -> Response:
    """{id, version, <the patient's fields>, updatedAt} as they were at that version."""
    patient = records.owned_patient(request)
    return json_response(version_of(records, patient, request.params["version"], "version"))


def version_of(records: PatientRecords, patient: dict, text: str, name: str) -> dict:
    """{id, version, <the fields>, updatedAt} of the version the path names: 400 if it is
    not a version number, 404 if the patient has none such (yet)."""
    version = whole_number(text, name, 1, MAX_VERSION)
    if version > patient["version"]:
        raise NotFound("this patient has no such version yet")
    return {"id": patient["id"], **records.store.get_version(patient["id"], version)}
