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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the project importable

from tests.ferretdb import free_port, stop_on_sigterm, stop_server, wait_until_listening  # noqa: E402

MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSION = "v1.8.0"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meditrack"
BINARY = CACHE_DIR / f"versitygw-{VERSION}"


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
        wait_until_listening(self.process, self.port, "versitygw", self.directory / "versitygw.log")
        return self

    def stop(self) -> None:
        stop_server(self.process)


def own_gateway(directory: Path) -> VersityGateway:
    """For a test that stops and starts an object store of its own (the run's binary and keys)."""
    return VersityGateway(Path(os.environ["MEDITRACK_VERSITYGW_BIN"]), directory,
                          access_key=os.environ["MEDITRACK_TEST_S3_ACCESS_KEY"],
                          secret_key=os.environ["MEDITRACK_TEST_S3_SECRET_KEY"])


def main(command: list[str]) -> int:
    binary = ensure_built()
    stop_on_sigterm()
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
