"""Measuring instruments for `make bench`: wrk runs, alternating rounds, and reference rates.

Each function measures one thing and returns numbers; `bench/run.py` decides what to
measure and prints the table.
"""

import http.client
import os
import re
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import bcrypt
import requests

from bench.processes import cpu_seconds, process_figures, process_status

BENCH = Path(__file__).resolve().parent
MiB = 1024 * 1024
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}
PASSWORD = "bench password 1"


def wrk(url: str, *, script: str | None = None, connections: int = 32, seconds: float = 4, env=None,
        threads: int | None = None, cpus: str | None = None) -> dict:
    """One wrk run: requests/s and latency percentiles (ms), non-2xx/3xx count. Two wrk
    threads unless `threads` says (a script that keeps state per connection needs one
    thread per connection); on the CPUs `cpus` names (taskset syntax) if given."""
    threads = threads or min(2, connections)
    command = (["taskset", "-c", cpus] if cpus else []) + ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    if script:
        command += ["-s", str(BENCH / script)]
    output = subprocess.run(command + [url], capture_output=True, text=True, env={**os.environ, **(env or {})},
                            check=True).stdout
    percentiles = {f"p{p}": float(value) * UNITS[unit]
                   for p, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)}
    # "Latency   avg   stdev   max   +/- stdev": the slowest request of the run.
    slowest = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)", output, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1]), **percentiles,
            "max": float(slowest[1]) * UNITS[slowest[2]], "non2xx": int(errors[1]) if errors else 0}


def alternate(api_url, ceiling_url, *, rounds, seconds, script=None, env=None, cpus=None,
              ceiling_script=None) -> dict:
    """API and ceiling (or another reference) measured in turn, `rounds` times; medians of each."""
    api, ceiling = [], []
    for _ in range(rounds):
        ceiling.append(wrk(ceiling_url, script=ceiling_script, seconds=seconds, env=env, cpus=cpus))
        api.append(wrk(api_url, script=script, seconds=seconds, env=env, cpus=cpus))
    median = lambda runs, key: statistics.median(run[key] for run in runs)  # noqa: E731
    return {"rps": median(api, "rps"), "ceiling_rps": median(ceiling, "rps"), "p50": median(api, "p50"),
            "p99": median(api, "p99"), "max": max(run["max"] for run in api),
            "ratio": median(api, "rps") / median(ceiling, "rps"), "non2xx": sum(run["non2xx"] for run in api)}


def cpu_per_request(url: str, pid: int, *, connections: int, seconds: float, script=None, env=None) -> dict:
    """One wrk run, and the CPU time (user + system) the server process(es) spent per
    request meanwhile, in microseconds."""
    before = cpu_seconds(pid)
    run = wrk(url, script=script, connections=connections, seconds=seconds, env=env)
    spent = cpu_seconds(pid) - before
    return {**run, "cpu_us": spent / (run["rps"] * seconds) * 1e6}


def bcrypt_hashes_per_second(seconds: float = 3.0, threads: int = 2) -> float:
    """How many cost-12 bcrypt checks this machine does a second on `threads` threads."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12))
    count, deadline = [0] * threads, time.monotonic() + seconds

    def check(slot):
        while time.monotonic() < deadline:
            bcrypt.checkpw(PASSWORD.encode(), hashed)
            count[slot] += 1

    workers = [threading.Thread(target=check, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(count) / seconds


def loopback_copy_mb_per_second(seconds: float = 2.0) -> float:
    """A plain copy over a loopback TCP socket, 1 MiB writes: the transfer ceiling."""
    listener = socket.create_server(("127.0.0.1", 0))
    received = [0]

    def drain():
        connection, _ = listener.accept()
        with connection:
            while data := connection.recv(MiB):
                received[0] += len(data)

    reader = threading.Thread(target=drain)
    reader.start()
    block, started = b"x" * MiB, time.monotonic()
    with socket.create_connection(listener.getsockname()) as sender:
        while time.monotonic() - started < seconds:
            sender.sendall(block)
    reader.join()
    listener.close()
    return received[0] / (time.monotonic() - started) / 1e6


def multipart_body(data: bytes, boundary: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"scan.pdf\"\r\n"
            f"Content-Type: application/pdf\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()


class GeneratedUpload:
    """A multipart body of `size` file bytes, produced piece by piece: the client never
    holds it, so the RSS measured is the server's alone."""

    def __init__(self, size: int, boundary: str = "benchboundary"):
        self.head = multipart_body(b"", boundary)[:-len(f"\r\n--{boundary}--\r\n")] + b"%PDF-"
        self.tail, self.remaining = f"\r\n--{boundary}--\r\n".encode(), size - 5
        self.length = len(self.head) + self.remaining + len(self.tail)
        self.boundary = boundary

    def read(self, size: int = 64 * 1024) -> bytes:
        if self.head:
            piece, self.head = self.head, b""
            return piece
        if self.remaining:
            piece = b"\0" * min(size, self.remaining)
            self.remaining -= len(piece)
            return piece
        piece, self.tail = self.tail, b""
        return piece


