"""Two MediTrack instances on one MongoDB and one object store, one killed half-way.

    python tests/ferretdb.py -- python tests/s3server.py -- python bench/soak_instances.py --duration 60

The deployment that outgrows one machine: two `python meditrack.py` processes with the
same MONGODB_URI (a fresh database), the same bucket (a fresh one, MEDITRACK_S3_*) and
the same JWT key. bench/soak.py's clients spread their requests over both; half-way
one is killed with `kill -9` and the clients go on with the other (a load balancer
would stop sending there). A request in flight at the kill has no answer, so what it
did is unknown: its patient is read back and taken as the truth. Then the killed
instance is started again, and it passes when

- no response was a 5xx;
- every write acknowledged by either instance reads back, byte-exact, through each of
  the two (the survivor, and the restarted one);
- a session ended on one instance is refused by the other at once, both ways.

It prints a summary and exits 0 or 1. Bounded in time; everything on 127.0.0.1.
"""

import argparse
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.processes import stop  # noqa: E402
from bench.soak import PASSWORD, WORKERS, Worker, start_server, verdict  # noqa: E402
from storage.s3.client import ObjectStore  # noqa: E402

PATIENT_PATH = re.compile(r"/patients/([0-9a-f]{24})")


class SharedWorker(Worker):
    """A soak client whose every request goes to one of the live instances, at random."""

    def __init__(self, live: list[str], deadline: float, seed: int, killed: threading.Event):
        super().__init__(live[0], deadline, seed)
        self.live, self.killed = live, killed
        self.in_doubt = 0  # requests cut off by the kill: their outcome unknown

    def server(self) -> str:
        return self.random.choice(self.live)

    def lost(self, method: str, path: str, exc: Exception) -> None:
        if not self.killed.is_set():
            super().lost(method, path, exc)
            return
        self.in_doubt += 1
        self.take_stored_state(method, path)

    def take_stored_state(self, method: str, path: str) -> None:
        """After a request lost to the kill: the patient it touched, as the survivor has it."""
        found = PATIENT_PATH.match(path)
        if found is None or found[1] not in self.patients:
            return  # a create or a login: nothing acknowledged depends on it
        patient_id = found[1]
        response = self.session.get(f"{self.live[0]}/patients/{patient_id}", timeout=30)
        if response.status_code == 200:
            self.patients[patient_id] = response.json()
        elif response.status_code == 404 and method == "DELETE":
            del self.patients[patient_id]
            self.deleted.append(patient_id)
            self.reports = {rid: value for rid, value in self.reports.items() if value[0] != patient_id}
        else:
            self.failures.append(f"{method} {path} was cut off, and then the patient answered {response.status_code}")


def sessions_are_shared(first: str, second: str) -> list[str]:
    """A session ended through one instance is refused by the other."""
    problems = []
    for ended_on, checked_on in ((first, second), (second, first)):
        username = f"shared{secrets.token_hex(4)}"
        requests.post(f"{ended_on}/auth/register", json={"username": username, "password": PASSWORD}, timeout=30)
        token = requests.post(f"{checked_on}/auth/login", json={"username": username, "password": PASSWORD},
                              timeout=30).json()["accessToken"]
        auth = {"Authorization": f"Bearer {token}"}
        if requests.get(f"{ended_on}/auth/me", headers=auth, timeout=30).status_code != 200:
            problems.append("a token from one instance was refused by the other")
        requests.post(f"{ended_on}/auth/logout", headers=auth, timeout=30)
        if requests.get(f"{checked_on}/auth/me", headers=auth, timeout=30).status_code != 401:
            problems.append("a session ended on one instance still works on the other")
    return problems


def soak(duration: float) -> bool:
    objects = ObjectStore(os.environ["MEDITRACK_TEST_S3_ENDPOINT"], f"soak-{secrets.token_hex(4)}",
                          region="us-east-1", access_key=os.environ["MEDITRACK_TEST_S3_ACCESS_KEY"],
                          secret_key=os.environ["MEDITRACK_TEST_S3_SECRET_KEY"])
    created = objects.request("PUT")  # CreateBucket
    created.read()
    created.close()
    environ = {"MEDITRACK_BCRYPT_ROUNDS": "6", "MEDITRACK_RATE_LIMIT": "0", "MEDITRACK_AUTH_RATE_LIMIT": "0",
               "MONGODB_URI": os.environ["MEDITRACK_TEST_MONGODB_URI"].rstrip("/") + f"/soak_{secrets.token_hex(4)}",
               "MEDITRACK_JWT_SECRET": secrets.token_hex(32), "MEDITRACK_S3_ENDPOINT": objects.endpoint,
               "MEDITRACK_S3_BUCKET": objects.bucket,
               "MEDITRACK_S3_ACCESS_KEY": os.environ["MEDITRACK_TEST_S3_ACCESS_KEY"],
               "MEDITRACK_S3_SECRET_KEY": os.environ["MEDITRACK_TEST_S3_SECRET_KEY"]}
    processes, problems = [], []
    with tempfile.TemporaryDirectory(prefix="meditrack-soak-instances-") as scratch:
        try:
            (first, first_url), (second, second_url) = (start_server(Path(scratch) / name, environ)
                                                        for name in ("first", "second"))
            processes += [first, second]
            live, killed = [first_url, second_url], threading.Event()
            started = time.monotonic()
            workers = [SharedWorker(live, started + duration, seed, killed) for seed in range(WORKERS)]
            for worker in workers:
                worker.start()
            time.sleep(duration / 2)  # real time: the load runs against real processes
            live.remove(first_url)
            killed.set()
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
            for worker in workers:
                worker.join(timeout=duration + 60)
            restarted, restarted_url = start_server(Path(scratch) / "restarted", environ)
            processes.append(restarted)
            for url in (second_url, restarted_url):
                for worker in workers:
                    worker.url = url
                    problems += [f"through {url}: {problem}" for problem in worker.verify()]
            problems += [problem for worker in workers for problem in worker.failures]
            problems += sessions_are_shared(second_url, restarted_url)
        finally:
            for process in processes:
                if process.poll() is None:
                    stop(process)
            import pymongo
            with pymongo.MongoClient(environ["MONGODB_URI"]) as client:
                client.drop_database(client.get_default_database())

    statuses = sum((worker.statuses for worker in workers), Counter())
    if any(status >= 500 for status in statuses):
        problems.append("5xx responses were served")
    acknowledged = sum(len(w.patients) + len(w.reports) + len(w.deleted) for w in workers)
    total = sum(statuses.values())
    print(f"soak on two instances (one MongoDB, one bucket), one killed with kill -9 at {duration / 2:.0f} s: "
          f"{duration:.0f} s, {WORKERS} clients, {total} requests ({total / duration:.0f}/s)")
    print(f"  requests cut off by the kill (outcome read back): {sum(w.in_doubt for w in workers)}")
    print(f"  acknowledged writes checked through both instances: {acknowledged} (patients, reports, deletions)")
    return verdict(statuses, problems)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    sys.exit(0 if soak(parser.parse_args().duration) else 1)
