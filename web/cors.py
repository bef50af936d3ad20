"""Cross-origin requests: which web pages on other origins may call the API (the CORS
protocol of the WHATWG Fetch standard, https://fetch.spec.whatwg.org/#http-cors-protocol).

A browser lets a page read a response from another origin only if the response says
so. An origin is a scheme, a host and a port: `https://app.example.org` and
`http://127.0.0.1:5173` are two. For a request a form could not have sent (a JSON
body, an `Authorization` header, a PUT), the browser first asks with a *preflight*:

    OPTIONS /patients                          HTTP/1.1 204 No Content
    Origin: https://app.example.org     →      Access-Control-Allow-Origin: https://app.example.org
    Access-Control-Request-Method: POST        Access-Control-Allow-Methods: GET, HEAD, POST
    Access-Control-Request-Headers:            Access-Control-Allow-Headers: Authorization, Content-Type, ...
        authorization, content-type            Access-Control-Max-Age: 600
                                               Vary: Origin

and sends the real request only if the answer allows it; the real response must name
the origin again, and lists in `Access-Control-Expose-Headers` the headers the page's
script may read beyond the few every page may.

`CorsPolicy` is the decision, free of I/O: the dispatcher asks it for the headers of
a preflight and of every response. An origin not in the list gets no CORS headers at
all, and the browser keeps the response from the page; the server itself answers as
it would anyway, since CORS protects the user's browser, not the server (a non-browser
client ignores it all).

NOTE: no `Access-Control-Allow-Credentials`. The API authenticates with a bearer token
the page sends itself, never with cookies, so a page can only use a token it was given.

NOTE: a preflight is a request like any other to the rate limit (web/dispatch.py): it
is cheap to answer but not free, and an unlimited kind of request would be the one to
flood. A browser keeps a preflight's answer for `MAX_AGE` seconds per URL, so an app
calling many different URLs spends up to half its limit on them.
"""

import re

# What a page may send: a token, a body's type, a version for conditional requests, and
# a byte range to resume a download (Fetch safelists only some Range values by itself).
ALLOWED_REQUEST_HEADERS = ("Authorization", "Content-Type", "If-Match", "If-None-Match", "Range", "If-Range")
# What its script may read beyond Fetch's CORS-safelisted response-header names (Cache-
# Control, Content-Type, Content-Length and a few more).
EXPOSED_HEADERS = ("Location", "ETag", "Retry-After", "X-Request-Id", "WWW-Authenticate", "Allow", "Accept-Patch",
                   "Content-Disposition", "Content-Range", "Accept-Ranges")
MAX_AGE = 600  # seconds a browser may keep a preflight's answer
# Joined once: these go on every answer.
_ALLOWED_LOWER = frozenset(name.lower() for name in ALLOWED_REQUEST_HEADERS)
_ALLOWED_VALUE = ", ".join(ALLOWED_REQUEST_HEADERS)
_EXPOSED_VALUE = ", ".join(EXPOSED_HEADERS)

# An origin as a browser serializes it (the HTML standard's "serialization of an
# origin"): scheme "://" host [":" port], lower case, no path, no trailing slash.
ORIGIN = re.compile(r"(https?)://([a-z0-9.\-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?")
DEFAULT_PORTS = {"http": "80", "https": "443"}


def parse_origins(text: str) -> frozenset[str]:
    """A comma-separated list of origins, each in its serialization; ValueError if one is not.

    A scheme's default port is refused rather than kept: a browser never writes it, so
    "https://app.example.org:443" would silently match no page."""
    origins = frozenset(part.strip().lower() for part in text.split(",") if part.strip())
    for origin in origins:
        match = ORIGIN.fullmatch(origin)
        if not match:
            raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        if match[3] == DEFAULT_PORTS[match[1]]:
            raise ValueError(f"{origin!r}: leave out the default port, as browsers do")
    return origins


class CorsPolicy:
    """The origins allowed to call the API from a browser, and the headers that say so."""

    def __init__(self, origins: frozenset[str], *, max_age: int = MAX_AGE):
        self.origins = origins
        self.max_age = max_age

    def allows(self, origin: str | None) -> bool:
        # Fetch's "CORS check": the origin is compared with the list byte for byte.
        return origin is not None and origin in self.origins

    @staticmethod
    def is_preflight(method: str, headers) -> bool:
        """Fetch's "CORS-preflight request": an OPTIONS with Origin and Access-Control-Request-Method."""
        return (method == "OPTIONS" and headers.get("Origin") is not None
                and headers.get("Access-Control-Request-Method") is not None)

    def preflight_headers(self, origin: str | None, requested_method: str, requested_headers: str,
                          allowed_methods: list[str]) -> list[tuple[str, str]]:
        """The answer to a preflight: permission for this origin, or only `Vary` when the
        origin, the method or one of the headers it asks for is not allowed."""
        wanted = {name.strip().lower() for name in requested_headers.split(",") if name.strip()}
        if (not self.allows(origin) or requested_method not in allowed_methods
                or not wanted <= _ALLOWED_LOWER):
            return [("Vary", "Origin")]
        return [("Access-Control-Allow-Origin", origin),
                ("Access-Control-Allow-Methods", ", ".join(allowed_methods)),
                ("Access-Control-Allow-Headers", _ALLOWED_VALUE),
                ("Access-Control-Max-Age", str(self.max_age)),
                ("Vary", "Origin")]

    def response_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """What every other response carries. `Vary: Origin` always (the answer depends on
        the Origin header, so no cache may hand one origin's answer to another)."""
        if not self.allows(origin):
            return [("Vary", "Origin")]
        return [("Access-Control-Allow-Origin", origin),
                ("Access-Control-Expose-Headers", _EXPOSED_VALUE),
                ("Vary", "Origin")]
