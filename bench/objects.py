"""`make bench`'s object-store rows: report files in an S3-compatible object store
against the same on the local store, side by side in one run.

Two MediTrack processes on the embedded store, one keeping report files beside its
database and one in a bucket of versitygw on loopback (tests/s3server.py builds it into
the cache), measured in turn, round by round, so drift of the machine cancels: 1 MiB
uploads and downloads (wrk, 4 connections), in MB/s. Then the object-store server's
peak RSS growth while 10 uploads of 50 MiB stream at once (each spooled to disk, then
sent with one PUT).
"""

import secrets
import statistics
import sys
import tempfile
from pathlib import Path

import requests

from bench.measure import PASSWORD, rss_during_uploads, transfer_rates
from bench.processes import ROOT, stop
from bench.soak import start_server

ENVIRONMENT = {"MEDITRACK_RATE_LIMIT": "0", "MEDITRACK_AUTH_RATE_LIMIT": "0", "MEDITRACK_BCRYPT_ROUNDS": "4",
               "MEDITRACK_MAX_UPLOAD_BYTES": str(64 * 1024 * 1024), "MEDITRACK_MAX_CONNECTIONS": "1000"}
PATIENT = {"firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1815-12-10"}


def owner_and_patient(url: str) -> tuple[str, str]:
    requests.post(f"{url}/auth/register", json={"username": "bench", "password": PASSWORD}, timeout=30)
    token = requests.post(f"{url}/auth/login", json={"username": "bench", "password": PASSWORD},
                          timeout=30).json()["accessToken"]
    patient = requests.post(f"{url}/patients", json=PATIENT, timeout=30,
                            headers={"Authorization": f"Bearer {token}"}).json()
    return token, patient["id"]


def object_store_figures(rounds: int, seconds: float) -> dict:
    sys.path.insert(0, str(ROOT))
    from storage.s3.client import ObjectStore
    from tests.s3server import VersityGateway, ensure_built

    with tempfile.TemporaryDirectory(prefix="meditrack-bench-s3-") as scratch:
        scratch = Path(scratch)
        gateway = VersityGateway(ensure_built(), scratch / "gateway", access_key="bench" + secrets.token_hex(4),
                                 secret_key=secrets.token_hex(20)).start()
        processes = []
        try:
            bucket = ObjectStore(gateway.endpoint, "bench-reports", region="us-east-1",
                                 access_key=gateway.access_key, secret_key=gateway.secret_key)
            created = bucket.request("PUT")
            created.read()
            created.close()
            s3 = {"MEDITRACK_S3_ENDPOINT": gateway.endpoint, "MEDITRACK_S3_BUCKET": bucket.bucket,
                  "MEDITRACK_S3_ACCESS_KEY": gateway.access_key, "MEDITRACK_S3_SECRET_KEY": gateway.secret_key}
            servers = {}
            for name, extra in (("local", {}), ("s3", s3)):
                process, url = start_server(scratch / name, {**ENVIRONMENT, **extra})
                processes.append(process)
                servers[name] = (process, url, *owner_and_patient(url))
            rates = {name: [] for name in servers}
            for _ in range(rounds):
                for name, (process, url, token, patient_id) in servers.items():
                    rates[name].append(transfer_rates(url, token, patient_id, seconds))
            process, url, token, patient_id = servers["s3"]
            growth, statuses = rss_during_uploads(url, process.pid, token, patient_id)
        finally:
            for process in processes:
                stop(process)
            gateway.stop()
    median = {name: {key: statistics.median(each[key] for each in values) for key in ("upload_mb_s", "download_mb_s")}
              for name, values in rates.items()}
    return {"rounds": rates, "local": median["local"], "s3": median["s3"],
            "upload_ratio": median["s3"]["upload_mb_s"] / median["local"]["upload_mb_s"],
            "download_ratio": median["s3"]["download_mb_s"] / median["local"]["download_mb_s"],
            "upload_rss": {"growth_mib": growth, "statuses": statuses}}


if __name__ == "__main__":
    print(object_store_figures(rounds=2, seconds=3))
