"""tests/ferretdb.py leaves nothing behind: after the command it ran ends, or after the
run is interrupted as Ctrl-C interrupts it (SIGINT to the whole process group), no
FerretDB or PostgreSQL process is left and their temp directories are gone.

Runs under `make test-mongo` (which names the FerretDB binary), with the backend of that run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.platforms import require_proc

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "ferretdb.py"
# The command the harness runs: says where FerretDB and PostgreSQL are, then waits for a
# line on its standard input (the test's word to finish).
REPORT_AND_WAIT = ("import os, sys; "
                   "print(os.environ['MEDITRACK_TEST_MONGODB_URI'], os.environ.get('MEDITRACK_POSTGRESQL_URL', '-'), "
                   "flush=True); sys.stdin.readline()")
DEADLINE = 60.0


def processes_mentioning(text: str) -> list[str]:
    """The command lines of running processes that contain `text` (from /proc)."""
    require_proc()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # gone meanwhile
            if text in command and "pytest" not in command:
                found.append(command)
    return found


def start_harness():
    harness = subprocess.Popen([sys.executable, str(HARNESS), "--", sys.executable, "-c", REPORT_AND_WAIT],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               start_new_session=True, cwd=ROOT)
    mongodb_uri, postgresql_url = harness.stdout.readline().split()
    ferretdb_port = mongodb_uri.rsplit(":", 1)[1].strip("/")
    postgresql_port = None if postgresql_url == "-" else postgresql_url.rsplit(":", 1)[1].strip("/")
    return harness, ferretdb_port, postgresql_port


def left_behind(ferretdb_port: str, postgresql_port: str | None, cluster_dirs: list[str]) -> list[str]:
    left = processes_mentioning(f"--listen-addr=127.0.0.1:{ferretdb_port}")
    if postgresql_port:
        left += processes_mentioning(f"-p {postgresql_port} ")
    left += [directory for directory in cluster_dirs if Path(directory).exists()]
    return left


def cluster_directories(postgresql_port: str | None) -> list[str]:
    """The data directory the cluster's postmaster was started on (its `-D`)."""
    if postgresql_port is None:
        return []
    directories = []
    for command in processes_mentioning(f"-p {postgresql_port} "):
        words = command.split()
        if "-D" in words:
            directories.append(words[words.index("-D") + 1])
    assert directories, "the cluster's postmaster was not found"
    return directories


def wait_for_exit(harness) -> int:
    try:
        return harness.wait(timeout=DEADLINE)
    finally:
        if harness.poll() is None:
            os.killpg(harness.pid, signal.SIGKILL)
            harness.wait(timeout=10)


@pytest.mark.parametrize("interrupted", [False, True], ids=["finished", "ctrl-c"])
def test_nothing_is_left_running(interrupted):
    harness, ferretdb_port, postgresql_port = start_harness()
    clusters = cluster_directories(postgresql_port)
    assert processes_mentioning(f"--listen-addr=127.0.0.1:{ferretdb_port}"), "FerretDB was not running"
    if interrupted:
        os.killpg(harness.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    else:
        harness.stdin.write("done\n")
        harness.stdin.flush()
    status = wait_for_exit(harness)
    assert status == (130 if interrupted else 0)
    deadline = time.monotonic() + 10
    while left_behind(ferretdb_port, postgresql_port, clusters) and time.monotonic() < deadline:
        time.sleep(0.1)  # processes already told to stop, being reaped: nothing to tick
    assert left_behind(ferretdb_port, postgresql_port, clusters) == []
