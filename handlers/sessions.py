"""Sessions: refresh the token pair, log out, list and end sessions.

A session starts at login (`handlers/auth.py`) and ends on logout, on a password
change (every other session), when its refresh token is used twice, or when the
refresh token expires. An access token works only while its session is alive, on
every MediTrack process that shares the store.
"""

from handlers.auth import Accounts
from handlers.inputs import path_id
from storage.errors import NotFound
from web.messages import Request, Response, json_response


def refresh(accounts: Accounts, request: Request) -> Response:
    """POST /auth/refresh: a new pair for the current refresh token, which is retired."""
    body = accounts.read_body(request, "RefreshRequest")
    return json_response(accounts.refresh(body["refreshToken"], request.facts))


def logout(accounts: Accounts, request: Request) -> Response:
    """POST /auth/logout: this request's session ends; its tokens stop working at once."""
    request.facts["resourceId"] = request.user["sessionId"]  # for the audit event
    accounts.store.end_session(request.user["sessionId"])
    return Response(204)


def list_sessions(accounts: Accounts, request: Request) -> Response:
    """GET /auth/sessions: the user's live sessions, newest first; `current` marks this one."""
    items = [{"id": session["id"], "createdAt": session["createdAt"], "lastUsedAt": session["lastUsedAt"],
              "current": session["id"] == request.user["sessionId"]}
             for session in accounts.store.list_sessions(request.user["id"])]
    return json_response({"items": items})


def end_session(accounts: Accounts, request: Request) -> Response:
    """DELETE /auth/sessions/{sessionId}: end one of the user's sessions."""
    # Another user's session is answered exactly like one that does not exist: 404.
    if not accounts.store.end_session(path_id(request, "sessionId"), request.user["id"]):
        raise NotFound("you have no live session with this id")
    return Response(204)


def end_all_sessions(accounts: Accounts, request: Request) -> Response:
    """DELETE /auth/sessions: every session of the user ends, this one too."""
    accounts.store.end_sessions(request.user["id"])
    return Response(204)
