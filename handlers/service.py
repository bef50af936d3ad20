"""Service endpoints: `/health`, for load balancers and monitors."""

from storage.base import Store
from web.messages import Request, Response, json_response


def health(store: Store, request: Request) -> Response:
    """200 when the store answers; 503 problem+json when it does not (raised by ping)."""
    store.ping()  # Unavailable → 503
    return json_response({"status": "ok", "store": store.name})
