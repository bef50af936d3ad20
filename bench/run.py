"""`make bench`: MediTrack's speed and memory, as ratios to what the standard library can do.

    python bench/run.py [--quick]

Starts MediTrack (embedded store; and MongoDB when MEDITRACK_TEST_MONGODB_URI is set)
and the ceiling server (`bench/ceiling.py`: a bare ThreadingHTTPServer handler that
returns the same bytes as a patient read), drives both with wrk at 32 connections,
alternating ceiling and API round by round so that drift of the machine cancels out,
and prints one table. Results go to bench/results.json.

Every figure is reported, none is asserted: the targets are in the table so a reader
can see at a glance which are met on this machine.
"""

import argparse
import json
import os
import re
import statistics
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import bcrypt
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import (UNITS, MiB, PASSWORD, alternate, bcrypt_hashes_per_second,  # noqa: E402
                           loopback_copy_mb_per_second, rss_during_bulk_export, rss_during_export,
                           rss_during_uploads, transfer_rates, wrk)
from storage.ids import new_id  # noqa: E402
from storage.sqlite import SQLiteStore  # noqa: E402
from bench.backup import backup_and_restore  # noqa: E402
from bench.objects import object_store_figures  # noqa: E402
from bench.compare import side_by_side  # noqa: E402
from bench.cores import body_of, ceiling_server, cpu_rows, workers_rows  # noqa: E402
from bench.table import print_table  # noqa: E402
from bench.soak import start_server  # noqa: E402

BENCH = ROOT / "bench"
RESULTS = BENCH / "results.json"
# The last commit before the audit trail: its row compares the authenticated read with
# every request audited against the same read on this commit, side by side.
AUDIT_BASELINE = "0758290"
USER = "bench"
PATIENT = {"firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1815-12-10", "gender": "female",
           "email": "ada@example.org", "allergies": ["penicillin"], "notes": "Benchmark patient."}


def seed_patients(data_dir: Path, owner_id: str, count: int, batch: int = 50_000) -> None:
    """Bulk rows straight into the SQLite file while the server is stopped.

    Through the API, 1.1 million creates would take most of an hour (each is its own
    durable commit); the rows written here have exactly the shape `SQLiteStore`
    writes, in one transaction per batch.
    """
    fields = json.dumps({**PATIENT, "phone": None, "address": None, "bloodType": None})
    stamp = "2026-01-01T00:00:00.000Z"
    with sqlite3.connect(data_dir / "meditrack.sqlite3") as db:
        for start in range(0, count, batch):
            ids = [new_id() for _ in range(min(batch, count - start))]
            db.executemany("INSERT INTO patients (id, owner_id, first_name_key, last_name_key, fields, version,"
                           " created_at, updated_at) VALUES (?, ?, 'ada', 'lovelace', ?, 1, ?, ?)",
                           ((patient_id, owner_id, fields, stamp, stamp) for patient_id in ids))
            db.executemany("INSERT INTO patient_versions (patient_id, version, fields, updated_at) VALUES (?, 1, ?, ?)",
                           ((patient_id, fields, stamp) for patient_id in ids))


def login(url: str, username: str) -> str:
    response = requests.post(f"{url}/auth/login", json={"username": username, "password": PASSWORD}, timeout=30)
    response.raise_for_status()
    return response.json()["accessToken"]


