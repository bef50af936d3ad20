"""`make bench`'s backup row: `python meditrack.py backup` of 100,000 patients while the
server that holds them runs, then `restore` of that backup into a fresh data directory.

Each command is its own process, so its figures are its own: the wall time, and the
growth of its peak RSS (its VmHWM) over the peak of the same interpreter opening the same store and doing no work
(`verify-audit` on an empty data directory).
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bcrypt
import requests

from bench.measure import MiB, PASSWORD, multipart_body
from bench.processes import ROOT, process_status, stop
from bench.soak import start_server
from storage.sqlite import SQLiteStore

BOUNDARY = "bench-backup-boundary"


def run_command(*arguments: str, environ: dict) -> tuple[float, int, str]:
    """Run `python meditrack.py ARGUMENTS`; its wall time (s), peak RSS (bytes) and stdout.

    NOTE: the peak is the child's VmHWM (proc(5)), read every 10 ms while it runs, not
    getrusage's ru_maxrss: on Linux a child's ru_maxrss starts at its parent's RSS at
    fork, which would hide any child smaller than this benchmark. VmHWM only grows, so
    the last reading misses at most the last 10 ms."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "meditrack.py", *arguments], cwd=ROOT, env={**os.environ, **environ},
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output, peak = [], 0
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()))
    reader.start()
    while process.poll() is None:
        try:
            peak = max(peak, int(process_status(process.pid)["VmHWM"].split()[0]) * 1024)
        except (OSError, KeyError):
            pass  # exiting: its memory is already gone
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    reader.join()
    if process.returncode != 0:
        raise RuntimeError(f"meditrack.py {arguments[0]} exited with {process.returncode}: {output}")
    return elapsed, peak, "".join(output)


def backup_and_restore(seed_patients, *, patients: int = 100_000, reports: int = 100,
                       report_size: int = 256 * 1024) -> dict:
    """`seed_patients(data_dir, owner_id, count)` writes the patients (bench/run.py's)."""
    with tempfile.TemporaryDirectory(prefix="meditrack-bench-backup-") as scratch:
        scratch = Path(scratch)
        source, backup, restored, empty = (scratch / name for name in ("source", "backup", "restored", "empty"))
        store = SQLiteStore(source)
        owner = store.create_user("owner", bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)))["id"]
        store.close()
        seed_patients(source, owner, patients)
        environ = {"MEDITRACK_RATE_LIMIT": "0", "MEDITRACK_AUTH_RATE_LIMIT": "0", "MEDITRACK_BCRYPT_ROUNDS": "4"}
        process, url = start_server(source, environ)
        try:
            login = requests.post(f"{url}/auth/login", json={"username": "owner", "password": PASSWORD}, timeout=30)
            auth = {"Authorization": f"Bearer {login.json()['accessToken']}"}
            patient = requests.post(f"{url}/patients", headers=auth, timeout=30, json={
                "firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1815-12-10"}).json()
            for number in range(reports):  # each upload is an audit event too
                body = multipart_body(b"%PDF-1.4 " + os.urandom(report_size - 9), BOUNDARY)
                requests.post(f"{url}/patients/{patient['id']}/reports", data=body, timeout=60, headers={
                    **auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}).raise_for_status()
            _, idle_peak, _ = run_command("verify-audit", "--data-dir", str(empty), environ=environ)
            backup_s, backup_peak, _ = run_command("backup", str(backup), "--data-dir", str(source), environ=environ)
        finally:
            stop(process)
        restore_s, restore_peak, _ = run_command("restore", str(backup), "--data-dir", str(restored), environ=environ)
        size = sum(path.stat().st_size for path in backup.rglob("*") if path.is_file())
        database = (source / "meditrack.sqlite3").stat().st_size
    return {"patients": patients + 1, "reports": reports, "backup_s": backup_s, "restore_s": restore_s,
            "size_mib": size / MiB, "database_mib": database / MiB,
            "backup_growth_mib": (backup_peak - idle_peak) / MiB,
            "restore_growth_mib": (restore_peak - idle_peak) / MiB}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from bench.run import seed_patients
    print(backup_and_restore(seed_patients))
