"""A real MongoDB-compatible server for the tests: FerretDB 1.24.2 over PostgreSQL.

No MongoDB server can be installed on the machines this project is built on, so the
MongoDB store is tested over the real wire protocol against FerretDB, built from its
Go module source and cached. Run as a script, this is what `make test-mongo` does:

    python tests/ferretdb.py [--durable] -- python -m pytest

builds FerretDB if the cache does not have it yet, starts a throw-away PostgreSQL
cluster (below) and FerretDB over it on free 127.0.0.1 ports, runs the command with
MEDITRACK_TEST_MONGODB_URI set (and what the outage test needs to start a FerretDB of
its own: MEDITRACK_FERRETDB_BIN, MEDITRACK_FERRETDB_BACKEND, MEDITRACK_POSTGRESQL_URL),
then stops both and removes their files, also when the run is interrupted (Ctrl-C,
SIGTERM). It exits with the command's status.

**The backend.** PostgreSQL is FerretDB 1.x's production backend: it indexes `_id`
and the store's own indexes, so a look-up costs the same in a large collection as in a
small one. FerretDB's SQLite backend (`FERRETDB_BACKEND=sqlite`) needs nothing
installed but finds a document by scanning; it stays selectable for a machine without
PostgreSQL. Neither is MongoDB.

**The cluster.** PostgreSQL from Debian's packages (the make targets install it when it
is missing); Debian keeps `initdb` and `pg_ctl` in `/usr/lib/postgresql/<version>/bin`,
off `PATH`. The cluster lives in a temp directory, listens on a free loopback port
(its socket in that directory too), lets local connections in without a password
(`trust`: it holds nothing but test data, and only this machine can reach it), and is
owned by, and started as, the `postgres` user when we are root: PostgreSQL refuses to
run as root, and CI runs as root. Its commits are not synced to disk (the data is
thrown away, and each test makes and drops databases), except with `--durable`, which
the bench uses so that its writes cost what they would in production.

Why not `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2`: the module
proxy here refuses the version list that `go install` asks for, and a binary built
that way panics at start because the module zip lacks build/version/version.txt. So
we download the module, add that one file, and `go build` it.
"""

import json
import os
import pwd
import shutil
import signal
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
BACKENDS = ("postgresql", "sqlite")
POSTGRESQL_ROOT = Path("/usr/lib/postgresql")


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

    def __init__(self, binary: Path, state_dir: Path, *, postgresql_url: str | None = None, port: int | None = None):
        """Over PostgreSQL when `postgresql_url` names a database, else on SQLite in `state_dir`."""
        self.binary, self.state_dir, self.port = binary, state_dir, port or free_port()
        self.postgresql_url = postgresql_url
        self.uri = f"mongodb://127.0.0.1:{self.port}/"
        self.process = None

    def start(self) -> "FerretDB":
        (self.state_dir / "data").mkdir(parents=True, exist_ok=True)
        if self.postgresql_url:
            backend = ["--handler=postgresql", f"--postgresql-url={self.postgresql_url}"]
        else:
            backend = ["--handler=sqlite", f"--sqlite-url=file:{self.state_dir / 'data'}/"]
        self.process = subprocess.Popen(
            [str(self.binary), *backend, f"--state-dir={self.state_dir}", f"--listen-addr=127.0.0.1:{self.port}",
             "--debug-addr=-", "--telemetry=disable", "--log-level=error"],
            stdout=subprocess.DEVNULL, stderr=open(self.state_dir / "ferretdb.log", "ab"))
        wait_until_listening(self.process, self.port, "FerretDB", self.state_dir / "ferretdb.log")
        return self

    def stop(self) -> None:
        stop_server(self.process)


