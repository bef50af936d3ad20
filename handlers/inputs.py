"""Reading what a client sent: a JSON body, an id in the path, a number in the query.

Every handler that takes input goes through these few functions, so a malformed id or
a body with the wrong Content-Type is refused the same way on every route.
"""

import re

from storage.ids import is_object_id
from web.grammar import MalformedParameters, parse_parameters
from web.jsonbody import parse_json
from web.problems import BadRequest, UnsupportedMediaType


# A Host header we echo into URLs: a name or an address, and a port (RFC 9110 §7.2).
HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def base_url(request, public_url: str | None) -> str:
    """Where clients reach us, for a URL we hand out (FHIR's fullUrl, a download link):
    the public URL if one is set (behind a TLS proxy it is the only way to know the
    scheme); else http:// and the request's Host. A Host that is not a plain name or
    address (it is the client's to write) is not echoed: "localhost" stands in for it."""
    if public_url:
        return public_url
    host = request.headers.get("Host", "")
    return f"http://{host if HOST.fullmatch(host) else 'localhost'}"


def content_type(request) -> tuple[str, dict[str, str]]:
    """The body's media type, lower-cased ("application/json"), and its parameters."""
    try:
        return parse_parameters(request.headers.get("Content-Type", ""))
    except MalformedParameters:
        raise BadRequest("the Content-Type header is malformed") from None


def read_json(request, media_type: str = "application/json", *, refusal_headers=()):
    """The request body as JSON; 415 (with `refusal_headers`) unless it is declared
    `media_type`: application/json, or a JSON-based type such as a merge patch's."""
    declared, parameters = content_type(request)
    # RFC 9110 §15.5.16: 415 when the content is in a format the resource does not take.
    if declared != media_type:
        raise UnsupportedMediaType(f"the body must be {media_type}", headers=refusal_headers)
    # RFC 9110 §8.3.2: the charset value is case-insensitive.
    if parameters.get("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedMediaType("JSON bodies must be UTF-8 (RFC 8259 §8.1)")
    raw = request.body.read()
    if not raw:
        raise BadRequest("a JSON body is required")
    return parse_json(raw)


def object_id(value: str, name: str) -> str:
    """A value that must be an id: 24 lower-case hex digits, else 400."""
    if not is_object_id(value):
        raise BadRequest(f"{name} must be a 24-character hexadecimal id")
    return value


def path_id(request, name: str) -> str:
    return object_id(request.params[name], name)


def query_value(request, name: str, *, max_length: int = 100) -> str | None:
    """One value of a query parameter, or None when absent; repeated or oversize → 400."""
    values = request.query.get(name)
    if values is None:
        return None
    if len(values) > 1:
        raise BadRequest(f"the query parameter {name} may be given only once")
    value = values[0]
    if len(value) > max_length or "\x00" in value:
        raise BadRequest(f"the query parameter {name} is too long or contains NUL")
    return value


MAX_PAGE_SIZE = 100  # items per page of a cursor-paged list (openapi.json: the limit parameter)
DEFAULT_PAGE_SIZE = 20


def query_id(request, name: str) -> str | None:
    """A query parameter that must be an id, or None when absent."""
    value = query_value(request, name)
    return None if value is None else object_id(value, name)


def page_request(request) -> tuple[int, str | None]:
    """?limit= and ?cursor= of a cursor-paged list: how many items, and the id of the
    last item of the previous page (None for the first page)."""
    limit = query_int(request, "limit", default=DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE)
    return limit, query_id(request, "cursor")


def page_of(items: list[dict], limit: int, key: str = "id") -> tuple[list[dict], str | None]:
    """A page from the `limit + 1` items a store was asked for, and the next page's
    cursor (the last item's `key`): the extra item, if it came back, says there is a
    next page."""
    page = items[:limit]
    return page, str(page[-1][key]) if len(items) > limit else None


def query_int(request, name: str, *, default: int | None, minimum: int, maximum: int) -> int | None:
    """An integer query parameter in [minimum, maximum]; digits only, so no '+5' or ' 5'."""
    text = query_value(request, name, max_length=10)
    return default if text is None else whole_number(text, name, minimum, maximum)


MAX_VERSION = 2**31 - 1  # far more changes than one record will ever see


def whole_number(text: str, name: str, minimum: int, maximum: int) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10 or not minimum <= int(text) <= maximum:
        raise BadRequest(f"{name} must be a whole number from {minimum} to {maximum}")
    return int(text)
