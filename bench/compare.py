"""Side by side: the authenticated patient read (or write) on this checkout and another, in one run.

    python bench/compare.py OTHER_CHECKOUT [--rounds 4] [--seconds 4] [--put] [--connections 32]

`make bench` compares MediTrack with a ceiling; this compares MediTrack with itself, to
answer "did this change make the hot path slower?". It starts this checkout's server
and the one in OTHER_CHECKOUT (for instance `git worktree add /tmp/before HEAD~1`), each
on a data directory of its own, and drives GET /patients/{id} on both with wrk at 32
connections, alternating round by round so that the machine's drift touches both
alike. It prints each round's requests/s, the medians and their ratio.

`--put` drives PUT /patients/{id} instead, each connection replacing a patient of its
own (bench/conditional_put.lua, without If-Match, so any checkout takes it). Run under
`tests/ferretdb.py --` (which sets MEDITRACK_TEST_MONGODB_URI) to compare on MongoDB.
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import PASSWORD, wrk  # noqa: E402
from bench.processes import launch_meditrack  # noqa: E402

SETTINGS = {"MEDITRACK_RATE_LIMIT": "0", "MEDITRACK_AUTH_RATE_LIMIT": "0", "MEDITRACK_BCRYPT_ROUNDS": "4"}


def start(root: Path, data_dir: Path, patients: int = 1):
    """A server from `root` with one user and `patients` patients: its process, the first
    patient's URL, the token, and every patient's id."""
    settings = dict(SETTINGS)
    if os.environ.get("MEDITRACK_TEST_MONGODB_URI"):  # a database of its own on that server
        settings["MONGODB_URI"] = os.environ["MEDITRACK_TEST_MONGODB_URI"].rstrip("/") + f"/compare_{data_dir.name}"
    process, url = launch_meditrack(data_dir, settings, root=root)
    # The access log goes to stderr: read it, or a full pipe would block the server.
    threading.Thread(target=lambda: process.stderr.read(), daemon=True).start()
    credentials = {"username": "compare", "password": PASSWORD}
    requests.post(f"{url}/auth/register", json=credentials, timeout=30).raise_for_status()
    token = requests.post(f"{url}/auth/login", json=credentials, timeout=30).json()["accessToken"]
    ids = [requests.post(f"{url}/patients", json={"firstName": "Ada", "lastName": "Lovelace",
                                                  "dateOfBirth": "1815-12-10"},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30).json()["id"]
           for _ in range(patients)]
    return process, f"{url}/patients/{ids[0]}", token, ids


def side_by_side(checkouts: dict[str, Path], *, rounds: int, seconds: float, put: bool = False,
                 connections: int = 32) -> dict[str, list[float]]:
    """Each checkout's server, read (or written) with wrk in turn, round by round: requests/s per round."""
    with tempfile.TemporaryDirectory(prefix="meditrack-compare-") as data:
        servers = {name: start(root, Path(data) / name, patients=32 if put else 1) for name, root in checkouts.items()}
        rates = {name: [] for name in servers}
        try:
            for _ in range(rounds):
                for name, (_, url, token, ids) in servers.items():
                    if put:
                        run = wrk(url, script="conditional_put.lua", threads=32, seconds=seconds,
                                  env={"BENCH_TOKEN": token, "BENCH_PATIENTS": ",".join(ids), "BENCH_CONDITIONAL": "0"})
                    else:
                        run = wrk(url, script="bearer.lua", seconds=seconds, connections=connections,
                                  env={"BENCH_TOKEN": token})
                    if run["non2xx"]:
                        raise RuntimeError(f"{name}: {run['non2xx']} requests failed")
                    rates[name].append(run["rps"])
        finally:
            for process, *_ in servers.values():
                process.terminate()
                process.wait(timeout=30)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="the other checkout (its meditrack.py is started)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--put", action="store_true", help="PUT /patients/{id} (each connection its own patient)")
    parser.add_argument("--connections", type=int, default=32, help="wrk's connections for the read (default 32)")
    arguments = parser.parse_args()
    checkouts = {"this": ROOT, "other": arguments.other.resolve()}
    rates = side_by_side(checkouts, rounds=arguments.rounds, seconds=arguments.seconds, put=arguments.put,
                         connections=arguments.connections)
    for name, root in checkouts.items():
        print(f"{name:5} {root}: " + ", ".join(f"{rate:,.0f}" for rate in rates[name])
              + f" requests/s; median {statistics.median(rates[name]):,.0f}")
    print(f"this / other: {statistics.median(rates['this']) / statistics.median(rates['other']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
