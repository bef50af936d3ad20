"""A real S3-compatible server for the tests: versitygw 1.8.0 (Apache-2.0) on its POSIX backend.

Run as a script, this is what `make test-s3` does:

    python tests/s3server.py -- python -m pytest tests/test_http_reports.py ...

builds versitygw into ~/.cache/meditrack on first use (`go install`, as FerretDB is
cached), starts it on a free 127.0.0.1 port with a root access key and secret made for
the run and its buckets in a temp directory (`posix --sidecar META DATA`: object
metadata in a directory beside the data, so no extended attributes are needed), runs
the command with MEDITRACK_TEST_S3_ENDPOINT, _ACCESS_KEY and _SECRET_KEY set, then
stops the server and removes its files, also when interrupted (Ctrl-C, SIGTERM). Each
test server makes a bucket of its own (tests/support/objects.py). It exits with the
command's status.

versitygw checks every request's Signature Version 4 (a wrong secret is refused:
tests/test_s3.py), the x-amz-content-sha256 of each PUT against the bytes, and
answers ranges as S3 does.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSION = "v1.8.0"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meditrack"
BINARY = CACHE_DIR / f"versitygw-{VERSION}"
START_TIMEOUT = 30.0


def ensure_built() -> Path:
    """The versitygw binary, built into the cache on first use."""
    if BINARY.exists():
        return BINARY
    started = time.monotonic()
    print(f"building versitygw {VERSION} into {BINARY} (first run only)...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as gobin:
        subprocess.run(["go", "install", f"{MODULE}@{VERSION}"], check=True,
                       env={**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"})
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        partial = BINARY.with_suffix(".partial")
        os.replace(Path(gobin) / "versitygw", partial)
        partial.rename(BINARY)
    print(f"built versitygw in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return BINARY


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class VersityGateway:
    """One versitygw process over `directory`; stop() and start() again keep its
    objects and its port, as an outage and a recovery would look to a client."""

    def __init__(self, binary: Path, directory: Path, *, access_key: str, secret_key: str, port: int | None = None):
        self.binary, self.directory, self.port = binary, directory, port or free_port()
        self.access_key, self.secret_key = access_key, secret_key
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> "VersityGateway":
        for name in ("data", "meta"):
            (self.directory / name).mkdir(parents=True, exist_ok=True)
        # The keys go in the environment, not the command line, where `ps` would show them.
        environment = {**os.environ, "ROOT_ACCESS_KEY": self.access_key, "ROOT_SECRET_KEY": self.secret_key}
        self.process = subprocess.Popen(
            [str(self.binary), "--port", f"127.0.0.1:{self.port}", "posix", "--sidecar",
             str(self.directory / "meta"), str(self.directory / "data")],
            env=environment, stdout=subprocess.DEVNULL, stderr=open(self.directory / "versitygw.log", "ab"))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"versitygw exited at start; see {self.directory / 'versitygw.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)  # waiting for another process to bind: nothing to tick
        raise RuntimeError(f"versitygw did not listen on port {self.port} within {START_TIMEOUT} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def own_gateway(directory: Path) -> VersityGateway:
    """For a test that stops and starts an object store of its own (the run's binary and keys)."""
    return VersityGateway(Path(os.environ["MEDITRACK_VERSITYGW_BIN"]), directory,
                          access_key=os.environ["MEDITRACK_TEST_S3_ACCESS_KEY"],
                          secret_key=os.environ["MEDITRACK_TEST_S3_SECRET_KEY"])


def main(command: list[str]) -> int:
    binary = ensure_built()

    def interrupted(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)  # unwinds like Ctrl-C, so the `finally` runs
    server = None
    with tempfile.TemporaryDirectory(prefix="versitygw-") as directory:
        try:
            server = VersityGateway(binary, Path(directory), access_key="meditrack" + secrets.token_hex(4),
                                    secret_key=secrets.token_hex(20)).start()
            environment = {**os.environ, "MEDITRACK_VERSITYGW_BIN": str(binary),
                           "MEDITRACK_TEST_S3_ENDPOINT": server.endpoint,
                           "MEDITRACK_TEST_S3_ACCESS_KEY": server.access_key,
                           "MEDITRACK_TEST_S3_SECRET_KEY": server.secret_key}
            print(f"versitygw {VERSION} on {server.endpoint}", file=sys.stderr, flush=True)
            return subprocess.run(command, env=environment).returncode
        except KeyboardInterrupt:
            print("interrupted: stopping versitygw", file=sys.stderr, flush=True)
            return 130
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] == ["--"]:
        arguments = arguments[1:]
    sys.exit(main(arguments or [sys.executable, "-m", "pytest"]))
