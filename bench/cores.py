"""What a second core and a second process give, for `make bench` (bench/run.py).

- `ceiling_server`: the ceiling (bench/ceiling.py) answering with given bytes, in one
  process or several sharing one socket, as `--workers` does;
- `cpu_rows`: the server's CPU time per request at 1 and at 32 connections, beside the
  ceiling's: what a request costs, and what 32 threads at once add to it;
- `workers_rows`: `--workers 2` against one process, and the ceiling in two processes
  against one, with the cores shared and with wrk pinned to a core of its own.
"""

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
import requests

from bench.measure import BENCH, alternate, cpu_per_request, wait_for_port
from bench.processes import pin
from bench.soak import start_server

def body_of(url: str, env: dict) -> bytes:
    """The bytes an authenticated GET of `url` answers (wrk's token, from `env`)."""
    return requests.get(url, headers={"Authorization": f"Bearer {env['BENCH_TOKEN']}"}, timeout=30).content


@contextlib.contextmanager
def ceiling_server(body: bytes, processes: int = 1):
    """A ceiling (bench/ceiling.py) answering with `body`, in `processes` processes: its
    URL and the parent's pid."""
    with tempfile.NamedTemporaryFile(suffix=".body", delete=False) as body_file:
        body_file.write(body)
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    ceiling = subprocess.Popen([sys.executable, str(BENCH / "ceiling.py"), str(port), body_file.name, str(processes)])
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}/", ceiling.pid
    finally:
        ceiling.terminate()
        ceiling.wait(timeout=10)
        os.unlink(body_file.name)


def cpu_rows(read_url: str, pid: int, env: dict, seconds: float) -> dict:
    """CPU time per authenticated read at 1 and at 32 connections, MediTrack's and the
    ceiling's: what a request costs, and what running 32 threads at once adds to it."""
    body = body_of(read_url, env)
    rows = {}
    with ceiling_server(body) as (ceiling_url, ceiling_pid):
        for connections in (1, 32):
            rows[str(connections)] = {
                "api": cpu_per_request(read_url, pid, connections=connections, seconds=seconds,
                                       script="bearer.lua", env=env),
                "ceiling": cpu_per_request(ceiling_url, ceiling_pid, connections=connections, seconds=seconds)}
    return rows


def workers_rows(data_dir: Path, environ: dict, single: int, url: str, read_path: str, env: dict, rounds: int,
                 seconds: float) -> dict:
    """The authenticated read with --workers 2 against --workers 1 (process `single`, at
    `url`), and the ceiling in 2 processes against 1, each pair measured in turn. Twice:
    with wrk and the servers sharing every core, then with wrk pinned to CPU 0 and the
    servers to the others, so that wrk's own CPU time is not taken from the servers."""
    cores = len(os.sched_getaffinity(0))
    two, two_url = start_server(data_dir, {**environ, "MEDITRACK_WORKERS": "2"})
    body = body_of(url + read_path, env)
    results = {"cores": cores}
    try:
        with ceiling_server(body) as (one_ceiling, one_pid), ceiling_server(body, 2) as (two_ceiling, two_pid):
            layouts = {"shared": None, "pinned": "0"} if cores >= 2 else {"shared": None}
            for layout, wrk_cpus in layouts.items():
                if wrk_cpus is not None:
                    for pid in (single, two.pid, one_pid, two_pid):
                        pin(pid, f"1-{cores - 1}")
                results[layout] = {
                    "read": alternate(two_url + read_path, url + read_path, rounds=rounds, seconds=seconds,
                                      script="bearer.lua", ceiling_script="bearer.lua", env=env, cpus=wrk_cpus),
                    "ceiling": alternate(two_ceiling, one_ceiling, rounds=rounds, seconds=seconds, cpus=wrk_cpus)}
            pin(single, f"0-{cores - 1}")  # the single server goes on with the rest of the bench
    finally:
        two.terminate()
        two.wait(timeout=30)
    return results
