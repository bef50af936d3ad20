"""Sustained mixed load against a real MediTrack process, then a check that nothing was lost.

    python bench/soak.py --duration 60 [--workers 2]

starts `python meditrack.py` (on MongoDB when MEDITRACK_TEST_MONGODB_URI is set, else
on SQLite in a temporary directory), and for the given number of seconds drives it
from several client threads with a mix of reads, writes, uploads, downloads, logins
and deliberately bad requests. It passes when

- no response was a 5xx, and every bad request got the 4xx it deserves;
- every write that was acknowledged is readable at the end, exactly as acknowledged
  (patients compared field by field, version included, but for the moment of a change
  an upload made, which its answer does not give; reports by SHA-256), and deleted
  ones are gone; half of the edits name the version they change (If-Match), and no
  edit is refused;
- the server's thread count and resident memory (with --workers, its processes'
  together) are flat after the warm-up (the first
  fifth of the run, at least 3 s): threads never exceed their warm-up peak by more than 2, and RSS
  grows by at most RSS_GROWTH_LIMIT.

It prints a summary and exits 0 or 1. The load is bounded in time and stays on
127.0.0.1.
"""

import argparse
import hashlib
import os
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: make the project importable

from bench.processes import family, launch_meditrack, process_figures  # noqa: E402

WORKERS = 8
RSS_GROWTH_LIMIT = 24 * 1024 * 1024
PATIENT = {"firstName": "Soak", "lastName": "Test", "dateOfBirth": "1980-01-01"}
PASSWORD = "soak test password"


def start_server(data_dir: Path, environ: dict) -> tuple[subprocess.Popen, str]:
    """MediTrack with these settings, its access log drained so the pipe never fills."""
    process, url = launch_meditrack(data_dir, environ)
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
    return process, url


