"""What a test run leaves behind: processes it started that still run, and sockets still listening.

A test that starts a process must stop it whatever happens; this is the check that it
did. The run marks itself with an environment variable that every process it starts
inherits (`mark_this_run`), so at the end its processes are found by that mark — even
one whose parent has died and that was handed to init — not by guessing from command
lines. Two things count as left behind:

- a process that carries the mark and has not exited (a zombie has: it only waits to
  be reaped);
- a socket of the test run itself that still listens (a server a fixture did not stop).

Linux's /proc is where processes and sockets can be read; elsewhere nothing is found
and the check says so.
"""

import os
import secrets
import signal
import time

from tests.support.platforms import PROC

MARK = "MEDITRACK_TEST_RUN"
LISTEN = "0A"  # a TCP socket's state in /proc/net/tcp: listening (include/net/tcp_states.h)


def mark_this_run() -> str:
    token = secrets.token_hex(8)
    os.environ[MARK] = token
    return token


def this_run() -> str:
    return os.environ[MARK]


def can_look() -> bool:
    return (PROC / "self" / "fd").is_dir()


def marked_processes(token: str) -> dict[int, str]:
    """pid → command line of every process (but this one) that carries the run's mark."""
    wanted, found = f"{MARK}={token}".encode(), {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone meanwhile, or not ours to read
        if state != "Z":
            found[int(entry.name)] = command
    return found


def listening_ports_of(pid: int) -> list[int]:
    """The TCP ports a process's sockets listen on."""
    try:
        inodes = {os.readlink(fd)[len("socket:["):-1] for fd in (PROC / str(pid) / "fd").iterdir()
                  if os.readlink(fd).startswith("socket:[")}
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    ports = []
    for table in ("tcp", "tcp6"):
        try:
            rows = (PROC / "net" / table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == LISTEN and fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def left_behind(token: str, *, settle: float = 5.0) -> list[str]:
    """What the run left, as lines to show; a process that is exiting gets `settle`
    seconds (it was told to stop, and may be draining). Whatever is left is killed
    afterwards, so that the machine is clean whatever the verdict."""
    deadline = time.monotonic() + settle
    while (processes := marked_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [f"process {pid} still runs (listening on {listening_ports_of(pid) or 'no port'}): {command}"
             for pid, command in processes.items()]
    lines += [f"this test process still listens on port {port}" for port in listening_ports_of(os.getpid())]
    for pid in processes:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return lines
