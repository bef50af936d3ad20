"""Errors as RFC 9457 problem details: one table from exception to status, one writer.

Handlers and mechanisms raise; nothing but `problem_response` turns an exception into
an HTTP response. A mechanism whose failures are not HTTP by nature keeps its
exceptions free of it (the JWT module does not know what a 401 is), and
`STATUS_BY_EXCEPTION` below gives each of them its status. An `HTTPError` carries its
own: this module's, and those of mechanisms that are HTTP by nature (web/conditional.py's
412, 416 and 428).

The web layer knows nothing of the application built on it: an application whose own
exceptions deserve a status (a store's "not found" is a 404) hands its table to the
dispatcher, which merges it with this one (`statuses` below). A reader can check the
whole API's error behaviour on two screens: this one and the application's.
"""

from http import HTTPStatus
from typing import Mapping

from web import http11, jsonbody, jwt, multipart, router, validation
from web.messages import Response, encode_json

PROBLEM_TYPE = "application/problem+json"


class HTTPError(Exception):
    """An error that is already an HTTP status: raised by handlers and the server."""
    status = 500

    def __init__(self, detail: str, *, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(detail)
        self.headers = headers


class BadRequest(HTTPError):
    status = 400


class Unauthorized(HTTPError):
    status = 401


def bearer_challenge(error: str | None = None) -> tuple[tuple[str, str], ...]:
    """The WWW-Authenticate header of a 401 to a bearer-token API (RFC 6750 §3): bare when
    the request brought no token (§3.1), with `error="invalid_token"` when it brought one
    that was refused (expired, forged, its session ended)."""
    return (("WWW-Authenticate", "Bearer" if error is None else f'Bearer error="{error}"'),)


class Forbidden(HTTPError):
    status = 403


class Gone(HTTPError):
    status = 410  # RFC 9110 §15.5.11: it existed, and is no more (an expired download link)


class PayloadTooLarge(HTTPError):
    status = 413


class UnsupportedMediaType(HTTPError):
    status = 415


class TooManyRequests(HTTPError):
    status = 429


class ServiceUnavailable(HTTPError):
    status = 503


# The mechanisms' exceptions, each with the one status it deserves. Looked up along
# the exception's class hierarchy, so a subclass listed here (FileTooLarge) wins over
# its base (MultipartError).
STATUS_BY_EXCEPTION = {
    http11.ProtocolError: 400,
    http11.ChunkedBodyRefused: 411,
    http11.RequestLineTooLong: 414,
    http11.HeaderSectionTooLarge: 431,
    http11.VersionNotSupported: 505,
    router.RouteNotFound: 404,
    router.MethodNotAllowed: 405,
    jsonbody.InvalidJSON: 400,
    validation.ValidationError: 400,
    jwt.TokenError: 401,
    multipart.MultipartError: 400,
    multipart.FileTooLarge: 413,
    multipart.FieldTooLarge: 413,
}

# What a client is told for anything unexpected: never the exception's own text,
# which could hold SQL, a driver message or a file path.
INTERNAL_DETAIL = "The server could not complete the request."


def status_for(exc: BaseException, statuses: Mapping[type, int] = STATUS_BY_EXCEPTION) -> int:
    """The status for an exception: its own if it is an HTTPError, else the first of its
    classes that `statuses` lists, else 500."""
    if isinstance(exc, HTTPError):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in statuses:
            return statuses[cls]
    return 500


# Seconds a 503 asks a client to wait, when its cause gives no better figure (RFC 9110
# §10.2.3): a store or object store that does not answer is usually back within that.
RETRY_UNAVAILABLE = "5"


def headers_for(exc: BaseException, statuses: Mapping[type, int] = STATUS_BY_EXCEPTION) -> list[tuple[str, str]]:
    if isinstance(exc, HTTPError):
        return list(exc.headers)
    if status_for(exc, statuses) == 503:
        return [("Retry-After", RETRY_UNAVAILABLE)]
    if isinstance(exc, router.MethodNotAllowed):
        # RFC 9110 §15.5.6: a 405 MUST carry Allow with the methods the resource has.
        return [("Allow", ", ".join(exc.allowed))]
    if isinstance(exc, jwt.TokenError):
        return list(bearer_challenge("invalid_token"))
    return []


def problem_response(exc: BaseException, statuses: Mapping[type, int] = STATUS_BY_EXCEPTION) -> Response:
    """The problem+json response for an exception (RFC 9457 §3)."""
    status = status_for(exc, statuses)
    # RFC 9457 §4.2.1: with type "about:blank" the title is the status's reason phrase.
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
            "detail": public_detail(exc, status)}
    if isinstance(exc, validation.ValidationError):
        body["errors"] = [{"field": field, "message": message} for field, message in exc.errors]
    return Response(status, encode_json(body), [("Content-Type", PROBLEM_TYPE), *headers_for(exc, statuses)])


def public_detail(exc: BaseException, status: int) -> str:
    """What a client may be told about an error: its own text, unless it is a 500."""
    return INTERNAL_DETAIL if status == 500 else str(exc)
