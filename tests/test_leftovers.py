"""The session-end check (tests/support/leftovers.py): it must see a process the run
started and left running, by the mark it inherited, and the port it listens on; and
nothing once the process is gone."""

import os
import subprocess
import sys

from tests.support import leftovers
from tests.support.deployment import PROCESS_EXIT, until
from tests.support.platforms import require_proc

LISTENER = ("import socket, sys, time\n"
            "server = socket.create_server(('127.0.0.1', 0))\n"
            "print(server.getsockname()[1], flush=True)\n"
            "time.sleep(60)\n")


def test_a_process_the_run_started_is_found_with_its_port_until_it_has_gone():
    require_proc()
    child = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        found = leftovers.marked_processes(leftovers.this_run())
        assert child.pid in found and "create_server" in found[child.pid]
        assert leftovers.listening_ports_of(child.pid) == [port]
    finally:
        child.kill()
        child.wait(timeout=PROCESS_EXIT)
        child.stdout.close()
    assert until(lambda: child.pid not in leftovers.marked_processes(leftovers.this_run()), timeout=PROCESS_EXIT)


def test_a_process_of_another_run_is_not_this_runs():
    require_proc()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             env={**os.environ, leftovers.MARK: "another-run"})
    try:
        assert child.pid not in leftovers.marked_processes(leftovers.this_run())
    finally:
        child.kill()
        child.wait(timeout=PROCESS_EXIT)
