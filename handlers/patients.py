"""Patient records: list, create, read, replace, delete — each user sees only their own.

Every handler reads the same way: parse the input → authorize → call the store →
shape the response. Ownership is checked here, not in the store: another user's
record is 403 Forbidden, a record that does not exist 404 Not Found.
"""

from datetime import datetime, timedelta, timezone

from handlers.inputs import object_id, path_id, query_int, query_value, read_json
from web.messages import Response, json_response
from web.problems import Forbidden
from web.validation import ValidationError

# The optional fields a stored patient always has, and what they are when not given.
OPTIONAL_FIELDS = {"gender": "unknown", "email": None, "phone": None, "address": None,
                   "bloodType": None, "allergies": [], "notes": None}

# The latest time zone is UTC+14 (Kiribati): a date of birth that is "today" there is
# not in the future, even though it is still yesterday in UTC.
LATEST_UTC_OFFSET = timedelta(hours=14)


def read_patient_fields(request) -> dict:
    """The request body as the complete set of a patient's editable fields."""
    body = read_json(request)
    for name in ("firstName", "lastName"):
        if isinstance(body, dict) and isinstance(body.get(name), str):
            body[name] = body[name].strip()  # the 1–100 character rule applies after trimming
    request.app.validator.validate(body, "PatientInput")
    latest_today = (datetime.fromtimestamp(request.app.clock(), timezone.utc) + LATEST_UTC_OFFSET).date()
    if body["dateOfBirth"] > latest_today.isoformat():  # YYYY-MM-DD strings sort as dates
        raise ValidationError([("dateOfBirth", "must not be in the future")])
    fields = {name: body.get(name) for name in ("firstName", "lastName", "dateOfBirth")}
    for name, default in OPTIONAL_FIELDS.items():
        fields[name] = default if body.get(name) is None else body[name]
    return fields


def public_patient(patient: dict) -> dict:
    """A stored patient as clients see it: everything but the owner's id."""
    return {name: value for name, value in patient.items() if name != "ownerId"}


def owned_patient(request) -> dict:
    """The patient named in the path, if the requesting user owns it."""
    patient = request.app.store.get_patient(path_id(request, "patientId"))  # NotFound → 404
    if patient["ownerId"] != request.user["id"]:
        raise Forbidden("this patient belongs to another user")
    return patient


def list_patients(request):
    limit = query_int(request, "limit", default=20, minimum=1, maximum=100)
    cursor = query_value(request, "cursor")
    if cursor is not None:
        cursor = object_id(cursor, "cursor")  # the cursor is the last id of the previous page
    search = query_value(request, "q")
    # One more than asked for: if it comes back, there is a next page.
    patients = request.app.store.list_patients(request.user["id"], limit=limit + 1, after=cursor,
                                               name_contains=search.casefold() if search else None)
    page = patients[:limit]
    next_cursor = page[-1]["id"] if len(patients) > limit else None
    return json_response({"items": [public_patient(p) for p in page], "nextCursor": next_cursor})


def create_patient(request):
    fields = read_patient_fields(request)
    patient = request.app.store.create_patient(request.user["id"], fields)
    return json_response(public_patient(patient), 201, [("Location", f"/patients/{patient['id']}")])


def get_patient(request):
    return json_response(public_patient(owned_patient(request)))


def replace_patient(request):
    patient = owned_patient(request)
    fields = read_patient_fields(request)
    return json_response(public_patient(request.app.store.replace_patient(patient["id"], fields)))


def delete_patient(request):
    patient = owned_patient(request)
    request.app.store.delete_patient(patient["id"])
    return Response(204)
