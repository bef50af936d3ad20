"""Marks for the tests that need what only some systems have (system.py says which).

On Linux, where CI runs, none of them skips. On macOS the tests that read /proc skip;
on Windows those and the ones that fork or send POSIX signals do: what they test
(the `--workers` machinery, a kill -9 mid-request) does not exist there.
"""

import os
import signal
from pathlib import Path

import pytest

import system

PROC = Path("/proc")  # Linux's view of its processes and sockets (proc(5)); macOS and Windows have none

needs_fork = pytest.mark.skipif(not system.CAN_FORK, reason="needs os.fork (Linux, macOS)")
needs_proc = pytest.mark.skipif(not (PROC / "self" / "fd").is_dir(), reason="reads /proc (Linux)")
needs_sigkill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="sends SIGKILL (POSIX)")
# Stopping a child process with SIGTERM or SIGINT and expecting it to drain: POSIX. On
# Windows, Popen.send_signal(SIGTERM) is TerminateProcess (an abrupt end, like kill -9)
# and a console program is asked to stop with Ctrl-C or Ctrl-Break events instead.
needs_posix_signals = pytest.mark.skipif(os.name != "posix", reason="stops a child with a POSIX signal")


def require_proc() -> None:
    """The check every reader of /proc makes first: where there is none, the test that
    asked is skipped rather than failed (tests/test_platforms.py checks that each asks)."""
    if not (PROC / "self" / "fd").is_dir():
        pytest.skip("reads /proc (Linux)")
