"""FHIR Bulk Data export, asynchronous (https://hl7.org/fhir/uv/bulkdata/export.html, 2.0).

A client that wants everything does not hold one response open for it (a proxy's
timeout cuts a long one off); it asks, then polls:

    GET /fhir/$export  (Prefer: respond-async)      → 202, Content-Location: <status URL>
    GET <status URL>                                 → 202, X-Progress, Retry-After  (running)
                                                     → 429 if polled sooner than Retry-After
                                                     → 200, the manifest: output file URLs
                                                     → 500 OperationOutcome (the job failed)
    GET <file URL>  (the same bearer token)          → the NDJSON, Range supported
    DELETE <status URL>                              → 202: cancelled, its files gone

The job itself — a thread, its files, what "as it stood at transactionTime" means —
is handlers/bulk_jobs.py's. `GET /fhir/Patient/$export` is the same export: every
patient a user can see is theirs. Kick-offs and file downloads are audit events.
"""

import math

from handlers import bulk_jobs
from handlers.fhir import FhirView, fhir_response, prefers
from handlers.fhir_mapping import FHIR_NDJSON, operation_outcome
from handlers.fhir_dates import instant
from handlers.fhir_errors import Refused, Unsupported
from handlers.fhir_search import checked_value, link, split_values
from handlers.inputs import path_id
from storage.base import ReportChunks, utc_timestamp
from storage.errors import NotFound
from web.conditional import NOT_MODIFIED, evaluate_preconditions, quoted, requested_range
from web.messages import Request, Response, json_response
from web.problems import TooManyRequests

OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
POLL_SECONDS = 2          # Retry-After while a job runs: the pace a client polls at
RUNNING_PER_USER = 2      # jobs one user may have running at once


class BulkExport:
    """What the bulk handlers depend on: the jobs, and the FHIR view for the server's URL."""

    def __init__(self, jobs: bulk_jobs.BulkJobs, view: FhirView):
        self.jobs = jobs
        self.view = view

    def status_url(self, base: str, job_id: str) -> str:
        return f"{base}/fhir/bulk/{job_id}"

    def owned_job(self, request: Request) -> dict:
        """The job in the path, if it is the caller's; anyone else's is 404, as is one
        that was cancelled or has expired: a status URL says nothing about others."""
        job = self.jobs.read(path_id(request, "jobId"))
        if job is None or job["owner"] != request.user["id"] or (job["expires"] and
                                                                 self.jobs.clock() > job["expires"]):
            raise NotFound("no export job with this id")
        return job


def kick_off(bulk: BulkExport, request: Request) -> Response:
    """GET /fhir/$export and /fhir/Patient/$export: start a job, 202 with its status URL."""
    if not prefers(request, "respond-async"):
        raise Refused("a bulk export runs in the background: send 'Prefer: respond-async'")
    lenient = prefers(request, "handling=lenient")
    types, since = list(bulk_jobs.TYPES), None
    for name, values in request.query.items():
        if len(values) > 1:
            raise Refused(f"the parameter {name} may be given only once")
        value = checked_value(name, values[0])
        if name == "_outputFormat":
            if value not in OUTPUT_FORMATS:
                raise Unsupported(f"_outputFormat {value!r} is not supported (supported: {', '.join(OUTPUT_FORMATS)})")
        elif name == "_type":
            wanted = split_values(value)
            unknown = [kind for kind in wanted if kind not in bulk_jobs.TYPES]
            if unknown and not lenient:
                raise Unsupported(f"_type {', '.join(unknown)} is not exported "
                                  f"(exported: {', '.join(bulk_jobs.TYPES)})")
            types = [kind for kind in bulk_jobs.TYPES if kind in wanted]
        elif name == "_since":
            since = instant(value)
        elif not lenient:
            raise Unsupported(f"the parameter {name} is not supported by this export "
                              f"(supported: _outputFormat, _type, _since)")
    base = bulk.view.base_url(request)
    job_id = bulk.jobs.start(request.user["id"], request_url=base + request_target(request), base=base,
                             types=types, since=since, transaction_time=utc_timestamp(bulk.jobs.clock()),
                             limit=RUNNING_PER_USER)
    if job_id is None:
        raise TooManyRequests(f"at most {RUNNING_PER_USER} exports may run at once; wait for one to finish",
                              headers=(("Retry-After", str(POLL_SECONDS * 5)),))
    return Response(202, headers=[("Content-Location", bulk.status_url(base, job_id))])


