"""Service endpoints: `/health`, for load balancers and monitors."""

from handlers.audit_trail import AuditTrail
from storage.base import Store
from web.messages import Request, Response, json_response


def health(store: Store, trail: AuditTrail, request: Request) -> Response:
    """200 when the store answers; 503 problem+json when it does not (raised by ping).
    `audit.backlog`: events waiting to be committed (it grows while the store refuses
    them); `audit.dropped`: events lost because that queue was full; `audit.quarantined`:
    events the store refused for good, set aside (storage/audit_writer.py)."""
    store.ping()  # Unavailable → 503
    return json_response({"status": "ok", "store": store.name,
                          "audit": {"backlog": trail.writer.backlog, "dropped": trail.writer.dropped,
                                    "quarantined": trail.writer.quarantined}})
