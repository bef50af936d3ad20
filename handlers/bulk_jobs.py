"""Bulk export jobs: each runs in a thread of its own and writes NDJSON files to disk.

A job is a directory under `<data-dir>/bulk/<jobId>/`, so every worker process of one
server sees every job, whichever of them started it:

    job.json                    what was asked, the state, the progress, the finished
                                files (made by the kick-off, then written only by the
                                job's thread; always replaced whole, by rename)
    Patient.ndjson ...          one file per resource type, renamed into place complete
    cancelled                   made by DELETE: the thread stops, the status URL is 404
    polled                      when the status was last asked (the pace Retry-After sets)

What the files hold is every resource **as it stood at `transactionTime`** (FHIR Bulk
Data: nothing changed after it): for each patient the version current then — found in
its kept versions when it has changed since — and the reports uploaded by then. A
patient created later is left out; one deleted while the job runs is gone with its
history, and if the job had read it in a newer state it is named in the error file.

Memory is bounded: patients are read a page at a time and each line is written as it
is made, so a job holds one page, whatever the user owns.

A job that stops before it finishes — its server restarted, its process was killed —
is never shown as complete: its files keep their temporary names and its state says
`running`. It counts as failed as soon as that can be told (`alive`).
"""

import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import system
from handlers import fhir_mapping
from handlers.patients import patient_pages
from storage.errors import NotFound
from web.messages import encode_json

log = logging.getLogger("meditrack.bulk")

# NOTE: one value per start of the server, shared by its worker processes (they are
# forked after this module is imported). A job recorded under another value was left by
# a server that has stopped since: whatever its state says, nothing runs it any more.
SERVER_START = secrets.token_hex(8)
TYPES = ("Patient", "DocumentReference")
# NOTE: a write takes its timestamp just before it commits, so a change stamped before
# transactionTime may not be readable yet at the kick-off. A job waits this long before
# its first read, far longer than a commit takes: what was stamped before is there by then.
SETTLE_SECONDS = 1.0
LOCK_STALE_AFTER = 30.0    # seconds: a kick-off lock older than this was left by a process that died
ORPHAN_AGE = 3600.0        # seconds: a job directory without a readable job.json, left by a crash


