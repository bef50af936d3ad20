"""A router: path templates like `/patients/{patientId}` mapped to handler functions.

Templates are compiled to regular expressions once, when routes are added, and kept
by their first path segment, which must be literal, so a request is tried only against
the few templates that could match it. Matching
follows RFC 9110: a path no route knows is 404 Not Found (§15.5.5); a path that some
route knows, asked with a method none of its routes accepts, is 405 Method Not
Allowed (§15.5.6), and the response must list the methods that would work in `Allow`.
"""

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, NamedTuple
from urllib.parse import unquote

from web.ratelimit import RateLimiter

# A path parameter is one whole segment: it never spans a '/'.
PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RouteNotFound(Exception):
    """No route has this path."""

    def __init__(self):
        super().__init__("there is no resource at this path")


class MethodNotAllowed(Exception):
    def __init__(self, method: str, allowed: list[str]):
        super().__init__(f"{method} is not allowed here; allowed: {', '.join(allowed)}")
        self.allowed = allowed


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    handler: Callable
    pattern: re.Pattern = field(repr=False)
    auth: bool = False              # the request must carry a valid bearer token
    max_body: int | None = None     # the largest body accepted; None: the dispatcher's default
    # A rate limiter (anything with RateLimiter's `check`) that this route's requests
    # count against besides the general one, e.g. a stricter one where passwords are checked.
    rate_limit: RateLimiter | None = None
    # The application's own notes about the route, which neither the router nor the
    # dispatcher reads (the audit trail reads its "audit" tag: handlers/audit_trail.py).
    tags: Mapping[str, object] = field(default_factory=dict)


def compile_template(template: str) -> re.Pattern:
    """'/patients/{patientId}' -> ^/patients/(?P<patientId>[^/]+)$ (literal parts escaped)."""
    pattern, position = "", 0
    for parameter in PARAMETER.finditer(template):
        pattern += re.escape(template[position:parameter.start()]) + f"(?P<{parameter[1]}>[^/]+)"
        position = parameter.end()
    return re.compile(pattern + re.escape(template[position:]))


class _Template(NamedTuple):
    pattern: re.Pattern
    routes: dict[str, Route]  # method → route


class Router:
    def __init__(self):
        self.routes: list[Route] = []
        # Templates by their first path segment ("/patients/{patientId}" → "patients"), in
        # the order they were first added: a request is tried against the few templates
        # that share its first segment, once each, however many routes there are.
        self._templates: dict[str, dict[str, _Template]] = {}

    def add(self, method: str, template: str, handler: Callable, *, auth: bool = False,
            max_body: int | None = None, rate_limit: RateLimiter | None = None,
            tags: Mapping[str, object] | None = None) -> None:
        """Add a route. Its options are keyword parameters, so a misspelt one (`auht=True`)
        is a TypeError when the route table is built, never a route silently left open."""
        if not template.startswith("/") or PARAMETER.search(_first_segment(template)):
            raise ValueError(f"a template starts with / and a literal segment: {template!r}")
        route = Route(method, template, handler, compile_template(template),
                      auth=auth, max_body=max_body, rate_limit=rate_limit, tags=dict(tags or {}))
        by_template = self._templates.setdefault(_first_segment(template), {})
        routes = by_template.setdefault(template, _Template(route.pattern, {})).routes
        if method in routes:  # a second handler for one method and path would never run
            raise ValueError(f"{method} {template} is already a route")
        routes[method] = route
        self.routes.append(route)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for this request and its path parameters (percent-decoded)."""
        allowed = []
        for pattern, routes in self._templates.get(_first_segment(path), {}).values():
            found = pattern.fullmatch(path)
            if found is None:
                continue
            # RFC 9110 §9.3.2: HEAD is GET without the body, wherever GET is allowed.
            route = routes.get(method) or (routes.get("GET") if method == "HEAD" else None)
            if route is not None:
                return route, {name: unquote(value) for name, value in found.groupdict().items()}
            allowed += [name for route_method in routes
                        for name in (("GET", "HEAD") if route_method == "GET" else (route_method,))]
        if allowed:
            raise MethodNotAllowed(method, sorted(set(allowed)))
        raise RouteNotFound()


def _first_segment(path: str) -> str:
    """'/patients/65f1.../reports' -> 'patients'."""
    return path[1:].partition("/")[0]
