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
    # Any version number of up to ten digits: versions below it, so one past the newest
    # (or past MAX_VERSION) simply means "from the newest".
    cursor = query_int(request, "cursor", default=None, minimum=1, maximum=10**10 - 1)
    # Never past the version the patient is at: a version a writer has claimed but not
    # applied yet (storage/mongo/versions.py) is not history yet.
    below = patient["version"] + 1 if cursor is None else min(cursor, patient["version"] + 1)
    versions = records.store.list_versions(patient["id"], below=below, limit=limit + 1)
    page, next_cursor = page_of(versions, limit, key="version")
    return json_response({"items": page, "nextCursor": next_cursor})


def get_version(records: PatientRecords, request: Request) -> Response:
    """{id, version, <the patient's fields>, updatedAt} as they were at that version."""
    patient = records.owned_patient(request)
    version = whole_number(request.params["version"], "version", 1, MAX_VERSION)
    if version > patient["version"]:
        raise NotFound("this patient has no such version yet")
    return json_response({"id": patient["id"], **records.store.get_version(patient["id"], version)})
