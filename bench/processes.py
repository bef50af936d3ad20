"""`python meditrack.py` as a real process: for the process and fault tests, the soak and the bench.

It lives in bench/ because the bench and the soak, which must not import from tests/,
use it too; the tests import it from here.

A process started here listens on a free port (MEDITRACK_PORT=0); the first line it
writes to stderr names its URL, so reading that line both waits until it listens and
says where (with workers, a line the parent logs while it opens the store may come
first). stderr stays a pipe: the caller reads it, or drains it so that the access
log never fills the pipe and blocks the server.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BANNER_URL = re.compile(r"http://127\.0\.0\.1:\d+")


def launch_meditrack(data_dir: Path, environ: dict | None = None, *, root: Path = ROOT) -> tuple[subprocess.Popen, str]:
    """Start MediTrack (this checkout's, or the one at `root`) on `data_dir` with these
    settings; its process and base URL."""
    environment = {**os.environ, **(environ or {}), "MEDITRACK_PORT": "0", "MEDITRACK_DATA_DIR": str(data_dir)}
    process = subprocess.Popen([sys.executable, "meditrack.py"], cwd=root, env=environment,
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    # Blocks until the server listens (or has failed). With workers, the parent's
    # opening of the store may log a line or two first.
    before = []
    while (line := process.stderr.readline()) and not (found := BANNER_URL.search(line)):
        before.append(line)
    if not line:
        process.kill()
        process.wait(timeout=30)
        raise RuntimeError(f"MediTrack did not start: {''.join(before)}")
    return process, found[0]


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """Ask a server to stop (SIGTERM: it drains), and kill it if it has not within `timeout`."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def process_status(pid: int) -> dict[str, str]:
    """A process's /proc/<pid>/status as name → value (proc(5))."""
    return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


def process_figures(pid: int) -> tuple[int, int]:
    """(threads, resident bytes) of a process, from /proc."""
    fields = process_status(pid)
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) * 1024


def family(pid: int) -> list[int]:
    """A process and its children (a `--workers` parent and its workers), from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(child) for child in children)]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process and its children have used so far (proc(5):
    fields 14 and 15 of /proc/<pid>/stat, in clock ticks)."""
    total = 0
    for member in family(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: str) -> None:
    """Keep a process, its children and all their threads on `cpus` (taskset syntax)."""
    for member in family(pid):
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(member)], check=True, capture_output=True)
