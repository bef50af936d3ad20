"""Tests for web/problems.py: the one table from exception to status, and problem+json (RFC 9457).

The web layer's own table is tested as it is; the application's (`handlers.ERROR_STATUSES`,
the store's errors) is handed in as the dispatcher does, merged over it.
"""

import json
from http import HTTPStatus

import pytest

from handlers import ERROR_STATUSES
from storage import errors as store_errors
from web import http11, jsonbody, jwt, multipart, problems, router, validation
from web.problems import INTERNAL_DETAIL, PROBLEM_TYPE, STATUS_BY_EXCEPTION, problem_response, status_for

APPLICATION_STATUSES = {**STATUS_BY_EXCEPTION, **ERROR_STATUSES}


def make(cls: type[BaseException]) -> BaseException:
    """An instance of any exception class the table knows, whatever its constructor needs."""
    if issubclass(cls, router.RouteNotFound):
        return cls()
    if issubclass(cls, router.MethodNotAllowed):
        return cls("POST", ["GET", "PUT"])
    if issubclass(cls, validation.ValidationError):
        return cls([("body.firstName", "is required")])
    return cls("something specific went wrong")


def body_of(response) -> dict:
    return json.loads(response.body)


def header(response, name: str) -> str | None:
    values = [value for key, value in response.headers if key.lower() == name.lower()]
    assert len(values) <= 1, f"{name} appears {len(values)} times"
    return values[0] if values else None


# --- status_for ---------------------------------------------------------------------


@pytest.mark.parametrize("cls, status", APPLICATION_STATUSES.items(),
                         ids=[cls.__name__ for cls in APPLICATION_STATUSES])
def test_every_table_entry_gives_its_status(cls, status):
    assert status_for(make(cls), APPLICATION_STATUSES) == status


@pytest.mark.parametrize("cls, status", APPLICATION_STATUSES.items(),
                         ids=[cls.__name__ for cls in APPLICATION_STATUSES])
def test_an_unlisted_subclass_inherits_its_bases_status(cls, status):
    subclass = type(f"Special{cls.__name__}", (cls,), {})
    assert status_for(make(subclass), APPLICATION_STATUSES) == status


@pytest.mark.parametrize("cls, status", [
    (http11.ProtocolError, 400),
    (http11.IncompleteMessage, 400),
    (http11.ChunkedBodyRefused, 411),
    (http11.RequestLineTooLong, 414),
    (http11.HeaderSectionTooLarge, 431),
    (http11.VersionNotSupported, 505),
])
def test_protocol_errors_get_their_status_without_any_application_table(cls, status):
    assert status_for(cls("x")) == status


def test_the_store_errors_are_500_until_the_application_maps_them():
    # The web layer knows nothing of the store: without the application's table a
    # store error is just an unexpected exception.
    assert status_for(store_errors.NotFound("x")) == 500
    assert status_for(store_errors.NotFound("x"), APPLICATION_STATUSES) == 404


@pytest.mark.parametrize("cls, status", [
    (multipart.FileTooLarge, 413),
    (multipart.FieldTooLarge, 413),
    (multipart.BadBoundary, 400),
    (multipart.MalformedBody, 400),
    (multipart.IncompleteBody, 400),
    (multipart.TooManyParts, 400),
    (jwt.TokenExpired, 401),
    (jwt.BadSignature, 401),
    (jwt.MalformedToken, 401),
    (jwt.UnsupportedAlgorithm, 401),
    (jwt.MissingClaim, 401),
    (jwt.InvalidClaim, 401),
])
def test_mechanism_subclasses_get_the_most_specific_status(cls, status):
    assert status_for(make(cls)) == status


def test_listed_subclass_beats_its_listed_base():
    assert issubclass(multipart.FileTooLarge, multipart.MultipartError)
    assert status_for(multipart.FileTooLarge("too big")) == 413
    assert status_for(multipart.MultipartError("bad")) == 400


@pytest.mark.parametrize("cls, status", [
    (problems.BadRequest, 400),
    (problems.Unauthorized, 401),
    (problems.Forbidden, 403),
    (problems.PayloadTooLarge, 413),
    (problems.UnsupportedMediaType, 415),
    (problems.TooManyRequests, 429),
    (problems.ServiceUnavailable, 503),
])
def test_http_errors_carry_their_own_status(cls, status):
    assert status_for(cls("detail")) == status
    assert problem_response(cls("detail")).status == status


def test_a_new_http_error_subclass_needs_no_table_entry():
    class ImATeapot(problems.HTTPError):
        status = 418

    assert status_for(ImATeapot("short and stout")) == 418


@pytest.mark.parametrize("exc", [
    RuntimeError("boom"),
    KeyError("firstName"),
    ValueError("bad"),
    ZeroDivisionError(),
    store_errors.StoreError("unclassified store failure"),
    problems.HTTPError("a bare HTTPError"),
])
def test_unknown_exceptions_are_500(exc):
    assert status_for(exc) == 500


