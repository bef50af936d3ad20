"""FHIR Bulk Data export, asynchronous (handlers/bulk_export.py, handlers/bulk_jobs.py), on
every store: kick-off, polling at the server's pace, the manifest, downloads (whole,
ranged, conditional, only by the owner), cancelling, the limit of running jobs, expiry,
what the files hold (each resource as it stood at transactionTime), races with a
cancel, and a job its server lost — restarted, its worker gone, or killed with
`kill -9` mid-job — which is reported failed, never offered as complete.

The server runs in this process on a FakeClock, so polling pace and expiry are moved by
hand. A job's thread is waited for by joining it; a test that needs a job to stay
running holds it before its first page (`held_jobs`)."""

import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from handlers import bulk_jobs
from handlers.bulk_export import POLL_SECONDS
from storage.errors import NotFound
from tests.support.api import ApiClient
from tests.support.clock import FakeClock
from tests.support.deployment import Deployment
from tests.support.platforms import needs_fork, needs_sigkill
from tests.support.uploads import PNG, pdf_of_size
from tests.test_http_fhir import assert_outcome, upload

ADA = {"firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1815-12-10", "gender": "female"}
ASYNC = {"Prefer": "respond-async"}
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)  # 2027-01-15T08:00:00Z


@pytest.fixture
def server(start_server, clock, monkeypatch):
    # Jobs here read at once: the second a job waits for commits in flight (SETTLE_SECONDS)
    # is for a real clock, and this server's commits are all done before the kick-off.
    monkeypatch.setattr(bulk_jobs, "SETTLE_SECONDS", 0.0)
    # Tokens that outlive the hours these tests move the clock by.
    return start_server(clock=clock, token_ttl=7 * 24 * 3600, refresh_ttl=7 * 24 * 3600)


@pytest.fixture
def owner(server) -> ApiClient:
    return ApiClient(server.url).register_and_login()


def kick_off(client: ApiClient, query: str = "", path: str = "/fhir/$export", **headers) -> str:
    response = client.get(f"{path}{query}", headers={**ASYNC, **headers})
    assert response.status_code == 202, response.text
    return response.headers["Content-Location"]


def job_id_of(status_url: str) -> str:
    return status_url.rsplit("/", 1)[-1]


def finish(status_url: str) -> None:
    """Wait for the job's thread to end (it is in this process)."""
    for thread in threading.enumerate():
        if thread.name == f"bulk-{job_id_of(status_url)}":
            thread.join(timeout=60)
            assert not thread.is_alive(), "the export job did not finish"


