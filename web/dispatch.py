"""The request pipeline: what happens to every request between the socket and a handler.

    request id → client address → route → rate limit → body limit → authenticate
               → admit (the observer may refuse) → Request → handler
                                any exception → problem+json → the observer is told
    (a CORS preflight is answered after the rate limit, before authentication; and
     with a CORS policy, every answer gets its headers: web/cors.py)

Each step either passes the request on or raises; `problem_response` turns whatever
was raised into the one right status. Handlers therefore only ever see requests that
are within limits, routed, and (where the route says so) authenticated. What the
steps learn (the client's address, the route, the user) is gathered first and the
handler's `Request` is built from it once, never changed afterwards (but for its
`facts`, where a handler leaves what only it knows for the audit event).

What the steps learn is kept in an `Exchange`. Once the response is decided — by the
handler or by a refusal at any step — the observer (the audit trail,
`handlers/audit_trail.py`) is told, exactly once per request, and the server logs it.
"""

import ipaddress
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence

from web.cors import CorsPolicy
from web.http11 import Headers
from web.messages import IncomingRequest, Request, Response, new_request_id
from web.problems import STATUS_BY_EXCEPTION, PayloadTooLarge, TooManyRequests, problem_response, status_for
from web.ratelimit import RateLimiter, retry_after_header
from web.router import MethodNotAllowed, Route, RouteNotFound, Router

error_log = logging.getLogger("meditrack.errors")

# A request id we take from a proxy: 1 to 128 visible ASCII characters, nothing that
# could break a log line or a header.
PROXY_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


def client_address(peer: str, forwarded_for: str | None, trusted_proxies: frozenset[str]) -> str:
    """The address a rate limit should count against.

    NOTE: X-Forwarded-For is written by whoever sends the request, so believing it
    would let any client pick a fresh address per request and never be limited. Only
    when the peer is a proxy we were told to trust do we read the header, right to
    left, skipping our own proxies: the first address they did not add is the client.
    """
    if peer not in trusted_proxies or not forwarded_for:
        return peer
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed hop: fall back to what we can see for ourselves
        if hop not in trusted_proxies:
            return hop
    return peer


def request_id(peer: str, proxied: str | None, trusted_proxies: frozenset[str]) -> str:
    """The request's id: the one a trusted proxy gave it (so one request can be followed
    from the proxy's log to ours), or a new one. A client's own X-Request-Id is not
    believed: it could pose as another request's."""
    if proxied is not None and peer in trusted_proxies and PROXY_REQUEST_ID.fullmatch(proxied):
        return proxied
    return new_request_id()


@dataclass
class Exchange:
    """One request's way through the pipeline: what each step learnt, however far it got."""
    incoming: IncomingRequest
    request_id: str
    client: str = ""
    route: Route | None = None
    params: dict[str, str] = field(default_factory=dict)
    user: dict | None = None        # set once authentication succeeds
    facts: dict = field(default_factory=dict)  # what the handler left for the audit event

    @property
    def template(self) -> str:
        """The route's template, or "-" when no route matched (for the access log)."""
        return self.route.template if self.route else "-"


# How an error becomes a response: the exception and the table of statuses in, the
# response out. `problem_response` (RFC 9457) unless a route prefix asks for another.
ErrorWriter = Callable[[BaseException, Mapping[type, int]], Response]


class Observer(Protocol):
    """Watches every request; the audit trail is one."""

    def admit(self, exchange: Exchange) -> None:
        """Called just before the handler runs: raise to refuse the request."""

    def answered(self, exchange: Exchange, status: int) -> None:
        """Called once per request, whatever its outcome, with the status answered."""