def wait_until_listening(process: subprocess.Popen, port: int, name: str, log: Path) -> None:
    """Return once a server we started listens on 127.0.0.1:`port`; if it exits or takes
    longer than START_TIMEOUT, fail naming its log."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited at start; see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # waiting for another process to bind: nothing to tick
    raise RuntimeError(f"{name} did not listen on port {port} within {START_TIMEOUT} s")


def stop_server(process: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within 10 s."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def postgresql_bin() -> Path:
    """Debian's directory of PostgreSQL's programs, the newest version installed."""
    versions = sorted((path for path in POSTGRESQL_ROOT.glob("*") if (path / "bin" / "initdb").exists()),
                      key=lambda path: int(path.name) if path.name.isdigit() else 0)
    if not versions:
        raise RuntimeError(f"no PostgreSQL under {POSTGRESQL_ROOT}: install Debian's package postgresql "
                           "(make test-mongo does), or run with FERRETDB_BACKEND=sqlite")
    return versions[-1] / "bin"


class PostgreSQL:
    """A throw-away PostgreSQL cluster in `directory` (which it fills and leaves for the
    caller to remove), on a free loopback port, with one database per `create_database`."""

    def __init__(self, directory: Path, *, durable: bool = False):
        self.bin = postgresql_bin()
        self.durable = durable  # commits synced to disk, as in production (for the bench)
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        # PostgreSQL refuses to run as root: then the cluster is the postgres user's.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.started = False

    def start(self) -> "PostgreSQL":
        if self.as_owner:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                  "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.directory} "
                   "-c logging_collector=off")
        if not self.durable:
            # Test data is thrown away: a commit need not reach the disk (each test makes
            # and drops databases, and every such DDL commit would otherwise wait for fsync).
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self.started = True  # from here on, stop() has something to stop
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "postgresql.log"), "-w",
                  "-t", str(int(START_TIMEOUT)), "-o", options, "start")
        return self

    def create_database(self, name: str) -> str:
        """A new database in the cluster; its URL, as FerretDB's --postgresql-url wants it."""
        return create_database(self.url, name)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.started:
            # "immediate": nothing here needs to survive, and the files are removed next.
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
            self.started = False

    def _run(self, program: str, *arguments: str, check: bool = True) -> None:
        done = subprocess.run([*self.as_owner, str(self.bin / program), *arguments],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=self.directory)
        if check and done.returncode != 0:
            raise RuntimeError(f"PostgreSQL's {program} failed ({done.returncode}): {done.stderr.strip()[-500:]} "
                               f"(log: {self.directory / 'postgresql.log'})")


def create_database(cluster_url: str, name: str) -> str:
    """A new database in the cluster at `cluster_url` (trust: no password); its URL."""
    subprocess.run([str(postgresql_bin() / "createdb"), f"--maintenance-db={cluster_url}postgres", name],
                   check=True, capture_output=True)
    return f"{cluster_url}{name}"


def backend() -> str:
    chosen = os.environ.get("FERRETDB_BACKEND", "postgresql")
    if chosen not in BACKENDS:
        raise SystemExit(f"FERRETDB_BACKEND={chosen}: one of {', '.join(BACKENDS)}")
    return chosen


def own_ferretdb(state_dir: Path) -> FerretDB:
    """For a test that stops and starts a FerretDB of its own: one like the run's (the
    same binary and backend, over a database of its own in the run's cluster)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    url = None
    if os.environ.get("MEDITRACK_FERRETDB_BACKEND") == "postgresql":
        url = create_database(os.environ["MEDITRACK_POSTGRESQL_URL"], f"own_{os.getpid()}_{free_port()}")
    return FerretDB(Path(os.environ["MEDITRACK_FERRETDB_BIN"]), state_dir, postgresql_url=url)


def stop_on_sigterm() -> None:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the `finally`s below run."""
    def interrupted(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)


def main(command: list[str], *, durable: bool = False) -> int:
    chosen = backend()
    binary = ensure_built()
    stop_on_sigterm()
    cluster = server = None
    with tempfile.TemporaryDirectory(prefix="ferretdb-") as state_dir, \
            tempfile.TemporaryDirectory(prefix="ferretdb-postgresql-") as cluster_dir:
        try:
            environment = {**os.environ, "MEDITRACK_FERRETDB_BIN": str(binary), "MEDITRACK_FERRETDB_BACKEND": chosen}
            postgresql_url = None
            if chosen == "postgresql":
                cluster = PostgreSQL(Path(cluster_dir), durable=durable).start()
                postgresql_url = cluster.create_database("ferretdb")
                environment["MEDITRACK_POSTGRESQL_URL"] = cluster.url
            server = FerretDB(binary, Path(state_dir), postgresql_url=postgresql_url).start()
            environment["MEDITRACK_TEST_MONGODB_URI"] = server.uri
            print(f"FerretDB {VERSION} on {server.uri}, over {chosen}", file=sys.stderr, flush=True)
            return subprocess.run(command, env=environment).returncode
        except KeyboardInterrupt:
            print("interrupted: stopping FerretDB and PostgreSQL", file=sys.stderr, flush=True)
            return 130
        finally:
            if server is not None:
                server.stop()
            if cluster is not None:
                cluster.stop()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    durable = arguments[:1] == ["--durable"]  # the bench: commits synced, as in production
    arguments = arguments[1:] if durable else arguments
    if arguments[:1] == ["--"]:
        arguments = arguments[1:]
    sys.exit(main(arguments or [sys.executable, "-m", "pytest"], durable=durable))