def manifest_of(client: ApiClient, status_url: str) -> dict:
    finish(status_url)
    response = client.session.get(status_url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def lines_of(client: ApiClient, url: str) -> list[dict]:
    response = client.session.get(url, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/fhir+ndjson"
    return [json.loads(line) for line in response.content.splitlines()]


def outputs(client: ApiClient, manifest: dict) -> dict[str, list[dict]]:
    return {entry["type"]: lines_of(client, entry["url"]) for entry in manifest["output"]}


class Hold:
    """Export jobs wait before reading their first page until `release()`; then each
    runs `after_listing` (if set) once it has read a page, before using it."""

    def __init__(self):
        self.released = threading.Event()
        self.after_listing = None

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def held_jobs(server, monkeypatch):
    hold = Hold()
    real = server.store.list_patients

    def list_patients(owner_id, **options):
        if not threading.current_thread().name.startswith("bulk-"):
            return real(owner_id, **options)
        assert hold.released.wait(timeout=60)
        page = real(owner_id, **options)
        if hold.after_listing:
            hold.after_listing()
        return page
    monkeypatch.setattr(server.store, "list_patients", list_patients)
    yield hold
    hold.release()


# -- the whole flow ------------------------------------------------------------------------------

def test_kick_off_poll_manifest_and_downloads(server, owner):
    ada = owner.post("/patients", json=ADA).json()
    grace = owner.post("/patients", json={**ADA, "firstName": "Grace", "lastName": "Hopper"}).json()
    reports = {upload(owner, ada, PNG, "x-ray.png", "image/png")["id"],
               upload(owner, grace, pdf_of_size(3000), "labs.pdf", "application/pdf")["id"]}
    status_url = kick_off(owner)
    assert status_url.startswith(f"{server.url}/fhir/bulk/")
    manifest = manifest_of(owner, status_url)
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"] == f"{server.url}/fhir/$export"
    assert [(entry["type"], entry["count"]) for entry in manifest["output"]] == [("Patient", 2),
                                                                                ("DocumentReference", 2)]
    files = outputs(owner, manifest)
    assert {resource["id"] for resource in files["Patient"]} == {ada["id"], grace["id"]}
    assert {resource["id"] for resource in files["DocumentReference"]} == reports
    url = manifest["output"][0]["url"]
    whole = owner.session.get(url, timeout=10)
    part = owner.session.get(url, headers={"Range": "bytes=10-99"}, timeout=10)
    assert part.status_code == 206 and part.content == whole.content[10:100]
    assert part.headers["Content-Range"] == f"bytes 10-99/{len(whole.content)}"
    again = owner.session.get(url, headers={"If-None-Match": whole.headers["ETag"]}, timeout=10)
    assert again.status_code == 304
    assert_outcome(owner.session.get(url, headers={"Range": "bytes=99999-"}, timeout=10), 416, "exception")


def test_respond_async_may_carry_parameters_and_a_quoted_value(owner):
    # RFC 7240 §2: a preference's own parameters follow a ';' and a value may be quoted.
    kick_off(owner, **{"Prefer": 'respond-async; wait=10, handling="lenient"'}, query="?_elements=id")


def test_the_patient_level_kick_off_is_the_same_export(owner):
    owner.post("/patients", json=ADA)
    manifest = manifest_of(owner, kick_off(owner, path="/fhir/Patient/$export", query="?_type=Patient"))
    assert manifest["request"].endswith("/fhir/Patient/$export?_type=Patient")
    assert [entry["type"] for entry in manifest["output"]] == ["Patient"]


def test_another_user_gets_404_for_the_status_and_the_files(server, owner):
    owner.post("/patients", json=ADA)
    status_url = kick_off(owner)
    manifest = manifest_of(owner, status_url)
    stranger = ApiClient(server.url).register_and_login()
    assert_outcome(stranger.session.get(status_url, timeout=10), 404, "not-found")
    assert_outcome(stranger.session.get(manifest["output"][0]["url"], timeout=10), 404, "not-found")
    assert_outcome(stranger.session.delete(status_url, timeout=10), 404, "not-found")
    assert ApiClient(server.url).session.get(status_url, timeout=10).status_code == 401


def test_kick_off_and_downloads_are_audit_events(server, owner):
    owner.post("/patients", json=ADA)
    status_url = kick_off(owner)
    lines_of(owner, manifest_of(owner, status_url)["output"][0]["url"])
    assert server.audit_writer.flush(timeout=10)
    events = owner.get("/audit").json()["items"]
    assert [(event["action"], event["resourceType"], event["resourceId"]) for event in events[:2]] == [
        ("download", "Export", job_id_of(status_url)), ("export", "Export", None)]


# -- the parameters -------------------------------------------------------------------------------

@pytest.mark.parametrize("query, headers, code", [
    ("", {"Prefer": "return=minimal"}, "invalid"),                   # not asked asynchronously
    ("?_outputFormat=application/json", ASYNC, "not-supported"),
    ("?_type=Observation", ASYNC, "not-supported"),
    ("?_elements=id", ASYNC, "not-supported"),
    ("?_since=2026-01-31", ASYNC, "invalid"),                       # a day is not an instant
    ("?_since=2026-02-30T00:00:00Z", ASYNC, "invalid"),
    ("?_type=Patient&_type=Patient", ASYNC, "invalid"),
])
def test_a_kick_off_it_cannot_serve_is_400_and_starts_nothing(server, owner, query, headers, code):
    assert_outcome(owner.get(f"/fhir/$export{query}", headers=headers), 400, code)
    assert bulk_jobs.BulkJobs(server.settings.data_dir / "bulk", None, clock=None, retention=0,
                              identifier_system="").job_ids() == []


def test_lenient_handling_leaves_out_what_is_not_supported(owner):
    owner.post("/patients", json=ADA)
    manifest = manifest_of(owner, kick_off(owner, "?_type=Observation,Patient&_elements=id",
                                           Prefer="respond-async, handling=lenient"))
    assert [entry["type"] for entry in manifest["output"]] == ["Patient"]


def test_since_keeps_what_changed_after_it(server, clock, owner):
    old = owner.post("/patients", json=ADA).json()
    upload(owner, old, PNG, "x-ray.png", "image/png")          # 08:00: before _since
    clock.now += 3600
    since = "2027-01-15T08:30:00Z"
    new = owner.post("/patients", json={**ADA, "firstName": "Ida"}).json()
    report = upload(owner, new, PNG, "x-ray.png", "image/png")  # 09:00: after it
    manifest = manifest_of(owner, kick_off(owner, f"?_since={since}"))
    files = outputs(owner, manifest)
    assert [resource["id"] for resource in files["Patient"]] == [new["id"]]
    assert [resource["id"] for resource in files["DocumentReference"]] == [report["id"]]


# -- as it stood at transactionTime -------------------------------------------------------------

def test_the_files_hold_each_resource_as_it_stood_at_transaction_time(server, clock, owner, held_jobs):
    ada = owner.post("/patients", json=ADA).json()
    gone = owner.post("/patients", json={**ADA, "firstName": "Gone"}).json()
    status_url = kick_off(owner)  # transactionTime: now; the job waits before its first read
    clock.now += 60
    owner.request("PATCH", f"/patients/{ada['id']}", json={"lastName": "King"}, headers=MERGE)
    owner.request("PATCH", f"/patients/{gone['id']}", json={"notes": "x"}, headers=MERGE)
    owner.post("/patients", json={**ADA, "firstName": "Later"})
    upload(owner, ada, PNG, "x-ray.png", "image/png")
    # Deleted after the job read it, before it looked up the version of then: gone with its history.
    held_jobs.after_listing = lambda: server.store.delete_patient(gone["id"])
    held_jobs.release()
    manifest = manifest_of(owner, status_url)
    files = outputs(owner, manifest)
    assert [(r["id"], r["name"][0]["family"], r["meta"]["versionId"]) for r in files["Patient"]] == [
        (ada["id"], "Lovelace", "1")]                      # the version of then; nothing made later
    assert "DocumentReference" not in files                # the report came after
    assert [entry["type"] for entry in manifest["error"]] == ["OperationOutcome"]
    errors = lines_of(owner, manifest["error"][0]["url"])
    assert [outcome["resourceType"] for outcome in errors] == ["OperationOutcome"]
    assert gone["id"] in errors[0]["issue"][0]["diagnostics"]


def test_a_patient_unchanged_since_transaction_time_is_exported_even_if_deleted_after_it_is_read(
        server, owner, held_jobs):
    kept = owner.post("/patients", json=ADA).json()
    status_url = kick_off(owner)
    held_jobs.after_listing = lambda: server.store.delete_patient(kept["id"])
    held_jobs.release()
    manifest = manifest_of(owner, status_url)
    assert [r["id"] for r in outputs(owner, manifest)["Patient"]] == [kept["id"]] and manifest["error"] == []


# -- polling, the limit, cancelling, expiry ---------------------------------------------------

def test_polling_faster_than_retry_after_is_429(server, clock, owner, held_jobs):
    owner.post("/patients", json=ADA)
    status_url = kick_off(owner)
    first = owner.session.get(status_url, timeout=10)
    assert first.status_code == 202 and first.headers["Retry-After"] == str(POLL_SECONDS)
    assert first.headers["X-Progress"] in ("starting", "0 of 1 patients")
    too_soon = owner.session.get(status_url, timeout=10)
    assert_outcome(too_soon, 429, "throttled")
    assert too_soon.headers["Retry-After"] == str(POLL_SECONDS)
    clock.now += POLL_SECONDS - 1
    assert owner.session.get(status_url, timeout=10).headers["Retry-After"] == "1"
    clock.now += 1
    assert owner.session.get(status_url, timeout=10).status_code == 202


def test_at_most_two_jobs_of_one_user_run_at_once(server, owner, held_jobs):
    first, second = kick_off(owner), kick_off(owner)
    third = owner.get("/fhir/$export", headers=ASYNC)
    assert_outcome(third, 429, "throttled")
    assert int(third.headers["Retry-After"]) > 0
    kick_off(ApiClient(server.url).register_and_login())  # another user's limit is their own
    held_jobs.release()
    finish(first), finish(second)
    kick_off(owner)


def test_cancelling_a_running_job_stops_it_and_removes_its_files(server, owner, held_jobs):
    owner.post("/patients", json=ADA)
    status_url = kick_off(owner)
    assert owner.session.delete(status_url, timeout=10).status_code == 202
    assert_outcome(owner.session.get(status_url, timeout=10), 404, "not-found")
    held_jobs.release()
    finish(status_url)
    assert not (server.settings.data_dir / "bulk" / job_id_of(status_url)).exists()
    assert_outcome(owner.session.delete(status_url, timeout=10), 404, "not-found")


def test_cancelling_a_complete_job_removes_its_files(server, owner):
    owner.post("/patients", json=ADA)
    status_url = kick_off(owner)
    file_url = manifest_of(owner, status_url)["output"][0]["url"]
    assert owner.session.delete(status_url, timeout=10).status_code == 202
    assert_outcome(owner.session.get(file_url, timeout=10), 404, "not-found")
    assert not (server.settings.data_dir / "bulk" / job_id_of(status_url)).exists()


def test_files_are_kept_for_the_retention_and_then_swept(server, clock, owner):
    owner.post("/patients", json=ADA)
    status_url = kick_off(owner)
    file_url = manifest_of(owner, status_url)["output"][0]["url"]
    clock.now += server.settings.export_retention_hours * 3600 - 1
    assert owner.session.get(file_url, timeout=10).status_code == 200
    clock.now += 2
    assert_outcome(owner.session.get(status_url, timeout=10), 404, "not-found")
    assert_outcome(owner.session.get(file_url, timeout=10), 404, "not-found")
    finish(kick_off(owner))  # a kick-off sweeps what has expired
    assert not (server.settings.data_dir / "bulk" / job_id_of(status_url)).exists()


def test_a_cancel_or_a_download_that_loses_a_race_with_a_removal_is_404(server, owner):
    owner.post("/patients", json=ADA)
    status_url = kick_off(owner)
    file_url = manifest_of(owner, status_url)["output"][0]["url"]
    directory = server.settings.data_dir / "bulk" / job_id_of(status_url)
    (directory / "Patient.ndjson").unlink()  # as a DELETE elsewhere does, after the job was read
    assert_outcome(owner.session.get(file_url, timeout=10), 404, "not-found")
    jobs = bulk_jobs.BulkJobs(directory.parent, server.store, clock=lambda: 0.0, retention=0, identifier_system="")
    shutil.rmtree(directory)
    with pytest.raises(NotFound):
        jobs.cancel(job_id_of(status_url))


def test_a_kick_off_lock_left_by_a_process_that_died_is_taken_over(server, clock, owner):
    owner.post("/patients", json=ADA)
    lock = server.settings.data_dir / "bulk" / f".{owner.user['id']}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(repr(clock() - bulk_jobs.LOCK_STALE_AFTER - 1), encoding="ascii")
    manifest_of(owner, kick_off(owner))
    assert not lock.exists()


# -- a job its server lost ------------------------------------------------------------------------

def left_running(server, owner, pid: int, server_start: str = bulk_jobs.SERVER_START) -> str:
    """A finished job rewritten as another process leaves one mid-way: still `running`,
    its file under its temporary name, recorded by process `pid` of start `server_start`."""
    owner.post("/patients", json=ADA)
    status_url = kick_off(owner)
    manifest_of(owner, status_url)
    directory = server.settings.data_dir / "bulk" / job_id_of(status_url)
    job = json.loads((directory / "job.json").read_text(encoding="utf-8"))
    job.update(state="running", serverStart=server_start, pid=pid, output=[], expires=None)
    (directory / "job.json").write_text(json.dumps(job), encoding="utf-8")
    (directory / "Patient.ndjson").rename(directory / "Patient.ndjson.partial")
    return status_url


@needs_fork
def test_a_job_of_a_sibling_worker_that_died_is_reported_failed(server, owner):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    status_url = left_running(server, owner, pid=int(gone.stdout))
    outcome = assert_outcome(owner.session.get(status_url, timeout=10), 500, "exception")
    assert "start it again" in outcome["issue"][0]["diagnostics"]


@needs_fork
def test_a_job_of_a_sibling_worker_that_runs_is_running(server, owner):
    status_url = left_running(server, owner, pid=os.getppid())  # a process that surely runs
    response = owner.session.get(status_url, timeout=10)
    assert response.status_code == 202 and "X-Progress" in response.headers


def test_a_job_this_process_no_longer_runs_is_reported_failed(server, owner):
    status_url = left_running(server, owner, pid=os.getpid())  # its thread is not among this process's
    assert_outcome(owner.session.get(status_url, timeout=10), 500, "exception")


def test_a_job_left_running_by_an_earlier_start_of_the_server_is_failed_and_offers_no_file(server, owner):
    status_url = left_running(server, owner, pid=os.getppid(), server_start="a-server-that-has-gone")
    assert_outcome(owner.session.get(status_url, timeout=10), 500, "exception")
    assert_outcome(owner.session.get(f"{status_url}/Patient.ndjson", timeout=10), 404, "not-found")


@needs_sigkill
def test_after_a_kill_mid_job_the_status_is_complete_and_whole_or_failed(tmp_path, store_kind):
    """A real process, killed with SIGKILL just after a kick-off, then started again on
    the same data: the job either finished before the kill, and its file holds every
    patient, or the status URL says it failed. Never a shorter file offered as complete."""
    deployment = Deployment(tmp_path / "data", store_kind)
    try:
        first = deployment.start()
        client = ApiClient(first.url).register_and_login()
        for _ in range(300):
            client.post("/patients", json=ADA)
        status_url = client.get("/fhir/$export", headers=ASYNC).headers["Content-Location"]
        first.process.kill()
        first.process.wait(timeout=15)
        second = deployment.start()
        client.url = second.url
        response = client.session.get(status_url.replace(first.url, second.url), timeout=10)
        print("after the kill, the status URL answers", response.status_code)
        if response.status_code == 200:
            manifest = response.json()
            assert [entry["count"] for entry in manifest["output"]] == [300]
            url = manifest["output"][0]["url"].replace(first.url, second.url)
            assert len(client.session.get(url, timeout=10).content.splitlines()) == 300
        else:
            assert_outcome(response, 500, "exception")
    finally:
        deployment.clean_up()
