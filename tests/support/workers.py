"""Which worker process holds a test's connection, read from Linux's tables: no header
in the API says which worker answered, and none is needed.

A connection the kernel has given to a worker (its `accept` returned) is a socket in
/proc/net/tcp, named by an inode, and that worker has a file descriptor linked to
`socket:[inode]` in /proc/<pid>/fd. Until a worker accepts it, the connection waits in
the listening socket's queue with inode 0, owned by no one.
"""

import json
import os

from tests.support.deployment import until
from tests.support.platforms import require_proc
from tests.support.raw_http import RawConnection, http_request
from tests.support.tcp import tcp_sockets


def server_side_inode(server_port: int, client_port: int) -> int:
    """The inode of the server's end of the connection from `client_port`; 0 if none yet."""
    return next((sock.inode for sock in tcp_sockets()
                 if sock.local_port == server_port and sock.remote_port == client_port), 0)


def owner_of_socket(inode: int, pids) -> int | None:
    require_proc()
    link = f"socket:[{inode}]"
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == link:
                    return pid
        except (FileNotFoundError, ProcessLookupError):
            continue  # that worker has gone (or the descriptor closed as we looked)
    return None


def worker_of(server, connection: RawConnection, pids, timeout: float = 5.0) -> int:
    """The pid (among `pids`) of the worker that accepted `connection`."""
    client_port = connection.sock.getsockname()[1]
    found = []

    def accepted() -> bool:
        inode = server_side_inode(server.port, client_port)
        owner = owner_of_socket(inode, pids) if inode else None
        found[:] = [owner] if owner else []
        return bool(found)

    assert until(accepted, timeout=timeout), f"no worker of {sorted(pids)} accepted the connection"
    return found[0]


def connection_to(server, pid: int, pids, attempts: int = 200) -> RawConnection:
    """A connection that worker `pid` has accepted: new connections are opened until
    the kernel gives one to it (those given to another worker are closed)."""
    for _ in range(attempts):
        connection = RawConnection(server, 10.0)
        if worker_of(server, connection, pids) == pid:
            return connection
        connection.close()
    raise AssertionError(f"worker {pid} accepted none of {attempts} connections")


def request_on_worker(server, pid: int, pids, method: str, path: str, *, token: str | None = None,
                      body: dict | None = None):
    """One request answered by worker `pid`, on a connection of its own."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = b""
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    with connection_to(server, pid, pids) as connection:
        return connection.request(http_request(method, path, headers={**headers, "Connection": "close"}, body=data))