class Dispatcher:
    """The pipeline, configured once: the routes, how to authenticate, the limits, and
    the application's own exceptions with the status each deserves."""

    def __init__(self, router: Router, *, authenticate: Callable[[Headers], dict] | None = None,
                 max_body: int, exception_statuses: Mapping[type, int] | None = None,
                 general_limit: RateLimiter | None = None,
                 trusted_proxies: frozenset[str] = frozenset(), refusal_delay: float = 1.0,
                 observer: Observer | None = None, sleep: Callable[[float], None] = time.sleep,
                 error_formats: Sequence[tuple[str, ErrorWriter]] = (), cors: CorsPolicy | None = None):
        if authenticate is None and any(route.auth for route in router.routes):
            raise ValueError("routes require authentication, but no authenticate function was given")
        self.router = router
        self.authenticate = authenticate  # request headers → the user, or raises
        self.max_body = max_body          # default for routes that do not set their own
        # The web layer's table, then the application's: a later entry wins.
        self.statuses = {**STATUS_BY_EXCEPTION, **(exception_statuses or {})}
        self.general_limit = general_limit
        self.trusted_proxies = trusted_proxies
        self.refusal_delay = refusal_delay
        self.observer = observer
        self.sleep = sleep
        # (path prefix, writer): errors under a prefix in another format than problem+json
        # (FHIR's OperationOutcome under /fhir/); the first prefix that matches wins.
        self.error_formats = tuple(error_formats)
        self.cors = cors  # None: no CORS headers at all, and OPTIONS is a 405 like any unknown method

    def __call__(self, incoming: IncomingRequest) -> tuple[Response, Exchange]:
        """The response to a request, and the exchange that led to it (its route, its
        id, its user), for the access log."""
        exchange = Exchange(incoming, request_id(incoming.peer, incoming.headers.get("X-Request-Id"),
                                                 self.trusted_proxies))
        preflight = self.cors is not None and self.cors.is_preflight(incoming.method, incoming.headers)
        try:
            exchange.client = client_address(incoming.peer, incoming.headers.get("X-Forwarded-For"),
                                             self.trusted_proxies)
            # The route is found before the rate limit is checked, so that a refused
            # request is still known by its route; an unknown path is limited all the same.
            unrouted = None
            try:
                exchange.route, exchange.params = self.router.match(incoming.method, incoming.path)
            except (RouteNotFound, MethodNotAllowed) as exc:
                unrouted = exc
            self._check_rate(self.general_limit, exchange.client)
            if preflight:
                response = self._preflight(incoming, unrouted)
            elif unrouted is not None:
                raise unrouted
            else:
                response = self._handle(exchange)
        except Exception as exc:
            if status_for(exc, self.statuses) == 500:
                # The traceback names code, not data; the request body is never logged.
                error_log.exception("unhandled error in %s %s", incoming.method, exchange.template)
            response = self._error_writer(incoming.path)(exc, self.statuses)
        if self.cors is not None and not (preflight and response.status == 204):
            response.headers = [*response.headers, *self.cors.response_headers(incoming.headers.get("Origin"))]
        if self.observer is not None:
            try:
                self.observer.answered(exchange, response.status)
            except Exception:  # the answer stands; the failure is in the log for someone to fix
                error_log.exception("the observer failed on %s %s", incoming.method, exchange.template)
        return response, exchange

    def _preflight(self, incoming: IncomingRequest, unrouted: Exception | None) -> Response:
        """A CORS preflight (web/cors.py): 204, with the permission when the policy gives
        it; 404 for a path no route has. A preflight carries no credentials (Fetch
        §3.2.2), so it is answered before authentication, and no handler runs."""
        if not isinstance(unrouted, MethodNotAllowed):
            raise unrouted or RouteNotFound()  # no route answers OPTIONS: a known path is always a 405 here
        headers = self.cors.preflight_headers(incoming.headers.get("Origin"),
                                              incoming.headers.get("Access-Control-Request-Method"),
                                              incoming.headers.get("Access-Control-Request-Headers", ""),
                                              unrouted.allowed)
        return Response(204, headers=headers)

    def refusal(self, error: Exception) -> Response:
        """The answer to a request the server refused before dispatching it (a malformed
        head: web/http11.py), in the error format of its path when the path is known."""
        return self._error_writer(getattr(error, "path", None) or "")(error, self.statuses)

    def _error_writer(self, path: str) -> ErrorWriter:
        return next((writer for prefix, writer in self.error_formats if path.startswith(prefix)), problem_response)

    def _handle(self, exchange: Exchange) -> Response:
        incoming, route = exchange.incoming, exchange.route
        self._check_rate(route.rate_limit, exchange.client)  # the route's own limit, if it has one
        max_body = self.max_body if route.max_body is None else route.max_body
        if incoming.content_length > max_body:
            # Refused before a byte of the body is read (and before any 100 Continue).
            raise PayloadTooLarge(f"the body is larger than {max_body} bytes")
        if route.auth:
            exchange.user = self.authenticate(incoming.headers)
        request = Request(method=incoming.method, path=incoming.path, query=incoming.query,
                          headers=incoming.headers, body=incoming.body,
                          content_length=incoming.content_length, client=exchange.client,
                          route=route.template, params=exchange.params, user=exchange.user,
                          request_id=exchange.request_id, facts=exchange.facts)
        if self.observer is not None:
            self.observer.admit(exchange)
        return route.handler(request)

    def _check_rate(self, limiter: RateLimiter | None, client: str) -> None:
        if limiter is None:
            return
        wait = limiter.check(client)
        if wait > 0:
            # NOTE: a refusal still costs us a parsed request, and a client that ignores
            # Retry-After can ask for thousands a second, taking the CPU every other client
            # needs (a login storm did: ten thousand 429s a second). Holding the refusal
            # for a moment — a tarpit — caps each connection at one refused request per
            # `refusal_delay`; the cost is one sleeping thread per such connection, and
            # the connection cap bounds those.
            self.sleep(min(self.refusal_delay, wait))
            # RFC 6585 §4: 429, and Retry-After says when trying again can succeed.
            raise TooManyRequests("too many requests; slow down",
                                  headers=(("Retry-After", retry_after_header(wait)),))
