"""The request pipeline: what happens to every request between the socket and a handler.

    client address → rate limit → route → body limit → authenticate → Request → handler
                                                   any exception → problem+json

Each step either passes the request on or raises; `problem_response` turns whatever
was raised into the one right status. Handlers therefore only ever see requests that
are within limits, routed, and (where the route says so) authenticated. What the
steps learn (the client's address, the route, the user) is gathered first and the
handler's `Request` is built from it once, never changed afterwards.
"""

import ipaddress
import logging
import time
from typing import Callable, Mapping

from web.http11 import Headers
from web.messages import IncomingRequest, Request, Response
from web.problems import STATUS_BY_EXCEPTION, PayloadTooLarge, TooManyRequests, problem_response, status_for
from web.ratelimit import RateLimiter, retry_after_header
from web.router import Route, Router

error_log = logging.getLogger("meditrack.errors")


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


class Dispatcher:
    """The pipeline, configured once: the routes, how to authenticate, the limits, and
    the application's own exceptions with the status each deserves."""

    def __init__(self, router: Router, *, authenticate: Callable[[Headers], dict] | None = None,
                 max_body: int, exception_statuses: Mapping[type, int] | None = None,
                 general_limit: RateLimiter | None = None, credentials_limit: RateLimiter | None = None,
                 trusted_proxies: frozenset[str] = frozenset(), refusal_delay: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep):
        if authenticate is None and any(route.auth for route in router.routes):
            raise ValueError("routes require authentication, but no authenticate function was given")
        self.router = router
        self.authenticate = authenticate  # request headers → the user, or raises
        self.max_body = max_body          # default for routes that do not set their own
        # The web layer's table, then the application's: a later entry wins.
        self.statuses = {**STATUS_BY_EXCEPTION, **(exception_statuses or {})}
        self.general_limit = general_limit
        self.credentials_limit = credentials_limit
        self.trusted_proxies = trusted_proxies
        self.refusal_delay = refusal_delay
        self.sleep = sleep

    def __call__(self, incoming: IncomingRequest) -> tuple[Response, str]:
        """The response to a request, and the template of the route that answered it
        ("-" when none did), for the access log."""
        route = None
        try:
            client = client_address(incoming.peer, incoming.headers.get("X-Forwarded-For"),
                                    self.trusted_proxies)
            self._check_rate(self.general_limit, client)
            route, params = self.router.match(incoming.method, incoming.path)
            return self._handle(incoming, client, route, params), route.template
        except Exception as exc:
            template = route.template if route else "-"
            if status_for(exc, self.statuses) == 500:
                # The traceback names code, not data; the request body is never logged.
                error_log.exception("unhandled error in %s %s", incoming.method, template)
            return problem_response(exc, self.statuses), template

    def _handle(self, incoming: IncomingRequest, client: str, route: Route, params: dict[str, str]) -> Response:
        if route.credentials:
            # A stricter bucket where passwords are checked: it slows guessing and
            # keeps a storm of bcrypt work from starving every other request.
            self._check_rate(self.credentials_limit, client)
        max_body = self.max_body if route.max_body is None else route.max_body
        if incoming.content_length > max_body:
            # Refused before a byte of the body is read (and before any 100 Continue).
            raise PayloadTooLarge(f"the body is larger than {max_body} bytes")
        user = self.authenticate(incoming.headers) if route.auth else None
        request = Request(method=incoming.method, path=incoming.path, query=incoming.query,
                          headers=incoming.headers, body=incoming.body,
                          content_length=incoming.content_length, client=client,
                          route=route.template, params=params, user=user)
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