class BulkJobs:
    """The jobs under one directory: start, read, cancel, sweep."""

    def __init__(self, directory: Path, store, *, clock, retention: float, identifier_system: str):
        self.directory = directory
        self.store = store
        self.clock = clock
        self.retention = retention          # seconds a finished job's files are kept
        self.identifier_system = identifier_system
        self._threads: dict[str, threading.Thread] = {}  # the jobs this process runs
        self.settle = SETTLE_SECONDS

    # -- the records --------------------------------------------------------------------------------

    def path(self, job_id: str) -> Path:
        return self.directory / job_id

    def load(self, job_id: str) -> dict | None:
        """job.json as written, cancelled or not; None if there is none (any more)."""
        try:
            return json.loads((self.path(job_id) / "job.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None

    def read(self, job_id: str) -> dict | None:
        """The job, or None if there is none or it was cancelled."""
        job = self.load(job_id)
        return None if job is None or self.cancelled(job_id) else job

    def cancelled(self, job_id: str) -> bool:
        return (self.path(job_id) / "cancelled").exists()

    def write(self, job: dict, *, durable: bool = True) -> bool:
        """Replace job.json whole (a temporary file, renamed over it); False if the job's
        directory has gone (cancelled and removed meanwhile). `durable`: synced to disk
        first, as a state worth keeping is; progress (once a page) need not be."""
        target = self.path(job["id"]) / "job.json"
        temporary = target.with_suffix(".tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as file:
                file.write(json.dumps(job))
                if durable:
                    file.flush()
                    system.sync_file(file.fileno())
            os.replace(temporary, target)
        except FileNotFoundError:
            return False
        return True

    def alive(self, job: dict) -> bool:
        """Whether a job's thread still runs. Its own process knows; a sibling worker
        asks whether that process still exists; a job from before the server's last
        start is dead whatever it says."""
        if job["serverStart"] != SERVER_START:
            return False
        if job["pid"] == os.getpid():
            thread = self._threads.get(job["id"])
            return thread is not None and thread.is_alive()
        return system.process_exists(job["pid"])

    def state(self, job: dict) -> str:
        """running, complete or failed; a running job whose thread is gone is failed."""
        if job["state"] == "running" and not self.alive(job):
            return "failed"
        return job["state"]

    def record_poll(self, job_id: str) -> None:
        """Note that the status was asked now (in a file: any worker may be asked next)."""
        try:
            (self.path(job_id) / "polled").write_text(repr(self.clock()), encoding="ascii")
        except FileNotFoundError:
            pass  # cancelled and removed this instant: the next poll says 404

    def last_poll(self, job_id: str) -> float:
        try:
            return float((self.path(job_id) / "polled").read_text(encoding="ascii"))
        except (FileNotFoundError, ValueError):
            return float("-inf")

    def job_ids(self) -> list[str]:
        try:
            return [entry.name for entry in self.directory.iterdir() if entry.is_dir()]
        except FileNotFoundError:
            return []

    # -- start, cancel, sweep -----------------------------------------------------------------------

    def start(self, owner_id: str, *, request_url: str, base: str, types: list[str], since: str | None,
              transaction_time: str, limit: int) -> str | None:
        """Record a job and start its thread; None if the owner already runs `limit` jobs."""
        with self.owner_lock(owner_id):
            self.sweep()
            running = [job for job in map(self.read, self.job_ids())
                       if job is not None and job["owner"] == owner_id and self.state(job) == "running"]
            if len(running) >= limit:
                return None
            job_id = secrets.token_hex(12)
            self.path(job_id).mkdir(mode=0o700, parents=True)  # patient data: the server's user only (POSIX)
            job = {"id": job_id, "owner": owner_id, "state": "running", "request": request_url, "base": base,
                   "types": types, "since": since, "transactionTime": transaction_time,
                   "serverStart": SERVER_START, "pid": os.getpid(), "created": self.clock(),
                   "done": 0, "total": None, "output": [], "error": [], "failure": None, "expires": None}
            self.write(job)
            thread = threading.Thread(target=self.run, args=(job,), name=f"bulk-{job_id}", daemon=True)
            self._threads[job_id] = thread
            thread.start()
        return job_id

    @contextmanager
    def owner_lock(self, owner_id: str):
        """One kick-off of this owner at a time, across every worker process.

        NOTE: a file created with O_CREAT | O_EXCL is a lock any process can take on any
        system: creating it fails while it exists. A process that dies holding it leaves
        it behind, so a lock older than LOCK_STALE_AFTER (a kick-off takes milliseconds)
        is taken as abandoned and removed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = self.directory / f".{owner_id}.lock"
        deadline = time.monotonic() + 5
        while True:
            try:
                descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                break
            except FileExistsError:
                try:
                    taken_at = float(lock.read_text(encoding="ascii") or "0")
                except (FileNotFoundError, ValueError):
                    taken_at = float("inf")  # just released, or being written: try again
                if self.clock() - taken_at > LOCK_STALE_AFTER:
                    lock.unlink(missing_ok=True)
                elif time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        try:
            os.write(descriptor, repr(self.clock()).encode("ascii"))
            os.close(descriptor)
            yield
        finally:
            lock.unlink(missing_ok=True)

    def cancel(self, job_id: str) -> None:
        """Mark the job cancelled; its files go now if it has stopped, else when its
        thread sees the mark (before the next page). NotFound if it has gone meanwhile."""
        try:
            (self.path(job_id) / "cancelled").touch()
        except FileNotFoundError:
            raise NotFound("no export job with this id") from None
        job = self.load(job_id)
        if job is None or self.state(job) != "running":
            shutil.rmtree(self.path(job_id), ignore_errors=True)

    def sweep(self) -> None:
        """Remove the jobs whose time is up: finished (or dead) ones past the retention,
        cancelled ones that have stopped, and directories a crash left without a record."""
        for job_id in self.job_ids():
            job = self.load(job_id)
            if job is None:
                try:
                    age = time.time() - self.path(job_id).stat().st_mtime  # the file's age: the wall clock
                except FileNotFoundError:
                    continue
                if age > ORPHAN_AGE:
                    shutil.rmtree(self.path(job_id), ignore_errors=True)
                continue
            kept_until = job["expires"] or job["created"] + self.retention  # a dead job: from its start
            if self.state(job) != "running" and (self.cancelled(job_id) or self.clock() > kept_until):
                shutil.rmtree(self.path(job_id), ignore_errors=True)

    # -- the job's thread ---------------------------------------------------------------------------

    def run(self, job: dict) -> None:
        try:
            self.export(job)
        except Exception as exc:  # the store down past its retries, the disk full: the job fails whole
            log.warning("bulk export %s failed: %s", job["id"], type(exc).__name__)
            failure = f"the export could not finish ({type(exc).__name__}); start it again"
            job.update(state="failed", failure=failure, expires=self.clock() + self.retention)
            self.write_unless_cancelled(job)
        finally:
            self._threads.pop(job["id"], None)

    def export(self, job: dict) -> None:
        directory = self.path(job["id"])
        files = {kind: NdjsonFile(directory / f"{kind}.ndjson") for kind in (*job["types"], "OperationOutcome")}
        time.sleep(self.settle)
        job["total"] = self.store.count_patients(job["owner"])
        with ExitStack() as closing:  # every file is closed, whatever fails
            for file in files.values():
                closing.callback(file.close)
            for page in patient_pages(self.store, job["owner"]):
                if self.cancelled(job["id"]):
                    break
                for patient in page:
                    for kind, resource in self.resources_at(job, patient):
                        files[kind].write(resource)
                job["done"] += len(page)
                self.write_unless_cancelled(job, durable=False)
        if self.cancelled(job["id"]):
            shutil.rmtree(directory, ignore_errors=True)
            return
        for kind, file in files.items():
            if file.count:
                file.finish()  # renamed into place: complete
                entry = {"type": kind, "file": file.path.name, "count": file.count, "size": file.size,
                         "sha256": file.sha256}
                job["error" if kind == "OperationOutcome" else "output"].append(entry)
        job.update(state="complete", expires=self.clock() + self.retention)
        if not self.write_unless_cancelled(job):
            shutil.rmtree(directory, ignore_errors=True)  # cancelled as it finished

    def write_unless_cancelled(self, job: dict, *, durable: bool = True) -> bool:
        return not self.cancelled(job["id"]) and self.write(job, durable=durable)

    def resources_at(self, job: dict, patient: dict):
        """(type, resource) for what the patient was at transactionTime, as _type and
        _since select; an OperationOutcome for a patient that went away meanwhile."""
        moment, since, base = job["transactionTime"], job["since"], job["base"]
        if patient["createdAt"] > moment:
            return  # made after the export was asked for
        try:
            state = version_at(self.store, patient, moment)
        except NotFound:
            yield "OperationOutcome", fhir_mapping.operation_outcome(
                404, f"Patient/{patient['id']} was deleted while the export ran")
            return
        if "Patient" in job["types"] and (since is None or state["updatedAt"] > since):
            yield "Patient", fhir_mapping.patient_resource(state, base, identifier_system=self.identifier_system)
        if "DocumentReference" in job["types"]:
            for report in patient["reports"]:
                if report["uploadedAt"] <= moment and (since is None or report["uploadedAt"] > since):
                    yield "DocumentReference", fhir_mapping.document_reference(patient["id"], report, base)


def version_at(store, patient: dict, moment: str) -> dict:
    """The patient's fields as they stood at `moment` (an ISO timestamp like updatedAt):
    the current version if it is no newer, else the newest kept version that is."""
    if patient["updatedAt"] <= moment:
        return patient
    below = patient["version"]
    while below > 1:
        versions = store.list_versions(patient["id"], below=below, limit=100)
        for version in versions:
            if version["updatedAt"] <= moment:
                return {"id": patient["id"], **store.get_version(patient["id"], version["version"])}
        if not versions:
            break
        below = versions[-1]["version"]
    raise NotFound("no version of this patient is as old as the export")


class NdjsonFile:
    """One output file: written under a temporary name, counted and hashed as it grows,
    synced and renamed into place by `finish` only once it is complete."""

    def __init__(self, path: Path):
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.file = None
        self.count = self.size = 0
        self.digest = hashlib.sha256()

    def write(self, resource: dict) -> None:
        if self.file is None:
            self.file = open(self.partial, "wb")
        line = encode_json(resource) + b"\n"
        self.file.write(line)
        self.digest.update(line)
        self.count += 1
        self.size += len(line)

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()

    def close(self) -> None:
        if self.file is not None:
            file, self.file = self.file, None
            try:
                file.flush()
                system.sync_file(file.fileno())
            finally:
                file.close()

    def finish(self) -> None:
        os.replace(self.partial, self.path)
