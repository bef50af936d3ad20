"""`make profile`: where a request's time goes in the server, by function.

    python bench/profile.py --py-spy PATH [--request read|list] [--connections 32] [--seconds 10]

Starts MediTrack on the embedded store (a user, and 31 patients like the bench's),
drives one request with wrk, and meanwhile samples the server from outside with
py-spy, a sampling profiler that reads a running process's stacks (the server runs
unmodified). Two figures come out:

- the server's CPU time per request (user + system, from /proc), the number the
  bench's "CPU per request" rows compare with the ceiling's;
- the share of samples in which each function was on the stack of the thread holding
  the GIL (`py-spy --gil`): where the Python time goes. The samples do not see time
  spent without the GIL (SQLite's own work, system calls): the first figure does.

py-spy comes from its own virtual environment (`make profile` makes it), not the
product's or the tests' requirements.
"""

import argparse
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import PASSWORD, cpu_per_request  # noqa: E402
from bench.run import PATIENT, USER, login  # noqa: E402
from bench.soak import start_server  # noqa: E402

SHOWN = 30


def prepared_server(data_dir: Path):
    """MediTrack with a user and 31 patients: its process, the read and list URLs, a token."""
    environ = {"MEDITRACK_RATE_LIMIT": "0", "MEDITRACK_AUTH_RATE_LIMIT": "0", "MEDITRACK_BCRYPT_ROUNDS": "4",
               "MEDITRACK_MAX_CONNECTIONS": "1000"}
    process, url = start_server(data_dir, environ)
    requests.post(f"{url}/auth/register", json={"username": USER, "password": PASSWORD}, timeout=30)
    token = login(url, USER)
    headers = {"Authorization": f"Bearer {token}"}
    patients = [requests.post(f"{url}/patients", json=PATIENT, headers=headers, timeout=30).json() for _ in range(31)]
    return process, {"read": f"{url}/patients/{patients[0]['id']}", "list": f"{url}/patients?limit=20"}, token


def inclusive_shares(raw: Path) -> tuple[int, Counter]:
    """py-spy's raw output (one line per distinct stack: frames joined by ';', then a
    count) as: the number of samples, and in how many each function was on the stack."""
    total, shares = 0, Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for frame in set(stack.split(";")):
            shares[frame] += int(count)
    return total, shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", required=True, help="the py-spy executable")
    parser.add_argument("--request", choices=("read", "list"), default="read")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meditrack-profile-") as scratch:
        process, urls, token = prepared_server(Path(scratch))
        raw = Path(scratch) / "samples.txt"
        try:
            spy = subprocess.Popen([arguments.py_spy, "record", "--pid", str(process.pid), "--gil", "--nonblocking",
                                    "--rate", "200", "--duration", str(arguments.seconds), "--format", "raw",
                                    "--output", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run = cpu_per_request(urls[arguments.request], process.pid, connections=arguments.connections,
                                  seconds=arguments.seconds, script="bearer.lua", env={"BENCH_TOKEN": token})
            spy.wait(timeout=arguments.seconds + 60)
        finally:
            process.terminate()
            process.wait(timeout=30)
        total, shares = inclusive_shares(raw)
    print(f"GET {arguments.request} at {arguments.connections} connections: {run['rps']:,.0f} requests/s, "
          f"{run['cpu_us']:.0f} µs of server CPU per request, p99 {run['p99']:.1f} ms")
    print(f"{total} samples holding the GIL; the functions most often on their stacks:")
    for frame, count in shares.most_common(SHOWN):
        print(f"  {count / total:6.1%}  {frame}")


if __name__ == "__main__":
    main()