class Worker(threading.Thread):
    """One simulated user: its own account, patients and reports, and what the server
    acknowledged about them."""

    def __init__(self, url: str, deadline: float, seed: int):
        super().__init__(daemon=True)
        self.url, self.deadline, self.random = url, deadline, random.Random(seed)
        self.session = requests.Session()
        self.username = f"soak{secrets.token_hex(4)}"
        self.patients: dict[str, dict] = {}      # id → the state the server acknowledged
        self.reports: dict[str, tuple[str, str]] = {}  # report id → (patient id, sha256)
        self.deleted: list[str] = []
        self.statuses: Counter = Counter()
        self.failures: list[str] = []

    def call(self, method, path, expected, **options):
        try:
            response = self.session.request(method, self.server() + path, timeout=30, **options)
        except requests.RequestException as exc:
            self.lost(method, path, exc)
            return None
        self.statuses[response.status_code] += 1
        if response.status_code != expected:
            self.failures.append(f"{method} {path}: {response.status_code}, expected {expected}")
            return None
        return response

    def server(self) -> str:
        """Where the next request goes."""
        return self.url

    def lost(self, method: str, path: str, exc: Exception) -> None:
        """A request that got no answer: with one server up throughout, a failure."""
        self.failures.append(f"{method} {path}: {type(exc).__name__}")

    def login(self):
        response = self.call("POST", "/auth/login", 200, json={"username": self.username, "password": PASSWORD})
        if response is not None:
            self.session.headers["Authorization"] = f"Bearer {response.json()['accessToken']}"

    def run(self):
        self.call("POST", "/auth/register", 201, json={"username": self.username, "password": PASSWORD})
        self.login()
        operations = [(self.create, 14), (self.read, 30), (self.list_patients, 12), (self.replace, 8), (self.upload, 8),
                      (self.download, 6), (self.delete, 3), (self.login, 3), (self.bad_request, 16)]
        actions, weights = zip(*operations)
        while time.monotonic() < self.deadline:
            self.random.choices(actions, weights)[0]()

    def some_patient(self) -> str | None:
        return self.random.choice(list(self.patients)) if self.patients else None

    def create(self):
        body = {**PATIENT, "notes": secrets.token_hex(8)}
        response = self.call("POST", "/patients", 201, json=body)
        if response is not None:
            self.patients[response.json()["id"]] = response.json()

    def read(self):
        if patient_id := self.some_patient():
            self.call("GET", f"/patients/{patient_id}", 200)

    def list_patients(self):
        self.call("GET", "/patients", 200, params={"limit": 20, "q": "soak"})

    def replace(self):
        """A PUT, or a merge PATCH; half of them name the version this worker last saw
        (If-Match), which must always still be current: no one else writes its patients."""
        if patient_id := self.some_patient():
            headers = {"If-Match": f'"{self.patients[patient_id]["version"]}"'} if self.random.random() < 0.5 else {}
            if self.random.random() < 0.5:
                body = {**PATIENT, "notes": secrets.token_hex(8), "allergies": ["dust"]}
                response = self.call("PUT", f"/patients/{patient_id}", 200, json=body, headers=headers)
            else:
                response = self.call("PATCH", f"/patients/{patient_id}", 200, json={"notes": secrets.token_hex(8)},
                                     headers={**headers, "Content-Type": "application/merge-patch+json"})
            if response is not None:
                self.patients[patient_id] = response.json()

    def upload(self):
        if patient_id := self.some_patient():
            data = b"%PDF-1.7\n" + os.urandom(self.random.randint(1, 64) * 1024)
            response = self.call("POST", f"/patients/{patient_id}/reports", 201,
                                 files={"file": ("soak.pdf", data, "application/pdf")})
            if response is not None:
                report = response.json()
                self.reports[report["id"]] = (patient_id, hashlib.sha256(data).hexdigest())
                patient = self.patients[patient_id]
                patient["reports"].append(report)
                # The patient moved to its next version; when exactly, only a read would say.
                patient["version"] += 1
                patient["updatedAt"] = None

    def download(self):
        if self.reports:
            report_id = self.random.choice(list(self.reports))
            patient_id, _ = self.reports[report_id]
            self.call("GET", f"/patients/{patient_id}/reports/{report_id}", 200)

    def delete(self):
        if patient_id := self.some_patient():
            if self.call("DELETE", f"/patients/{patient_id}", 204) is not None:
                del self.patients[patient_id]
                self.deleted.append(patient_id)
                self.reports = {rid: value for rid, value in self.reports.items() if value[0] != patient_id}

    def bad_request(self):
        kind = self.random.randrange(6)
        if kind == 0:
            self.call("POST", "/patients", 400, data=b"{not json", headers={"Content-Type": "application/json"})
        elif kind == 1:
            self.call("GET", "/no/such/path", 404)
        elif kind == 2:
            self.call("PATCH", "/patients", 405)
        elif kind == 3:
            self.call("GET", "/patients/not-an-id", 400)
        elif kind == 4:
            self.call("GET", "/auth/me", 401, headers={"Authorization": "Bearer forged.token.here"})
        else:
            self.call("POST", "/patients", 415, data=b"firstName=x", headers={"Content-Type": "text/plain"})

    def verify(self) -> list[str]:
        """Every acknowledged write, read back as acknowledged."""
        problems = []
        for patient_id, expected in self.patients.items():
            response = self.session.get(f"{self.url}/patients/{patient_id}", timeout=30)
            stored = response.json() if response.status_code == 200 else None
            if stored is not None and expected["updatedAt"] is None:
                stored["updatedAt"] = None
            if stored != expected:
                problems.append(f"patient {patient_id} is not as acknowledged")
        for report_id, (patient_id, sha256) in self.reports.items():
            response = self.session.get(f"{self.url}/patients/{patient_id}/reports/{report_id}", timeout=60)
            if response.status_code != 200 or hashlib.sha256(response.content).hexdigest() != sha256:
                problems.append(f"report {report_id} is not as acknowledged")
        for patient_id in self.deleted:
            if self.session.get(f"{self.url}/patients/{patient_id}", timeout=30).status_code != 404:
                problems.append(f"deleted patient {patient_id} is still there")
        return problems


def family_figures(pid: int) -> tuple[int, int]:
    """(threads, resident bytes) of the server: with workers, of the parent and every worker."""
    figures = [process_figures(member) for member in family(pid)]
    return sum(threads for threads, _ in figures), sum(rss for _, rss in figures)