def request_target(request: Request) -> str:
    """The kick-off's path and query, for the manifest's `request`."""
    pairs = [(name, value) for name, values in request.query.items() for value in values]
    return link(request.path, pairs) if pairs else request.path


def status(bulk: BulkExport, request: Request) -> Response:
    """GET <status URL>: 202 while running, 200 with the manifest once complete."""
    job = bulk.owned_job(request)
    state = bulk.jobs.state(job)
    if state == "failed":
        detail = job["failure"] or "the export stopped before it finished (the server restarted); start it again"
        return fhir_response(operation_outcome(500, detail), 500)
    if state == "running":
        waited = bulk.jobs.clock() - bulk.jobs.last_poll(job["id"])
        if waited < POLL_SECONDS:
            raise TooManyRequests(f"poll at most every {POLL_SECONDS} seconds (Retry-After)",
                                  headers=(("Retry-After", str(math.ceil(POLL_SECONDS - waited))),))
        bulk.jobs.record_poll(job["id"])
        # Patients created since the job counted them are read too (and left out): never more than all.
        progress = (f"{min(job['done'], job['total'])} of {job['total']} patients" if job["total"] is not None
                    else "starting")
        return Response(202, headers=[("X-Progress", progress), ("Retry-After", str(POLL_SECONDS))])
    base = bulk.status_url(job["base"], job["id"])
    return json_response({
        "transactionTime": job["transactionTime"],
        "request": job["request"],
        "requiresAccessToken": True,
        "output": [{"type": file["type"], "url": f"{base}/{file['file']}", "count": file["count"]}
                   for file in job["output"]],
        "error": [{"type": file["type"], "url": f"{base}/{file['file']}", "count": file["count"]}
                  for file in job["error"]],
    })


def cancel(bulk: BulkExport, request: Request) -> Response:
    """DELETE <status URL>: the job stops and its files go; the status URL is then 404."""
    job = bulk.owned_job(request)
    bulk.jobs.cancel(job["id"])
    return Response(202)


def download(bulk: BulkExport, request: Request) -> Response:
    """GET <file URL>: one output or error file of a complete job, for its owner only,
    whole or a Range of it; its ETag is the SHA-256 of its bytes."""
    job = bulk.owned_job(request)
    name = request.params["fileName"]
    listed = [file for file in job["output"] + job["error"] if file["file"] == name]
    if bulk.jobs.state(job) != "complete" or not listed:
        raise NotFound("this export has no such file")
    file = listed[0]
    try:
        source = open(bulk.jobs.path(job["id"]) / name, "rb")
    except FileNotFoundError:  # cancelled or swept this instant
        raise NotFound("this export has no such file") from None
    if evaluate_preconditions(request.headers, request.method, file["sha256"]) == NOT_MODIFIED:
        source.close()
        return Response(304, headers=[("ETag", quoted(file["sha256"]))])
    headers = [("Content-Type", FHIR_NDJSON), ("ETag", quoted(file["sha256"])), ("Accept-Ranges", "bytes")]
    try:
        wanted = requested_range(request.headers, file["size"], file["sha256"]) if request.method == "GET" else None
    except Exception:
        source.close()  # a 416
        raise
    if wanted is None:
        return Response(200, ReportChunks(source), headers, content_length=file["size"])
    headers.append(("Content-Range", wanted.content_range(file["size"])))
    return Response(206, ReportChunks(source, start=wanted.start, length=wanted.length), headers,
                    content_length=wanted.length)
