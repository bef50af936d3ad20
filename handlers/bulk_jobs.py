"""Bulk export jobs: each runs in a thread of its own and writes NDJSON files to disk.

A job is a directory under `<data-dir>/bulk/<jobId>/`, so every worker process of one
server sees every job, whichever of them started it:

    job.json                    what was asked, the state, the progress, the finished files
                                (written only by the job's own thread, by atomic rename)
    Patient.ndjson ...          one file per resource type, renamed into place complete
    cancelled                   made by DELETE: the thread stops, the next poll is 404
    polled                      when the status was last asked (the pace Retry-After sets)

What the files hold is every resource **as it stood at `transactionTime`**, the
instant the job was asked for (FHIR Bulk Data: nothing changed after it): for each
patient the version current then — found in its kept versions when it has changed
since — and the reports uploaded by then. A patient created later is left out; one
deleted while the job runs is gone with its history and is named in the error file.

Memory is bounded: patients are read a page at a time and each line is written as it
is made, so a job holds one page, whatever the user owns.

A job that stops before it finishes — its server restarted, its process was killed —
is never shown as complete: its files keep their temporary names, and its state says
`running` with a heartbeat that no longer moves. Such a job is reported failed: at
once when the server has restarted since (`SERVER_START` differs), else once its
heartbeat is older than `STALE_AFTER`.
"""

import hashlib
import json
import logging
import os
import secrets
import shutil
import threading
from pathlib import Path

from handlers import fhir_mapping
from storage.errors import NotFound
from web.messages import encode_json

log = logging.getLogger("meditrack.bulk")

# One value per start of the server, shared by its worker processes (they are forked
# after this module is imported): a job recorded under another value was left by a
# server that has since stopped.
SERVER_START = secrets.token_hex(8)
STALE_AFTER = 60.0      # seconds without a heartbeat before a running job counts as dead
PAGE = 100              # patients read from the store at a time
TYPES = ("Patient", "DocumentReference")


