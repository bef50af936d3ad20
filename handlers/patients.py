"""Patient records: list, create, read, replace, delete — each user sees only their own.

Every handler takes `PatientRecords` (the store, the validator, the clock) first and
reads the same way: parse the input → authorize → call the store → shape the response. Ownership is checked here, not in the store: another user's
record is 403 Forbidden, a record that does not exist 404 Not Found.
"""

import time
from datetime import datetime, timedelta, timezone

from handlers.inputs import page_of, page_request, path_id, query_value, read_json
from storage.base import Store
from web.messages import Request, Response, json_response
from web.problems import Forbidden
from web.validation import SchemaValidator, ValidationError

# The optional fields a stored patient always has, and what they are when not given.
OPTIONAL_FIELDS = {"gender": "unknown", "email": None, "phone": None, "address": None,
                   "bloodType": None, "allergies": [], "notes": None}

# The latest time zone is UTC+14 (Kiribati): a date of birth that is "today" there is
# not in the future, even though it is still yesterday in UTC.
LATEST_UTC_OFFSET = timedelta(hours=14)


class PatientRecords:
    """What the patient and report handlers depend on: the store, the validator for
    request bodies, and the clock that says what "today" is."""

    def __init__(self, store: Store, validator: SchemaValidator, *, clock=time.time):
        self.store = store
        self.validator = validator
        self.clock = clock

    def read_fields(self, request: Request) -> dict:
        """The request body as the complete set of a patient's editable fields."""
        body = read_json(request)
        for name in ("firstName", "lastName"):
            if isinstance(body, dict) and isinstance(body.get(name), str):
                body[name] = body[name].strip()  # the 1–100 character rule applies after trimming
        self.validator.validate(body, "PatientInput")
        latest_today = (datetime.fromtimestamp(self.clock(), timezone.utc) + LATEST_UTC_OFFSET).date()
        if body["dateOfBirth"] > latest_today.isoformat():  # YYYY-MM-DD strings sort as dates
            raise ValidationError([("dateOfBirth", "must not be in the future")])
        fields = {name: body.get(name) for name in ("firstName", "lastName", "dateOfBirth")}
        for name, default in OPTIONAL_FIELDS.items():
            fields[name] = default if body.get(name) is None else body[name]
        return fields

    def owned_patient(self, request: Request) -> dict:
        """The patient named in the path, if the requesting user owns it."""
        patient = self.store.get_patient(path_id(request, "patientId"))  # NotFound → 404
        if patient["ownerId"] != request.user["id"]:
            raise Forbidden("this patient belongs to another user")
        return patient


def public_patient(patient: dict) -> dict:
    """A stored patient as clients see it: everything but the owner's id."""
    return {name: value for name, value in patient.items() if name != "ownerId"}


def list_patients(records: PatientRecords, request: Request) -> Response:
    limit, cursor = page_request(request)
    search = query_value(request, "q")
    patients = records.store.list_patients(request.user["id"], limit=limit + 1, after=cursor,
                                           name_contains=search.casefold() if search else None)
    page, next_cursor = page_of(patients, limit)
    return json_response({"items": [public_patient(p) for p in page], "nextCursor": next_cursor})


def create_patient(records: PatientRecords, request: Request) -> Response:
    fields = records.read_fields(request)
    patient = records.store.create_patient(request.user["id"], fields)
    request.facts["resourceId"] = patient["id"]  # for the audit event
    return json_response(public_patient(patient), 201, [("Location", f"/patients/{patient['id']}")])


def get_patient(records: PatientRecords, request: Request) -> Response:
    return json_response(public_patient(records.owned_patient(request)))


def replace_patient(records: PatientRecords, request: Request) -> Response:
    patient = records.owned_patient(request)
    fields = records.read_fields(request)
    return json_response(public_patient(records.store.replace_patient(patient["id"], fields)))


def delete_patient(records: PatientRecords, request: Request) -> Response:
    patient = records.owned_patient(request)
    records.store.delete_patient(patient["id"])
    return Response(204)
