"""Service endpoints: `/health`, for load balancers and monitors."""

from handlers.audit_trail import AuditTrail
from storage.base import Store
from web.messages import Request, Response, json_response


def health(store: Store, trail: AuditTrail, request: Request) -> Response:
    """200 when the store answers; 503 problem+json when it does not (raised by ping).
    `audit.backlog`: events waiting to be committed (it grows while the store refuses
    them); `audit.dropped`: events lost because that queue was full; `audit.quarantined`:
    events the store refused for good, set aside (storage/audit_writer.py). `reportStorage`:
    where report bytes live; an object store that does not answer is reported, not a
    503 (every request but an upload and a download still works)."""
    store.ping()  # Unavailable → 503
    return json_response({"status": "ok", "store": store.name, "reportStorage": store.report_storage(),
                          "audit": {"backlog": trail.writer.backlog, "dropped": trail.writer.dropped,
                                    "quarantined": trail.writer.quarantined}})