def run_embedded(ceiling_url: str, rounds: int, seconds: float, huge: int) -> dict:
    results = {}
    with tempfile.TemporaryDirectory(prefix="meditrack-bench-") as data_dir:
        data_dir = Path(data_dir)
        store = SQLiteStore(data_dir)
        password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12))
        owners = {name: store.create_user(name, password_hash)["id"] for name in (USER, "small", "large")}
        store.close()
        print(f"seeding 1,000 + {huge:,} patients for two owners and {10 * huge:,} for 1,000 others...",
              file=sys.stderr, flush=True)
        seed_patients(data_dir, owners["small"], 1000)
        seed_patients(data_dir, owners["large"], huge)
        for other in range(1000):
            seed_patients(data_dir, new_id(), huge // 100)
        environ = {"MEDITRACK_RATE_LIMIT": "0", "MEDITRACK_AUTH_RATE_LIMIT": "0", "MEDITRACK_BCRYPT_ROUNDS": "12",
                   "MEDITRACK_MAX_UPLOAD_BYTES": str(64 * MiB), "MEDITRACK_MAX_CONNECTIONS": "1000"}
        process, url = start_server(data_dir, environ)
        try:
            token = login(url, USER)
            env = {"BENCH_TOKEN": token, "BENCH_USER": USER, "BENCH_PASSWORD": PASSWORD}
            headers = {"Authorization": f"Bearer {token}"}
            patient = requests.post(f"{url}/patients", json=PATIENT, headers=headers, timeout=30).json()
            for _ in range(30):
                requests.post(f"{url}/patients", json=PATIENT, headers=headers, timeout=30)
            read_path = f"/patients/{patient['id']}"
            read = url + read_path

            print("measuring reads, lists, creates...", file=sys.stderr, flush=True)
            results["health"] = alternate(f"{url}/health", ceiling_url, rounds=rounds, seconds=seconds)
            results["get_patient"] = alternate(read, ceiling_url, rounds=rounds, seconds=seconds,
                                               script="bearer.lua", env=env)
            # The list's own ceiling: the same 20 patients' bytes, served as the read's are.
            list_bytes = body_of(f"{url}/patients?limit=20", env)
            with ceiling_server(list_bytes) as (list_ceiling_url, _):
                results["list_patients"] = alternate(f"{url}/patients?limit=20", list_ceiling_url, rounds=rounds,
                                                     seconds=seconds, script="bearer.lua", env=env)
            results["cpu_per_request"] = cpu_rows(url + read_path, process.pid, env, seconds)
            results["workers"] = workers_rows(data_dir, environ, process.pid, url, read_path, env, rounds, seconds)
            results["create_patient"] = alternate(f"{url}/patients", ceiling_url, rounds=rounds, seconds=seconds,
                                                  script="create_patient.lua", env=env)
            results["conditional_put"] = conditional_puts(url, headers, env, rounds, seconds)
            results["read_while_writing"] = read_p99_while_writing(url + read_path, f"{url}/patients", env, seconds)
            results["two_processes"] = creates_on_two_processes(url, data_dir, environ, env, seconds)

            print("measuring list scaling...", file=sys.stderr, flush=True)
            lists = {}
            for name, count in (("small", 1000), ("large", huge)):
                owner_env = {"BENCH_TOKEN": login(url, name)}
                lists[name] = wrk(f"{url}/patients?limit=20", script="bearer.lua", seconds=seconds, env=owner_env)
                lists[name]["patients"] = count
            results["list_scaling"] = {**lists, "p50_ratio": lists["large"]["p50"] / lists["small"]["p50"]}

            print(f"measuring RSS while {huge:,} patients are exported...", file=sys.stderr, flush=True)
            results["export"] = {**rss_during_export(url, process.pid, login(url, "large")), "patients": huge}
            print(f"measuring RSS while {huge:,} patients are bulk-exported (asynchronously)...", file=sys.stderr,
                  flush=True)
            results["bulk_export"] = {**rss_during_bulk_export(url, process.pid, login(url, "large")),
                                      "patients": huge}

            print("measuring logins and bcrypt...", file=sys.stderr, flush=True)
            logins = wrk(f"{url}/auth/login", script="login.lua", connections=4, seconds=seconds, env=env)
            hashes = bcrypt_hashes_per_second()
            results["login"] = {"logins_per_s": logins["rps"], "bcrypt_per_s": hashes,
                                "ratio": logins["rps"] / hashes}

            print("measuring 1 MiB uploads and downloads...", file=sys.stderr, flush=True)
            # Uploads go to a patient of their own, so the patient read above stays small.
            patient = requests.post(f"{url}/patients", json=PATIENT, headers=headers, timeout=30).json()
            results["transfer"] = {**transfer_rates(url, token, patient["id"], seconds),
                                   "loopback_mb_s": loopback_copy_mb_per_second()}

            print("measuring RSS during 10 concurrent 50 MiB uploads...", file=sys.stderr, flush=True)
            growth, statuses = rss_during_uploads(url, process.pid, token, patient["id"])
            results["upload_rss"] = {"growth_mib": growth, "statuses": statuses}
        finally:
            process.terminate()
            process.wait(timeout=30)

        print("measuring reads during a login storm...", file=sys.stderr, flush=True)
        # With the default auth limit (10 a minute): the storm is what it is there to
        # contain. And without it, to show what the bucket is worth.
        for name, limit in (("login_storm", "10/60"), ("login_storm_unlimited", "0")):
            quiet, stormy = read_p99_during_storm(data_dir, {**environ, "MEDITRACK_AUTH_RATE_LIMIT": limit},
                                                  read_path, seconds)
            results[name] = {"p99_quiet": quiet, "p99_storm": stormy, "ratio": stormy / quiet}
    print(f"measuring a backup of {huge:,} patients while serving, and its restore...", file=sys.stderr, flush=True)
    results["backup"] = backup_and_restore(seed_patients, patients=huge)
    return results


def conditional_puts(url: str, headers: dict, env: dict, rounds: int, seconds: float) -> dict:
    """PUT with If-Match naming the current version (32 connections, each editing a patient
    of its own) against the same PUTs without If-Match, in turn: what the check costs.
    Every run gets new patients, since the script starts from version 1."""
    runs = {"conditional": [], "unconditional": []}
    for _ in range(rounds):
        for kind in runs:
            ids = [requests.post(f"{url}/patients", json=PATIENT, headers=headers, timeout=30).json()["id"]
                   for _ in range(32)]
            put_env = {**env, "BENCH_PATIENTS": ",".join(ids), "BENCH_CONDITIONAL": "1" if kind == "conditional" else "0"}
            runs[kind].append(wrk(f"{url}/patients/{ids[0]}", script="conditional_put.lua", threads=32,
                                  seconds=seconds, env=put_env))
    median = {kind: {key: statistics.median(run[key] for run in kind_runs) for key in ("rps", "p50", "p99")}
              for kind, kind_runs in runs.items()}
    return {**median["conditional"], "unconditional_rps": median["unconditional"]["rps"],
            "ratio": median["conditional"]["rps"] / median["unconditional"]["rps"],
            "non2xx": sum(run["non2xx"] for run in runs["conditional"])}


def read_p99_while_writing(read_url: str, create_url: str, env: dict, seconds: float) -> dict:
    """Patient reads at 16 connections alone, then while 16 other connections create
    patients as fast as they can: what writers cost readers (WAL: readers never wait)."""
    quiet = wrk(read_url, script="bearer.lua", connections=16, seconds=seconds, env=env)
    writers = subprocess.Popen(["wrk", "-t1", "-c16", f"-d{seconds + 2}s", "-s", str(BENCH / "create_patient.lua"),
                                create_url], env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    busy = wrk(read_url, script="bearer.lua", connections=16, seconds=seconds, env=env)
    writers.wait(timeout=seconds + 30)
    return {"p99_quiet": quiet["p99"], "p99_writing": busy["p99"], "ratio": busy["p99"] / quiet["p99"]}


def creates_on_two_processes(url: str, data_dir: Path, environ: dict, env: dict, seconds: float) -> dict:
    """Creates at 16 connections on each of two MediTrack processes sharing one SQLite
    file: each process has its own writer, and the two take SQLite's lock in turn."""
    second, second_url = start_server(data_dir, environ)
    try:
        other = subprocess.Popen(["wrk", "-t1", "-c16", f"-d{seconds:g}s", "--latency", "-s",
                                  str(BENCH / "create_patient.lua"), f"{second_url}/patients"],
                                 env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
        first = wrk(f"{url}/patients", script="create_patient.lua", connections=16, seconds=seconds, env=env)
        output = other.communicate(timeout=seconds + 30)[0]
    finally:
        second.terminate()
        second.wait(timeout=30)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)", output, re.M)
    slowest = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)", output, re.M)
    return {"rps": first["rps"] + rps, "p99": max(first["p99"], float(p99[1]) * UNITS[p99[2]]),
            "max": max(first["max"], float(slowest[1]) * UNITS[slowest[2]])}


def read_p99_during_storm(data_dir: Path, environ: dict, read_path: str, seconds: float) -> tuple[float, float]:
    """p99 of patient reads (ms) alone, then while 16 connections log in as fast as they can."""
    process, url = start_server(data_dir, environ)
    try:
        env = {"BENCH_TOKEN": login(url, USER), "BENCH_USER": USER, "BENCH_PASSWORD": PASSWORD}
        quiet = wrk(url + read_path, script="bearer.lua", seconds=seconds, env=env)
        storm = subprocess.Popen(["wrk", "-t1", "-c16", f"-d{seconds + 2}s", "-s", str(BENCH / "login.lua"),
                                  f"{url}/auth/login"], env={**os.environ, **env}, stdout=subprocess.DEVNULL)
        stormy = wrk(url + read_path, script="bearer.lua", seconds=seconds, env=env)
        storm.wait(timeout=seconds + 30)
        return quiet["p99"], stormy["p99"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def mongodb_server_name() -> str:
    """The server behind MEDITRACK_TEST_MONGODB_URI, as the table names it: FerretDB and its
    backend when tests/ferretdb.py started it, else "mongodb"."""
    backend = os.environ.get("MEDITRACK_FERRETDB_BACKEND")
    return {"postgresql": "FerretDB/PostgreSQL", "sqlite": "FerretDB/SQLite"}.get(backend, "mongodb")


def run_mongodb(ceiling_url: str, uri: str, rounds: int, seconds: float) -> dict:
    """The core rows on MongoDB (on FerretDB 1.24 over PostgreSQL here, not MongoDB's speed)."""
    environ = {"MONGODB_URI": uri.rstrip("/") + f"/bench_{os.getpid()}", "MEDITRACK_RATE_LIMIT": "0",
               "MEDITRACK_AUTH_RATE_LIMIT": "0", "MEDITRACK_BCRYPT_ROUNDS": "4"}
    with tempfile.TemporaryDirectory() as data_dir:
        process, url = start_server(Path(data_dir), environ)
        try:
            requests.post(f"{url}/auth/register", json={"username": USER, "password": PASSWORD}, timeout=30)
            env = {"BENCH_TOKEN": login(url, USER)}
            headers = {"Authorization": f"Bearer {env['BENCH_TOKEN']}"}
            patient = requests.post(f"{url}/patients", json=PATIENT, headers=headers, timeout=30).json()
            list_bytes = body_of(f"{url}/patients?limit=20", env)
            with ceiling_server(list_bytes) as (list_ceiling_url, _):
                lists = alternate(f"{url}/patients?limit=20", list_ceiling_url, rounds=rounds, seconds=seconds,
                                  script="bearer.lua", env=env)
            return {"get_patient": alternate(f"{url}/patients/{patient['id']}", ceiling_url, rounds=rounds,
                                             seconds=seconds, script="bearer.lua", env=env),
                    "list_patients": lists,
                    "conditional_put": conditional_puts(url, headers, env, rounds, seconds),
                    "server": mongodb_server_name()}
        finally:
            process.terminate()
            process.wait(timeout=30)
            import pymongo
            with pymongo.MongoClient(environ["MONGODB_URI"]) as client:
                client.drop_database(client.get_default_database())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds and a smaller large owner")
    arguments = parser.parse_args()
    rounds, seconds, huge = (1, 2, 10_000) if arguments.quick else (3, 4, 100_000)
    results = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]}}
    with ceiling_server(patient_read_bytes()) as (ceiling_url, _):
        results["sqlite"] = run_embedded(ceiling_url, rounds, seconds, huge)
        results["audit_baseline"] = run_against_baseline(rounds + 1, seconds)
        print("measuring report files in an S3-compatible object store against local files...", file=sys.stderr,
              flush=True)
        results["object_store"] = object_store_figures(rounds, seconds)
        if os.environ.get("MEDITRACK_TEST_MONGODB_URI"):
            results["mongodb"] = run_mongodb(ceiling_url, os.environ["MEDITRACK_TEST_MONGODB_URI"], rounds, seconds)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, AUDIT_BASELINE)
    print(f"\n(full results in {RESULTS.relative_to(ROOT)})")