class BulkJobs:
    """The jobs under one directory: start, read, cancel, sweep."""

    def __init__(self, directory: Path, store, *, clock, retention: float, identifier_system: str):
        self.directory = directory
        self.store = store
        self.clock = clock
        self.retention = retention          # seconds a finished job's files are kept
        self.identifier_system = identifier_system
        self._lock = threading.Lock()       # kick-offs in this process, one at a time

    # -- the records --------------------------------------------------------------------------------

    def path(self, job_id: str) -> Path:
        return self.directory / job_id

    def read(self, job_id: str) -> dict | None:
        """The job as recorded, or None if there is none (or it was cancelled)."""
        try:
            job = json.loads((self.path(job_id) / "job.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        if (self.path(job_id) / "cancelled").exists():
            return None
        return job

    def write(self, job: dict) -> None:
        """job.json replaced whole (write a temporary file, then rename over)."""
        target = self.path(job["id"]) / "job.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(job), encoding="utf-8")
        os.replace(temporary, target)

    def alive(self, job: dict) -> bool:
        """Whether a running job's thread still runs, as far as can be told from outside."""
        return job["serverStart"] == SERVER_START and self.clock() - job["heartbeat"] < STALE_AFTER

    def state(self, job: dict) -> str:
        """running, complete or failed; a running job whose thread is gone is failed."""
        if job["state"] == "running" and not self.alive(job):
            return "failed"
        return job["state"]

    def polled(self, job_id: str) -> None:
        """Note that the status was asked now (in a file: any worker may be asked next)."""
        (self.path(job_id) / "polled").write_text(repr(self.clock()), encoding="ascii")

    def last_polled(self, job_id: str) -> float:
        try:
            return float((self.path(job_id) / "polled").read_text(encoding="ascii"))
        except (FileNotFoundError, ValueError):
            return float("-inf")

    def jobs_of(self, owner_id: str) -> list[dict]:
        return [job for job in map(self.read, self.job_ids()) if job is not None and job["owner"] == owner_id]

    def job_ids(self) -> list[str]:
        try:
            return [entry.name for entry in self.directory.iterdir() if entry.is_dir()]
        except FileNotFoundError:
            return []

    # -- start, cancel, sweep -----------------------------------------------------------------------

    def start(self, owner_id: str, *, request_url: str, base: str, types: list[str], since: str | None,
              transaction_time: str, limit: int) -> str | None:
        """Record a job and start its thread; None if the owner already runs `limit` jobs."""
        with self._lock:
            self.sweep()
            running = [job for job in self.jobs_of(owner_id) if self.state(job) == "running"]
            if len(running) >= limit:
                return None
            job_id = secrets.token_hex(12)
            self.path(job_id).mkdir(mode=0o700, parents=True)  # patient data: its owner only
            now = self.clock()
            job = {"id": job_id, "owner": owner_id, "state": "running", "request": request_url, "base": base,
                   "types": types, "since": since, "transactionTime": transaction_time,
                   "serverStart": SERVER_START, "created": now, "heartbeat": now,
                   "done": 0, "total": None, "output": [], "error": [], "failure": None, "expires": None}
            self.write(job)
        threading.Thread(target=self.run, args=(job,), name=f"bulk-{job_id}", daemon=True).start()
        return job_id

    def cancel(self, job_id: str) -> None:
        """Mark the job cancelled; its files go now if it has stopped, else when its
        thread sees the mark (after the page it is on)."""
        (self.path(job_id) / "cancelled").touch()
        job = json.loads((self.path(job_id) / "job.json").read_text(encoding="utf-8"))
        if self.state(job) != "running":
            shutil.rmtree(self.path(job_id), ignore_errors=True)

    def sweep(self) -> None:
        """Remove the jobs whose time is up: finished (or dead) ones older than the
        retention, and cancelled ones that have stopped."""
        now = self.clock()
        for job_id in self.job_ids():
            try:
                job = json.loads((self.path(job_id) / "job.json").read_text(encoding="utf-8"))
            except (FileNotFoundError, ValueError):
                continue  # being made by a kick-off this instant, or already going
            cancelled = (self.path(job_id) / "cancelled").exists()
            kept_until = job["expires"] or job["heartbeat"] + self.retention  # a dead job: from its last sign
            if self.state(job) != "running" and (cancelled or now > kept_until):
                shutil.rmtree(self.path(job_id), ignore_errors=True)

    # -- the job's thread ---------------------------------------------------------------------------

    def run(self, job: dict) -> None:
        try:
            self.export(job)
        except Exception as exc:  # the store down past its retries, the disk full: the job fails whole
            log.warning("bulk export %s failed: %s", job["id"], type(exc).__name__)
            job.update(state="failed", failure=f"the export could not finish ({type(exc).__name__}); "
                                                "start it again", expires=self.clock() + self.retention)
            self.write_unless_cancelled(job)

    def export(self, job: dict) -> None:
        directory = self.path(job["id"])
        files = {kind: NdjsonFile(directory / f"{kind}.ndjson") for kind in (*job["types"], "OperationOutcome")}
        job["total"] = self.store.count_patients(job["owner"])
        cancelled = False
        try:
            after = None
            while True:
                if (directory / "cancelled").exists():
                    cancelled = True
                    break
                patients = self.store.list_patients(job["owner"], limit=PAGE, after=after)
                for patient in patients:
                    for kind, resource in self.resources_at(job, patient):
                        files[kind].write(resource)
                job.update(done=job["done"] + len(patients), heartbeat=self.clock())
                self.write_unless_cancelled(job)
                if len(patients) < PAGE:
                    break
                after = patients[-1]["id"]
        finally:
            for file in files.values():
                file.close()
        if cancelled:
            shutil.rmtree(directory, ignore_errors=True)
            return
        for kind, file in files.items():
            if file.count:
                file.finish()  # renamed into place: complete
                entry = {"type": kind, "file": file.path.name, "count": file.count, "size": file.size,
                         "sha256": file.sha256}
                job["error" if kind == "OperationOutcome" else "output"].append(entry)
        job.update(state="complete", heartbeat=self.clock(), expires=self.clock() + self.retention)
        if not self.write_unless_cancelled(job):
            shutil.rmtree(directory, ignore_errors=True)  # cancelled as it finished

    def write_unless_cancelled(self, job: dict) -> bool:
        if self.path(job["id"]).is_dir() and not (self.path(job["id"]) / "cancelled").exists():
            self.write(job)
            return True
        return False

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
        versions = store.list_versions(patient["id"], below=below, limit=PAGE)
        for version in versions:
            if version["updatedAt"] <= moment:
                return {"id": patient["id"], **store.get_version(patient["id"], version["version"])}
        if not versions:
            break
        below = versions[-1]["version"]
    raise NotFound("no version of this patient is as old as the export")


class NdjsonFile:
    """One output file: written under a temporary name, counted and hashed as it grows,
    renamed into place by `finish` only once it is complete."""

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
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self.file = None

    def finish(self) -> None:
        os.replace(self.partial, self.path)
