"""A real MongoDB-compatible server for the tests: FerretDB 1.24.2 on its SQLite backend.

No MongoDB server can be installed on the machines this project is built on, so the
MongoDB store is tested over the real wire protocol against FerretDB, built from its
Go module source and cached. Run as a script, this is what `make test-mongo` does:

    python tests/ferretdb.py -- python -m pytest

builds FerretDB if the cache does not have it yet, starts it on a free 127.0.0.1 port
with a temporary state directory and telemetry disabled, runs the command with
MEDITRACK_TEST_MONGODB_URI (and MEDITRACK_FERRETDB_BIN, for the outage test) set,
stops the server and exits with the command's status.

Why not `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2`: the module
proxy here refuses the version list that `go install` asks for, and a binary built
that way panics at start because the module zip lacks build/version/version.txt. So
we download the module, add that one file, and `go build` it.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODULE = "github.com/FerretDB/FerretDB"
VERSION = "v1.24.2"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meditrack"
BINARY = CACHE_DIR / f"ferretdb-{VERSION}"
START_TIMEOUT = 30.0


def ensure_built() -> Path:
    """The FerretDB binary, built into the cache on first use."""
    if BINARY.exists():
        return BINARY
    started = time.monotonic()
    print(f"building FerretDB {VERSION} into {BINARY} (first run only)...", file=sys.stderr, flush=True)
    download = subprocess.run(["go", "mod", "download", "-json", f"{MODULE}@{VERSION}"],
                              check=True, capture_output=True, text=True)
    module_dir = Path(json.loads(download.stdout)["Dir"])
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "ferretdb"
        shutil.copytree(module_dir, source)
        for path in [source, *source.rglob("*")]:  # the module cache is read-only
            path.chmod(path.stat().st_mode | 0o200)
        (source / "build" / "version" / "version.txt").write_text(VERSION + "\n")
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        partial = BINARY.with_suffix(".partial")
        subprocess.run(["go", "build", "-trimpath", "-o", str(partial), "./cmd/ferretdb"], cwd=source, check=True)
        partial.rename(BINARY)
    print(f"built FerretDB in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return BINARY


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FerretDB:
    """One FerretDB process with its own state directory; can be stopped and restarted
    on the same port and data, as an outage and a recovery would look to a client."""

    def __init__(self, binary: Path, state_dir: Path, port: int | None = None):
        self.binary, self.state_dir, self.port = binary, state_dir, port or free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/"
        self.process = None

    def start(self) -> "FerretDB":
        (self.state_dir / "data").mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(self.binary), "--handler=sqlite", f"--sqlite-url=file:{self.state_dir / 'data'}/",
             f"--state-dir={self.state_dir}", f"--listen-addr=127.0.0.1:{self.port}", "--debug-addr=-",
             "--telemetry=disable", "--log-level=error"],
            stdout=subprocess.DEVNULL, stderr=open(self.state_dir / "ferretdb.log", "ab"))
        self._wait_until_listening()
        return self

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"FerretDB exited at start; see {self.state_dir / 'ferretdb.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)  # waiting for another process to bind: nothing to tick
        raise RuntimeError(f"FerretDB did not listen on port {self.port} within {START_TIMEOUT} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def main(command: list[str]) -> int:
    binary = ensure_built()
    with tempfile.TemporaryDirectory(prefix="ferretdb-") as state_dir:
        server = FerretDB(binary, Path(state_dir)).start()
        try:
            environment = {**os.environ, "MEDITRACK_TEST_MONGODB_URI": server.uri,
                           "MEDITRACK_FERRETDB_BIN": str(binary)}
            print(f"FerretDB {VERSION} on {server.uri}", file=sys.stderr, flush=True)
            return subprocess.run(command, env=environment).returncode
        finally:
            server.stop()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] == ["--"]:
        arguments = arguments[1:]
    sys.exit(main(arguments or [sys.executable, "-m", "pytest"]))