def run_against_baseline(rounds: int, seconds: float) -> dict | None:
    """The authenticated read here and at AUDIT_BASELINE (a git worktree), in turn."""
    with tempfile.TemporaryDirectory(prefix="meditrack-baseline-") as scratch:
        checkout = Path(scratch) / "baseline"
        made = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(checkout), AUDIT_BASELINE],
                              capture_output=True, text=True)
        if made.returncode != 0:
            print(f"no baseline row: {made.stderr.strip()}", file=sys.stderr)
            return None
        try:
            rates = side_by_side({"this": ROOT, "before": checkout}, rounds=rounds, seconds=seconds)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)],
                           capture_output=True)
    median = {name: statistics.median(values) for name, values in rates.items()}
    return {"rps": median["this"], "before_rps": median["before"], "ratio": median["this"] / median["before"],
            "rounds": rates}


def patient_read_bytes() -> bytes:
    """The exact body a GET /patients/{id} answers, from a throw-away server."""
    with tempfile.TemporaryDirectory() as data_dir:
        process, url = start_server(Path(data_dir), {"MEDITRACK_BCRYPT_ROUNDS": "4"})
        try:
            requests.post(f"{url}/auth/register", json={"username": USER, "password": PASSWORD}, timeout=30)
            headers = {"Authorization": f"Bearer {login(url, USER)}"}
            patient = requests.post(f"{url}/patients", json=PATIENT, headers=headers, timeout=30).json()
            return requests.get(f"{url}/patients/{patient['id']}", headers=headers, timeout=30).content
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
