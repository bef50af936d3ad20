"""Service endpoints: `/health`, for load balancers and monitors."""

from web.messages import json_response


def health(request):
    """200 when the store answers; 503 problem+json when it does not (raised by ping)."""
    store = request.app.store
    store.ping()  # Unavailable → 503
    return json_response({"status": "ok", "store": store.name})