# --- problem_response ---------------------------------------------------------------


@pytest.mark.parametrize("exc, status, title", [
    (store_errors.NotFound("no patient with this id"), 404, "Not Found"),
    (problems.Unauthorized("a bearer token is required"), 401, "Unauthorized"),
    (problems.TooManyRequests("slow down"), 429, "Too Many Requests"),
    (store_errors.Conflict("the username is taken"), 409, "Conflict"),
    (jsonbody.InvalidJSON("the body is not valid JSON"), 400, "Bad Request"),
    (store_errors.Unavailable("the database cannot be reached"), 503, "Service Unavailable"),
    (RuntimeError("boom"), 500, "Internal Server Error"),
])
def test_problem_has_type_title_status_and_detail(exc, status, title):
    response = problem_response(exc, APPLICATION_STATUSES)
    assert response.status == status
    assert header(response, "Content-Type") == PROBLEM_TYPE == "application/problem+json"
    body = body_of(response)
    assert body["type"] == "about:blank"
    assert body["title"] == title
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]


@pytest.mark.parametrize("cls", [*APPLICATION_STATUSES, problems.PayloadTooLarge, problems.ServiceUnavailable],
                         ids=lambda cls: cls.__name__)
def test_title_is_the_reason_phrase_for_every_status(cls):
    response = problem_response(make(cls), APPLICATION_STATUSES)
    assert body_of(response)["title"] == HTTPStatus(response.status).phrase


def test_client_errors_carry_the_exceptions_detail():
    assert body_of(problem_response(problems.Forbidden("this patient belongs to another user")))["detail"] == \
        "this patient belongs to another user"


def test_problem_body_has_no_other_members_than_rfc9457_ones():
    assert set(body_of(problem_response(problems.BadRequest("x")))) == {"type", "title", "status", "detail"}


@pytest.mark.parametrize("exc", [
    RuntimeError("SELECT * FROM users WHERE password_hash = 'x'"),
    KeyError("SELECT * FROM users"),
    OSError(2, "No such file or directory", "/srv/meditrack/data/SELECT * FROM users"),
    store_errors.StoreError("SELECT * FROM users"),
    problems.HTTPError("SELECT * FROM users"),
])
def test_500_never_carries_the_exceptions_text(exc):
    response = problem_response(exc, APPLICATION_STATUSES)
    assert response.status == 500
    assert body_of(response)["detail"] == INTERNAL_DETAIL
    everything = response.body.decode() + repr(response.headers)
    assert "SELECT" not in everything and "users" not in everything


def test_validation_error_lists_each_field_and_message():
    exc = validation.ValidationError([("body.firstName", "is required"),
                                      ("body.address.city", "is longer than 200 characters")])
    response = problem_response(exc)
    body = body_of(response)
    assert response.status == 400
    assert body["errors"] == [
        {"field": "body.firstName", "message": "is required"},
        {"field": "body.address.city", "message": "is longer than 200 characters"},
    ]


@pytest.mark.parametrize("exc", [problems.BadRequest("x"), jsonbody.InvalidJSON("x"), RuntimeError("x")])
def test_only_validation_errors_carry_errors(exc):
    assert "errors" not in body_of(problem_response(exc))


def test_405_carries_allow():
    response = problem_response(router.MethodNotAllowed("POST", ["DELETE", "GET", "PUT"]))
    assert response.status == 405
    assert header(response, "Allow") == "DELETE, GET, PUT"


@pytest.mark.parametrize("cls", [jwt.TokenError, jwt.TokenExpired, jwt.BadSignature, jwt.MalformedToken,
                                 jwt.UnsupportedAlgorithm, jwt.MissingClaim, jwt.InvalidClaim])
def test_token_errors_carry_an_invalid_token_challenge(cls):
    response = problem_response(cls("the token is not acceptable"))
    assert response.status == 401
    assert header(response, "WWW-Authenticate") == 'Bearer error="invalid_token"'


def test_http_error_headers_are_passed_through():
    response = problem_response(problems.TooManyRequests("slow down", headers=(("Retry-After", "7"),)))
    assert response.status == 429
    assert header(response, "Retry-After") == "7"
    assert header(response, "Content-Type") == PROBLEM_TYPE


def test_http_error_can_pass_several_headers():
    exc = problems.Unauthorized("a bearer token is required",
                                headers=(("WWW-Authenticate", "Bearer"), ("Cache-Control", "no-store")))
    response = problem_response(exc)
    assert header(response, "WWW-Authenticate") == "Bearer"
    assert header(response, "Cache-Control") == "no-store"


@pytest.mark.parametrize("exc", [problems.Forbidden("x"), store_errors.NotFound("x"), RuntimeError("x")])
def test_other_problems_add_no_headers_beyond_content_type(exc):
    assert [name for name, _ in problem_response(exc, APPLICATION_STATUSES).headers] == ["Content-Type"]
