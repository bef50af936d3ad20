"""MediTrack as a real process (`python meditrack.py`), so a test can kill it, and a
`Deployment`: one data directory (and MongoDB database) that processes start on one
after another, and that a test can open as a store between them."""

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench.processes import launch_meditrack
from tests.support.api import TEST_SECRET
from tests.support.mongodb import connections_of_gone_clients, drop_mongodb_database, fresh_mongodb_uri
from tests.support.objects import object_store_environment
from tests.support.platforms import require_proc

PROCESS_EXIT = 15.0          # seconds any process may take to stop when told to


def until(condition, timeout: float) -> bool:
    """Whether `condition()` comes true within `timeout` seconds, asked every 20 ms:
    the state of another process, which no clock of ours can tick."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@dataclass
class MediTrackProcess:
    """A running `python meditrack.py`, its address, and every line of its stderr."""
    process: subprocess.Popen
    host: str
    port: int
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stderr_text(self) -> str:
        return "".join(self.log)


def read_lines_into(stream, lines: list[str]) -> None:
    # NOTE: the server logs a line per request to stderr; an unread pipe fills up
    # (64 KiB) and would block the server, so a thread keeps reading it.
    for line in stream:
        lines.append(line)
    stream.close()


class Deployment:
    """One data directory (and, for MongoDB, one database) that MediTrack processes
    start on one after another, and that this process can open as a store between them."""

    def __init__(self, data_dir: Path, store_kind: str):
        self.data_dir = data_dir
        self.store_kind = store_kind
        self.mongodb_uri = fresh_mongodb_uri() if store_kind == "mongodb" else None
        self.object_store = object_store_environment()  # under `make test-s3`: a bucket of its own
        self.processes: list[MediTrackProcess] = []

    def start(self, **env: str) -> MediTrackProcess:
        process, url = launch_meditrack(self.data_dir, {
            "MONGODB_URI": self.mongodb_uri or "", "MEDITRACK_BCRYPT_ROUNDS": "4", "MEDITRACK_RATE_LIMIT": "0",
            "MEDITRACK_AUTH_RATE_LIMIT": "0", "MEDITRACK_JWT_SECRET": TEST_SECRET.decode("ascii"), **self.object_store,
            **env})
        address = urlsplit(url)
        started = MediTrackProcess(process, address.hostname, address.port)
        threading.Thread(target=read_lines_into, args=(process.stderr, started.log), daemon=True).start()
        self.processes.append(started)
        return started

    def open_store(self):
        """The store, opened here on the same data: its start-up sweep runs now."""
        if self.store_kind == "mongodb":
            self._wait_for_commands_of_dead_processes()
            from storage.mongo import MongoStore
            from storage.mongo.reports import SWEEP_MIN_AGE
            later = SWEEP_MIN_AGE.total_seconds() + 60  # so every leftover is old enough to sweep
            return MongoStore(self.mongodb_uri, clock=lambda: time.time() + later, objects=self.objects())
        from storage.sqlite import SQLiteStore
        from storage.sqlite.reports import SWEEP_MIN_AGE as SQLITE_SWEEP_MIN_AGE
        later = SQLITE_SWEEP_MIN_AGE + 60
        return SQLiteStore(self.data_dir, clock=lambda: time.time() + later, objects=self.objects())

    def objects(self):
        """A client of the deployment's bucket; None when its report bytes are not in an object store."""
        if not self.object_store:
            return None
        from storage.s3.client import ObjectStore
        return ObjectStore(self.object_store["MEDITRACK_S3_ENDPOINT"], self.object_store["MEDITRACK_S3_BUCKET"],
                           region="us-east-1", access_key=self.object_store["MEDITRACK_S3_ACCESS_KEY"],
                           secret_key=self.object_store["MEDITRACK_S3_SECRET_KEY"])

    @property
    def temp_dir(self) -> Path:
        return self.data_dir / "reports" / "tmp"

    def report_ids_before_sweep(self) -> set[str]:
        """The ids of all report bytes as they lie, committed or not, read without
        opening a store (which would sweep): what a crash or a cut-off left."""
        if self.object_store:  # an upload in flight is a temp file unlinked at once: only objects remain
            from storage.s3.reports import PREFIX
            return {key[len(PREFIX):] for key in self.objects().keys(PREFIX)}
        if self.store_kind == "mongodb":
            self._wait_for_commands_of_dead_processes()
            import pymongo
            with pymongo.MongoClient(self.mongodb_uri, serverSelectionTimeoutMS=5000) as client:
                database = client.get_default_database()
                files = database["reports.files"].distinct("_id")
                chunks = database["reports.chunks"].distinct("files_id")
            return {str(file_id) for file_id in files + chunks}
        reports_dir = self.data_dir / "reports"
        # A temp file's name starts with its report id (storage/sqlite/reports.py).
        return ({path.name[:24] for path in self.temp_dir.iterdir()}
                | {path.name for path in reports_dir.iterdir() if path.is_file()})

    def upload_in_progress(self, started: "MediTrackProcess") -> bool:
        """Whether bytes of an upload not yet committed are held: in the store (files,
        GridFS), or, bound for an object store, in the spool file the server keeps open
        (unlinked from the start, so only the process's open files show it: Linux's /proc)."""
        if not self.object_store:
            return bool(self.report_ids_before_sweep())
        require_proc()
        # The spool directory: the data directory's for SQLite, the system's for MongoDB
        # (storage/s3/reports.py). Linux names an unlinked or O_TMPFILE file "<dir>/... (deleted)".
        spool = str(self.temp_dir) if self.store_kind == "sqlite" else tempfile.gettempdir()
        links = [os.readlink(descriptor) for descriptor in Path(f"/proc/{started.process.pid}/fd").iterdir()]
        return any(link.startswith(spool + "/") and link.endswith("(deleted)") for link in links)

    def _wait_for_commands_of_dead_processes(self) -> None:
        """A killed process's last commands can still be running in the database server:
        read nothing until the server has finished them and closed their connections."""
        assert until(lambda: connections_of_gone_clients(self.mongodb_uri) == 0, timeout=PROCESS_EXIT), \
            "the database server still runs commands of a process that is gone"

    def clean_up(self) -> None:
        for started in self.processes:
            if started.process.poll() is None:
                started.process.kill()
            started.process.wait(timeout=PROCESS_EXIT)
        if self.mongodb_uri:
            drop_mongodb_database(self.mongodb_uri)
