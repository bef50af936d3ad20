"""Patient records: list, create, read, replace, patch, delete — each user sees only their own.

Every handler takes `PatientRecords` (the store, the validator, the clock) first and
reads the same way: parse the input → authorize → call the store → shape the
response. Ownership is checked here, not in the store: another user's record is 403
Forbidden, a record that does not exist 404 Not Found.

Every patient has a version, sent as its entity tag (`ETag: "3"`). A write that
carries `If-Match: "3"` happens only if the patient is still at version 3, checked
by the store in the same step as the write (web/conditional.py explains the headers).
"""

import time
from typing import Iterator
from datetime import datetime, timedelta, timezone

from handlers.inputs import page_of, page_request, path_id, query_value, read_json
from storage.base import Store
from storage.errors import Conflict, VersionMismatch
from web.conditional import ANY, NOT_MODIFIED, PreconditionRequired, evaluate_preconditions, parse_entity_tags, quoted
from web.mergepatch import merge_patch
from web.messages import Request, Response, json_response
from web.problems import Forbidden
from web.validation import SchemaValidator, ValidationError

# The optional fields a stored patient always has, and what they are when not given.
OPTIONAL_FIELDS = {"gender": "unknown", "email": None, "phone": None, "address": None,
                   "bloodType": None, "allergies": [], "notes": None}

# The latest time zone is UTC+14 (Kiribati): a date of birth that is "today" there is
# not in the future, even though it is still yesterday in UTC.
LATEST_UTC_OFFSET = timedelta(hours=14)

