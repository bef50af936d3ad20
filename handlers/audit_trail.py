"""The audit trail: who read, searched, changed or downloaded which record, and when.

Events are recorded in one place. The request pipeline (`web/dispatch.py`) tells its
observer, `AuditTrail`, about every request once its answer is decided, and every
route tagged `audited(action, resourceType)` in meditrack.py's route table gets
exactly one event, whatever the outcome: a 200, another user's 403 on your patient,
a 404, a 429. A route cannot forget to record: what it does is in its declaration.

An event holds ids, an action, the status answered, a time, the client's address and
the request id — never a name, a search term, a body, a filename or a token: nothing a
patient could be identified by. Ids come from the path only when they have an id's
shape, so a path like /patients/Jane%20Doe records nothing but the attempt.

Who may read an event: the user who acted, and the owner of the patient it concerns,
so another user's refused attempt on your patient shows in your audit as well as in
theirs. The handler that reads the patient says whose it is (`facts["ownerId"]`);
for any other request naming one, the writer looks the owner up (storage/audit_writer.py).

Batching and what a crash can lose are in storage/audit_writer.py, the hash chain in
storage/hash_chain.py.
"""

from handlers.inputs import page_of, page_request, query_id, query_value
from handlers.patients import PatientRecords
from storage.audit_writer import AuditWriter
from storage.base import Store
from storage.ids import is_object_id
from web.dispatch import Exchange
from web.messages import Request, Response, json_response
from web.problems import BadRequest, ServiceUnavailable

# The contract's lists; "export"/"Export" are for GET /export and the bulk export (a
# kick-off, and each download of one of its files).
ACTIONS = ("create", "read", "update", "delete", "search", "download", "login", "login-failed", "refresh",
           "logout", "password-change", "account-delete", "export")
RESOURCE_TYPES = ("Patient", "Report", "Session", "Account", "Export", "Link")
# An action that did not succeed is recorded under its own name where the contract has one.
FAILED_ACTIONS = {"login": "login-failed"}
# The path parameter that names the record a route acts on, by resource type.
ID_PARAMETERS = {"Patient": "patientId", "Report": "reportId", "Session": "sessionId", "Export": "jobId",
                 "Link": "reportId"}  # a download link is recorded by the report it opens


class AuditTrail:
    """The pipeline's observer: turns each audited request into an event for the writer."""

    def __init__(self, store: Store, writer: AuditWriter):
        self.store = store
        self.writer = writer

    def admit(self, exchange: Exchange) -> None:
        # NOTE: fail closed. While the store cannot take events and the queue is full,
        # serving patient data would leave no trace of who saw it: refuse instead.
        if exchange.route.tags.get("audit") is not None and self.writer.full:
            raise ServiceUnavailable("the audit trail cannot record this request now; retry shortly",
                                     headers=(("Retry-After", "5"),))

    def answered(self, exchange: Exchange, status: int) -> None:
        if exchange.route is None or exchange.route.tags.get("audit") is None:
            return
        action, resource_type = exchange.route.tags["audit"]
        if status >= 400:
            action = FAILED_ACTIONS.get(action, action)
        facts = exchange.facts
        user_id = exchange.user["id"] if exchange.user else facts.get("userId")
        resource_id = facts.get("resourceId") or id_parameter(exchange, ID_PARAMETERS.get(resource_type))
        if resource_type == "Account":
            resource_id = resource_id or user_id
        patient_id = (id_parameter(exchange, "patientId") or facts.get("patientId")
                      or (resource_id if resource_type == "Patient" else None))
        session_id = exchange.user.get("sessionId") if exchange.user else facts.get("sessionId")
        event = {
            "action": action, "outcome": status, "userId": user_id, "sessionId": session_id,
            "clientAddress": exchange.client or exchange.incoming.peer, "requestId": exchange.request_id,
            "resourceType": resource_type, "resourceId": resource_id, "patientId": patient_id}
        # The owner as of the request, when the handler read the patient; else the writer
        # looks it up, off the request thread (storage/audit_writer.py).
        if patient_id is None or "ownerId" in facts:
            event["ownerId"] = facts.get("ownerId") if patient_id else None
        self.writer.record(event)


def check_declarations(routes) -> None:
    """Stop start-up on a route that declares an action or resource type the contract lacks."""
    for route in routes:
        audit = route.tags.get("audit")
        if audit is not None and (audit[0] not in ACTIONS or audit[1] not in RESOURCE_TYPES):
            raise ValueError(f"{route.method} {route.template}: unknown audit declaration {audit!r}")


def id_parameter(exchange: Exchange, name: str | None) -> str | None:
    """A path parameter if it has an id's shape (anything else could be a name)."""
    value = exchange.params.get(name) if name else None
    return value if is_object_id(value) else None


def list_events(trail: AuditTrail, request: Request) -> Response:
    """GET /audit: the events of the user's account and of their patients, newest first."""
    return _page(trail, request, query_id(request, "patientId"))


def patient_events(trail: AuditTrail, records: PatientRecords, request: Request) -> Response:
    """GET /patients/{patientId}/audit: one patient's events (403/404 as for the patient)."""
    return _page(trail, request, records.owned_patient(request)["id"])


def _page(trail: AuditTrail, request: Request, patient_id: str | None) -> Response:
    limit, cursor = page_request(request)
    action = query_value(request, "action")
    if action is not None and action not in ACTIONS:
        raise BadRequest(f"action must be one of: {', '.join(ACTIONS)}")
    # The events of requests answered a moment ago may still be queued: commit them first.
    trail.writer.flush()
    events = trail.store.list_audit(request.user["id"], limit=limit + 1, before=cursor,
                                    patient_id=patient_id, action=action)
    page, next_cursor = page_of(events, limit)
    return json_response({"items": page, "nextCursor": next_cursor})