def transfer_rates(url: str, token: str, patient_id: str, seconds: float) -> dict:
    """1 MiB uploads (wrk, 4 connections) to the patient, then 1 MiB downloads of one of
    them, each for `seconds`: MB/s each way, and the uploads that were not 2xx."""
    env = {"BENCH_TOKEN": token}
    boundary, data = "benchboundary", b"%PDF-" + os.urandom(MiB - 5)
    with tempfile.NamedTemporaryFile(suffix=".body", delete=False) as body_file:
        body_file.write(multipart_body(data, boundary))
    try:
        uploads = wrk(f"{url}/patients/{patient_id}/reports", script="upload.lua", connections=4, seconds=seconds,
                      env={**env, "BENCH_UPLOAD_BODY": body_file.name, "BENCH_BOUNDARY": boundary})
    finally:
        os.unlink(body_file.name)
    report = requests.post(f"{url}/patients/{patient_id}/reports", headers={"Authorization": f"Bearer {token}"},
                           timeout=60, files={"file": ("one-mib.pdf", data, "application/pdf")}).json()
    downloads = wrk(f"{url}/patients/{patient_id}/reports/{report['id']}", script="bearer.lua", connections=4,
                    seconds=seconds, env=env)
    return {"upload_mb_s": uploads["rps"] * MiB / 1e6, "download_mb_s": downloads["rps"] * MiB / 1e6,
            "upload_non2xx": uploads["non2xx"]}


def rss_during_uploads(url: str, pid: int, token: str, patient_id: str, uploads: int = 10, size: int = 50 * MiB):
    """Peak growth of the server's RSS while `uploads` uploads of `size` bytes stream at once."""
    _, baseline = process_figures(pid)
    peak, statuses, done = [baseline], [], threading.Event()

    def upload():
        body = GeneratedUpload(size)
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=120, blocksize=64 * 1024)
        connection.request("POST", f"/patients/{patient_id}/reports", body=body, headers={
            "Authorization": f"Bearer {token}", "Content-Length": str(body.length),
            "Content-Type": f"multipart/form-data; boundary={body.boundary}"})
        statuses.append(connection.getresponse().status)
        connection.close()

    workers = [threading.Thread(target=upload) for _ in range(uploads)]
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        peak.append(process_figures(pid)[1])
        done.wait(0.05)  # sample the server's RSS twenty times a second
    return (max(peak) - baseline) / MiB, statuses


def rss_during_export(url: str, pid: int, token: str) -> dict:
    """One client reading a whole GET /export: the server's peak RSS growth over its RSS
    before (Linux's VmHWM, the peak, reset first through clear_refs), the lines, and
    when the first byte and the last arrived."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS (proc(5))
    _, baseline = process_figures(pid)
    started, first_byte, lines = time.perf_counter(), None, 0
    with requests.get(f"{url}/export", headers={"Authorization": f"Bearer {token}"}, stream=True,
                      timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_content(64 * 1024):
            first_byte = first_byte or time.perf_counter() - started
            lines += chunk.count(b"\n")
    peak = int(process_status(pid)["VmHWM"].split()[0]) * 1024  # the peak since the reset
    return {"lines": lines, "growth_mib": (peak - baseline) / MiB, "first_byte_s": first_byte,
            "total_s": time.perf_counter() - started}


def rss_during_bulk_export(url: str, pid: int, token: str) -> dict:
    """One asynchronous bulk export (GET /fhir/$export, Prefer: respond-async), polled at
    the pace its Retry-After asks, then each of its files read whole: the server's peak
    RSS growth over the whole of it (the job's thread and the downloads), the lines, how
    long until the manifest, and in all."""
    auth = {"Authorization": f"Bearer {token}"}
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    _, baseline = process_figures(pid)
    started = time.perf_counter()
    kick_off = requests.get(f"{url}/fhir/$export", headers={**auth, "Prefer": "respond-async"}, timeout=60)
    kick_off.raise_for_status()
    while True:
        status = requests.get(kick_off.headers["Content-Location"], headers=auth, timeout=60)
        if status.status_code != 202:
            break
        time.sleep(float(status.headers["Retry-After"]))
    status.raise_for_status()
    manifest_s, lines = time.perf_counter() - started, 0
    for output in status.json()["output"]:
        with requests.get(output["url"], headers=auth, stream=True, timeout=600) as response:
            response.raise_for_status()
            lines += sum(chunk.count(b"\n") for chunk in response.iter_content(64 * 1024))
    peak = int(process_status(pid)["VmHWM"].split()[0]) * 1024
    return {"lines": lines, "growth_mib": (peak - baseline) / MiB, "manifest_s": manifest_s,
            "total_s": time.perf_counter() - started}


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
