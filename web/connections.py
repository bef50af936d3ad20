"""Which connections are open and what each is doing: the server's defence against
clients that take a thread and never give it back.

A thread-per-connection server is exposed to three things: too many connections (one
thread each, without bound), slow clients that send a request a byte at a time to hold
their thread for ever ("slowloris" for the head, "slow POST" for the body), and a
shutdown that must not cut off the requests being served. `ConnectionRegistry` keeps
the facts each defence needs:

    admit / release       at most `max_connections` at once; the excess is refused
    waiting / working     when a connection began waiting for a request's head, and
                          whether a request is being served on it now
    reading_body          a body of n bytes has begun: it must be in within
                          header_timeout + n / min_body_rate seconds
    stalled()             connections past either deadline
    idle()                connections waiting for a request: safe to close at shutdown

It only keeps state; the server decides what to do with a socket. The clock is a
parameter, so tests move time by hand.
"""

import threading
import time
from dataclasses import dataclass


@dataclass
class ConnectionState:
    waiting_since: float | None = None   # when the connection began waiting for a request's head
    working: bool = False                # a request is being handled on it
    body_deadline: float | None = None   # when the body being read must have arrived


class ConnectionRegistry:
    def __init__(self, *, max_connections: int = 200, header_timeout: float = 10.0,
                 min_body_rate: float = 16 * 1024, clock=time.monotonic):
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.min_body_rate = min_body_rate  # bytes a second, on average over the whole body
        self._clock = clock
        self._states: dict[object, ConnectionState] = {}
        # NOTE: one lock for the table: the accept loop admits, every connection's
        # thread updates its own entry, and the housekeeping pass reads them all.
        self._changed = threading.Condition()

    def __len__(self) -> int:
        with self._changed:
            return len(self._states)

    def admit(self, connection) -> bool:
        """Register a new connection; False when `max_connections` are already open."""
        with self._changed:
            if len(self._states) >= self.max_connections:
                return False
            self._states[connection] = ConnectionState()
            return True

    def release(self, connection) -> None:
        with self._changed:
            self._states.pop(connection, None)
            self._changed.notify_all()

    # NOTE: the two methods below run twice per request, so they take no lock: each
    # connection's state is written only by the thread that serves it, a dict look-up
    # and an attribute write are atomic in CPython, and a pass that reads a state a
    # moment old merely acts on it one pass later.
    def waiting(self, connection) -> None:
        """The connection now waits for a request line and headers."""
        state = self._states.get(connection)
        if state is not None:
            state.working, state.waiting_since = False, self._clock()

    def working(self, connection, busy: bool = True) -> None:
        """The request's head has arrived (busy=True), or its response is sent (False)."""
        state = self._states.get(connection)
        if state is not None:
            state.waiting_since, state.working, state.body_deadline = None, busy, None

    def reading_body(self, connection, length: int) -> None:
        """A body of `length` bytes has begun to be read."""
        state = self._states.get(connection)
        if state is not None:
            state.body_deadline = self._clock() + self.header_timeout + length / self.min_body_rate

    def stalled(self) -> list:
        """Connections that have waited longer than `header_timeout` for a request's head,
        or whose body is arriving slower than `min_body_rate` allows."""
        now = self._clock()
        head_deadline = now - self.header_timeout
        with self._changed:
            return [connection for connection, state in self._states.items()
                    if (state.waiting_since is not None and state.waiting_since < head_deadline)
                    or (state.body_deadline is not None and state.body_deadline < now)]

    def idle(self) -> list:
        """Connections with no request in progress."""
        with self._changed:
            return [connection for connection, state in self._states.items() if not state.working]

    def all(self) -> list:
        with self._changed:
            return list(self._states)

    def wait_until_empty(self, timeout: float) -> bool:
        """Block until every connection is released, or `timeout` seconds pass."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._states, timeout)