def soak(duration: float, server_workers: int = 1) -> bool:
    environ = {"MEDITRACK_BCRYPT_ROUNDS": "6", "MEDITRACK_RATE_LIMIT": "0", "MEDITRACK_AUTH_RATE_LIMIT": "0",
               "MEDITRACK_WORKERS": str(server_workers)}
    if os.environ.get("MEDITRACK_TEST_MONGODB_URI"):
        environ["MONGODB_URI"] = os.environ["MEDITRACK_TEST_MONGODB_URI"].rstrip("/") + f"/soak_{secrets.token_hex(4)}"
    store = "mongodb" if "MONGODB_URI" in environ else "sqlite"
    with tempfile.TemporaryDirectory(prefix="meditrack-soak-") as data_dir:
        process, url = start_server(Path(data_dir), environ)
        try:
            started = time.monotonic()
            workers = [Worker(url, started + duration, seed) for seed in range(WORKERS)]
            for worker in workers:
                worker.start()
            samples = []  # (seconds since start, threads, rss)
            while any(worker.is_alive() for worker in workers):
                samples.append((time.monotonic() - started, *family_figures(process.pid)))
                for worker in workers:
                    worker.join(timeout=1.0 / len(workers))  # about one sample a second
            problems = [problem for worker in workers for problem in worker.failures + worker.verify()]
        finally:
            process.terminate()
            process.wait(timeout=30)
            if store == "mongodb":
                import pymongo
                with pymongo.MongoClient(environ["MONGODB_URI"]) as client:
                    client.drop_database(client.get_default_database())

    statuses = sum((worker.statuses for worker in workers), Counter())
    # The warm-up is the first fifth of the run, and never less than 3 s: the clients
    # must have connected (a thread each) before "flat" can mean anything.
    warm_up_ends = max(duration / 5, 3.0)
    warm_up = [s for s in samples if s[0] <= warm_up_ends] or samples[:1]
    after = [s for s in samples if s[0] > warm_up_ends] or samples[-1:]
    thread_peak_warm, thread_peak_after = max(s[1] for s in warm_up), max(s[1] for s in after)
    rss_warm, rss_peak_after = warm_up[-1][2], max(s[2] for s in after)
    acknowledged = sum(len(w.patients) + len(w.reports) + len(w.deleted) for w in workers)
    if any(status >= 500 for status in statuses):
        problems.append("5xx responses were served")
    if thread_peak_after > thread_peak_warm + 2:
        problems.append(f"threads grew after warm-up: {thread_peak_warm} → {thread_peak_after}")
    if rss_peak_after - rss_warm > RSS_GROWTH_LIMIT:
        problems.append(f"RSS grew after warm-up by {(rss_peak_after - rss_warm) / 2**20:.1f} MiB")

    total = sum(statuses.values())
    print(f"soak on {store} with {server_workers} server worker{'s' * (server_workers > 1)}: {duration:.0f} s, "
          f"{WORKERS} clients, {total} requests ({total / duration:.0f}/s)")
    print(f"  acknowledged writes checked at the end: {acknowledged} (patients, reports, deletions)")
    print(f"  server threads: warm-up peak {thread_peak_warm}, afterwards peak {thread_peak_after}")
    print(f"  server RSS: {rss_warm / 2**20:.1f} MiB after warm-up, peak afterwards {rss_peak_after / 2**20:.1f} MiB")
    return verdict(statuses, problems)


def verdict(statuses: Counter, problems: list[str]) -> bool:
    """Print the statuses seen and the problems found, then the one line that decides."""
    print("  statuses: " + ", ".join(f"{status}×{count}" for status, count in sorted(statuses.items())))
    for problem in problems[:20]:
        print(f"  PROBLEM: {problem}")
    print("soak: 0 passed, 1 failed" if problems else "soak: 1 passed, 0 failed")
    return not problems


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers (default 1)")
    arguments = parser.parse_args()
    sys.exit(0 if soak(arguments.duration, arguments.workers) else 1)