# What a name is trimmed of: ECMA-262's WhiteSpace and LineTerminator (§12.2, §12.3), the
# characters the schema's pattern counts as whitespace. (str.strip() with no argument
# would also remove \x1c–\x1f and \x85, which that pattern takes for letters.)
NAME_WHITESPACE = ("\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                   "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff")

EDITABLE_FIELDS = ("firstName", "lastName", "dateOfBirth", *OPTIONAL_FIELDS)
MERGE_PATCH_TYPE = "application/merge-patch+json"  # RFC 7396 §4
# A PATCH without If-Match is still applied to the version it was merged onto; if that
# changed meanwhile, it is merged again onto the new one, this many times at most.
PATCH_ATTEMPTS = 5


class PatientRecords:
    """What the patient and report handlers depend on: the store, the validator for
    request bodies, the clock that says what "today" is, and whether writes must
    name the version they change (MEDITRACK_REQUIRE_IF_MATCH)."""

    def __init__(self, store: Store, validator: SchemaValidator, *, clock=time.time,
                 require_if_match: bool = False):
        self.store = store
        self.validator = validator
        self.clock = clock
        self.require_if_match = require_if_match

    def read_fields(self, request: Request) -> dict:
        """The request body as the complete set of a patient's editable fields."""
        return self.checked_fields(read_json(request))

    def checked_fields(self, body) -> dict:
        """A PUT body, or a patched patient, as the complete set of editable fields; 400
        unless it is a valid PatientInput."""
        # The schema counts a name's characters as sent (1–100, one not whitespace);
        # then the surrounding whitespace goes. Trimming first would let 101 characters
        # through that the schema, and every client generated from it, refuses.
        self.validator.validate(body, "PatientInput")
        for name in ("firstName", "lastName"):
            body[name] = body[name].strip(NAME_WHITESPACE)
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
        request.facts["ownerId"] = patient["ownerId"]  # the audit event's owner, as of this request
        if patient["ownerId"] != request.user["id"]:
            raise Forbidden("this patient belongs to another user")
        return patient

    def write_condition(self, request: Request, patient: dict) -> int | None:
        """The version a PUT, PATCH or DELETE may change, or None for any: 412 now if its
        preconditions already fail (RFC 9110 §13.2.2), 428 if one is required and absent.

        The version returned goes to the store, which checks it again as it writes:
        the check here only spares reading a body that would be refused anyway.
        """
        evaluate_preconditions(request.headers, request.method, etag_of(patient))
        if_match = parse_entity_tags(request.headers.get_all("If-Match"))
        if if_match is None or if_match == ANY:
            if self.require_if_match:
                # NOTE: "If-Match: *" only says the record exists; it cannot stop a lost
                # update, which is what requiring a condition is for.
                raise PreconditionRequired("this server requires If-Match with the patient's ETag on every write")
            return None
        return patient["version"]  # it matched: the store must still find this version


PATIENT_PAGE = 100  # patients read from the store at a time by whatever reads them all


def patient_pages(store, owner_id: str) -> Iterator[list[dict]]:
    """Every patient of the owner, in id order, a page of PATIENT_PAGE at a time: what
    the export, the bulk export and a filtered FHIR search read, so their memory holds
    one page."""
    size, after = PATIENT_PAGE, None
    while True:
        page = store.list_patients(owner_id, limit=size, after=after)
        yield page
        if len(page) < size:
            return
        after = page[-1]["id"]


def public_patient(patient: dict) -> dict:
    """A stored patient as clients see it: everything but the owner's id."""
    shown = {name: value for name, value in patient.items() if name != "ownerId"}
    shown["reports"] = [public_report(report) for report in patient["reports"]]
    return shown


def public_report(report: dict) -> dict:
    """A stored report as clients see it: without the SHA-1 kept for its FHIR view
    (the plain API names a file by its SHA-256)."""
    return {name: value for name, value in report.items() if name != "sha1"}


def etag_of(patient: dict) -> str:
    return str(patient["version"])


def patient_response(patient: dict, status: int = 200, headers=()) -> Response:
    """A patient with its version as a strong entity tag (RFC 9110 §8.8.3)."""
    return json_response(public_patient(patient), status, [("ETag", quoted(etag_of(patient))), *headers])


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
    request.facts["resourceId"], request.facts["ownerId"] = patient["id"], patient["ownerId"]  # for the audit event
    return patient_response(patient, 201, [("Location", f"/patients/{patient['id']}")])


def get_patient(records: PatientRecords, request: Request) -> Response:
    patient = records.owned_patient(request)
    if evaluate_preconditions(request.headers, request.method, etag_of(patient)) == NOT_MODIFIED:
        # RFC 9110 §15.4.5: a 304 carries the ETag a 200 would have, and no body.
        return Response(304, headers=[("ETag", quoted(etag_of(patient)))])
    return patient_response(patient)


def replace_patient(records: PatientRecords, request: Request) -> Response:
    patient = records.owned_patient(request)
    expected_version = records.write_condition(request, patient)
    fields = records.read_fields(request)
    return patient_response(records.store.replace_patient(patient["id"], fields, expected_version=expected_version))


def patch_patient(records: PatientRecords, request: Request) -> Response:
    """RFC 7396: the patch is merged onto the stored fields, and the result must be a
    valid patient, exactly as a PUT body must."""
    patient = records.owned_patient(request)
    expected_version = records.write_condition(request, patient)
    # RFC 5789 §3.1: a 415 to a PATCH names the patch formats the resource takes.
    patch = read_json(request, MERGE_PATCH_TYPE, refusal_headers=(("Accept-Patch", MERGE_PATCH_TYPE),))
    for _ in range(PATCH_ATTEMPTS):
        stored = {name: patient[name] for name in EDITABLE_FIELDS if patient[name] is not None}
        fields = records.checked_fields(merge_patch(stored, patch))
        try:
            # Always conditional on the version merged onto: a change in between must
            # not be overwritten by fields read before it.
            updated = records.store.replace_patient(patient["id"], fields, expected_version=patient["version"])
        except VersionMismatch:
            if expected_version is not None:
                raise  # the client named the version: 412
            patient = records.owned_patient(request)  # merge again, onto what is there now
            continue
        return patient_response(updated)
    raise Conflict("the patient kept changing while the patch was being applied; send it again")


def delete_patient(records: PatientRecords, request: Request) -> Response:
    patient = records.owned_patient(request)
    records.store.delete_patient(patient["id"], expected_version=records.write_condition(request, patient))
    return Response(204)
