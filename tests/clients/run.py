"""`make test-clients`: the Python client openapi-generator writes from openapi.json must
work as generated, unedited.

    python tests/clients/run.py [--spec PATH]     (with the python of its own venv: see the Makefile)

Integrators hand openapi.json to a generator and call what comes out, so the contract is
only as good as the client made from it. This fetches openapi-generator's CLI jar from
Maven Central into ~/.cache/meditrack on first use (as tests/hapi_validator.py does for
HAPI), has it validate the document and write its `python` client into a temporary
directory, and drives that client through a patient's whole life on a live server:
register, log in, create, read with the ETag, a conditional read (304), replace with a
current then a stale If-Match (200, 412 with a Problem), a JSON Merge Patch whose null
removes a field, an upload of each file type, downloads whole and by range, the NDJSON
export, a list paged to its end, the FHIR read, delete. One line per step, each checking
what the client gave back; a failed step does not stop the others.

Each WARN line of the generator must be gone or named in ALLOWED_WARNINGS with why it is
the tool's and not the contract's; any other fails the run.

The server runs on SQLite in a fresh data directory, then on MongoDB when
MEDITRACK_TEST_MONGODB_URI names a server (`make test-clients` runs this under
tests/ferretdb.py), with rate limits off and bcrypt at its cheapest. Needs Java and Maven,
and the client's and the product's requirements in the python that runs this. Exits 1
on any failure.
"""

import argparse
import hashlib
import importlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
from bench.processes import stop  # noqa: E402
from bench.soak import start_server  # noqa: E402  (its access log drained, so the pipe never fills)
from tests.support.uploads import JPEG, PDF, PNG  # noqa: E402  (the smallest real files)

GENERATOR = "org.openapitools:openapi-generator-cli:7.25.0"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meditrack"
PACKAGE = "meditrack_client"
SETTINGS = {"MEDITRACK_RATE_LIMIT": "0", "MEDITRACK_AUTH_RATE_LIMIT": "0", "MEDITRACK_BCRYPT_ROUNDS": "4"}
PASSWORD = "generated client password"
WARN_LINE = re.compile(r"^\[[^\]]*\] WARN +\S+ - (.*)$", re.MULTILINE)

# What the generator warns of that says nothing wrong about the contract, and why.
ALLOWED_WARNINGS = {
    "OpenAPI 3.1 support is still in beta. To report an issue related to 3.1 spec, please kindly open "
    "an issue in the Github repo: https://github.com/openAPITools/openapi-generator.":
        "said of every 3.1 document; the contract is 3.1 on purpose (type: [..., null], const)",
    "Failed to get the schema name: null":
        "said once of any document, even one with a single plain schema and no $ref, 3.0 or 3.1: "
        "the generator asks for the $ref name of a schema that has none",
}


def ensure_generator() -> Path:
    """The generator's jar, fetched into the cache on first use (built beside, renamed into place)."""
    built = CACHE_DIR / f"openapi-generator-cli-{hashlib.sha256(GENERATOR.encode()).hexdigest()[:12]}"
    if not built.exists():
        print(f"fetching {GENERATOR} into {built} (first run only)...", file=sys.stderr, flush=True)
        staged = CACHE_DIR / f"{built.name}.partial"
        shutil.rmtree(staged, ignore_errors=True)  # what an interrupted fetch left
        fetched = subprocess.run(["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={GENERATOR}",
                                  f"-DoutputDirectory={staged}", "-Dmdep.stripVersion=true"],
                                 capture_output=True, text=True)
        if fetched.returncode != 0:
            sys.exit(f"Maven could not fetch {GENERATOR}:\n{fetched.stdout}{fetched.stderr}")
        staged.rename(built)
    return built / "openapi-generator-cli.jar"


def generate(jar: Path, spec: Path, out: Path) -> list[str]:
    """Validates the document and writes the client into `out`; every warning of either."""
    warnings = []
    for command in (["validate", "--recommend", "-i", str(spec)],
                    ["generate", "-g", "python", "-i", str(spec), "-o", str(out),
                     f"--additional-properties=packageName={PACKAGE}"]):
        print(f"== openapi-generator {' '.join(command)}", flush=True)
        done = subprocess.run(["java", "-jar", str(jar), *command], capture_output=True, text=True)
        output = done.stdout + done.stderr
        if done.returncode != 0:
            sys.exit(f"openapi-generator {command[0]} failed ({done.returncode}):\n{output}")
        warnings += WARN_LINE.findall(output)
        if command[0] == "validate":  # its findings: "- ..." lines under "Errors:"/"Warnings:"
            warnings += [line.strip()[2:] for line in output.splitlines() if line.strip().startswith("- ")]
    return warnings


def check_warnings(warnings: list[str]) -> bool:
    seen = Counter(warnings)
    for message, count in seen.items():
        known = message in ALLOWED_WARNINGS
        print(f"  {'allowed' if known else 'UNEXPECTED'} (x{count}): {message}")
        if known:
            print(f"      the tool's: {ALLOWED_WARNINGS[message]}")
    for message in ALLOWED_WARNINGS.keys() - seen.keys():
        print(f"  no longer said (its entry can go): {message}")
    return all(message in ALLOWED_WARNINGS for message in seen)


class Steps:
    """One line per step; a failing step is counted and the next one runs."""

    def __init__(self):
        self.passed, self.failed, self.where = 0, [], "generator"

    @contextmanager
    def __call__(self, name: str):
        started = time.monotonic()
        try:
            yield
        except Exception as error:  # noqa: BLE001  (any failure of the client is the finding)
            self.failed.append(f"{self.where}: {name}")
            print(f"  FAIL {name}: {describe(error)}", flush=True)
        else:
            self.passed += 1
            print(f"  ok   {name} ({(time.monotonic() - started) * 1000:.0f} ms)", flush=True)


def describe(error: Exception) -> str:
    status = getattr(error, "status", None)
    body = getattr(error, "body", None)
    if status is not None:  # an ApiException: its status and body say it all
        return f"{type(error).__name__} {status} {error.reason}: {(body or '')[:300]}"
    return f"{type(error).__name__}: {str(error)[:400]}"


def expect(condition, message) -> None:
    if not condition:
        raise AssertionError(message)


def refused(client, status: int, call, *arguments, **options):
    """The ApiException a call must raise, with this status."""
    try:
        answer = call(*arguments, **options)
    except client.ApiException as error:
        expect(error.status == status, f"{error.status} instead of {status}: {error.body}")
        return error
    raise AssertionError(f"no {status}: the call returned {answer!r:.200}")


def drive(client, url: str, steps: Steps) -> None:
    """The generated client, as an integrator would use it, against the server at `url`."""
    configuration = client.Configuration(host=url)
    with client.ApiClient(configuration) as api:
        auth, patients, reports, fhir = (client.AuthApi(api), client.PatientsApi(api),
                                         client.ReportsApi(api), client.FhirApi(api))
        state = SimpleNamespace(reports={}, created=[])
        credentials = client.Credentials(username=f"client.{secrets.token_hex(4)}", password=PASSWORD)
        ada = {"first_name": "Ada", "last_name": "Lovelace", "date_of_birth": date(1985, 12, 10),
               "gender": "female", "email": "ada@example.org", "phone": "+44 20 7946 0018"}

        with steps("register"):
            state.user = auth.register_user(credentials)
            expect(state.user.username == credentials.username, state.user)
        with steps("log in, the access token set in the Configuration"):
            token = auth.login(credentials)
            expect(token.token_type == "Bearer", token)
            configuration.access_token = token.access_token
            expect(auth.get_current_user().id == state.user.id, "GET /auth/me answers for someone else")
        with steps("create a patient: 201, Location, ETag"):
            answer = patients.create_patient_with_http_info(client.PatientInput(**ada))
            state.patient = answer.data
            expect(answer.status_code == 201, answer.status_code)
            expect(answer.headers["Location"].endswith(f"/patients/{state.patient.id}"), answer.headers["Location"])
            expect(answer.headers["ETag"] == f'"{state.patient.version}"', answer.headers["ETag"])
            expect((state.patient.first_name, state.patient.phone) == ("Ada", ada["phone"]), state.patient)
            state.created.append(state.patient.id)
        with steps("timestamps arrive as datetimes"):
            for stamp in (state.user.created_at, state.patient.created_at, state.patient.updated_at):
                expect(isinstance(stamp, datetime) and stamp.tzinfo is not None, f"{stamp!r} is no aware datetime")
        with steps("read it with its ETag"):
            answer = patients.get_patient_with_http_info(state.patient.id)
            state.etag = answer.headers["ETag"]
            expect(state.etag == f'"{state.patient.version}"', state.etag)
            expect(answer.data.to_dict() == state.patient.to_dict(), answer.data)
        with steps("conditional read, If-None-Match: 304 with the ETag"):
            error = refused(client, 304, patients.get_patient, state.patient.id, if_none_match=state.etag)
            expect(error.headers["ETag"] == state.etag, error.headers)
        replacement = client.PatientInput(**ada, notes="Prefers morning appointments.")
        with steps("replace with If-Match: 200, the next version"):
            answer = patients.replace_patient_with_http_info(state.patient.id, replacement, if_match=state.etag)
            expect(answer.status_code == 200 and answer.data.version == state.patient.version + 1, answer.data)
            expect(answer.data.notes == replacement.notes, answer.data)
            state.stale, state.etag = state.etag, answer.headers["ETag"]
        with steps("replace with a stale If-Match: 412, a Problem"):
            error = refused(client, 412, patients.replace_patient, state.patient.id, replacement, if_match=state.stale)
            expect(isinstance(error.data, client.Problem) and error.data.status == 412, f"{error.data!r}: no Problem")
        with steps("merge patch, phone: null removes it"):
            answer = patients.patch_patient_with_http_info(state.patient.id, client.PatientPatch(phone=None),
                                                           if_match=state.etag)
            expect(answer.data.phone is None and answer.data.email == ada["email"], answer.data)
            expect(patients.get_patient(state.patient.id).phone is None, "the phone came back")
            state.etag = answer.headers["ETag"]

        for filename, data in (("scan.pdf", PDF), ("xray.png", PNG), ("photo.jpg", JPEG)):
            with steps(f"upload {filename}"):
                answer = reports.upload_report_with_http_info(state.patient.id, (filename, data),
                                                              description=f"{filename}, from the generated client")
                report = answer.data
                expect(answer.status_code == 201 and report.filename == filename, report)
                expect(report.size == len(data) and report.sha256 == hashlib.sha256(data).hexdigest(), report)
                state.reports[filename] = (report, data)
        with steps("the patient lists its reports (a new version: a new ETag)"):
            answer = patients.get_patient_with_http_info(state.patient.id)
            listed = {report.id: report.sha256 for report in answer.data.reports}
            expect(listed == {report.id: report.sha256 for report, _ in state.reports.values()}, listed)
            state.etag = answer.headers["ETag"]
        for filename, (report, data) in state.reports.items():
            with steps(f"download {filename} whole"):
                body = reports.download_report(state.patient.id, report.id)
                expect(body == data, f"{type(body).__name__} of {len(body)}, not the {len(data)} bytes uploaded")
            with steps(f"download {filename} bytes=4-11"):
                answer = reports.download_report_with_http_info(state.patient.id, report.id, range="bytes=4-11")
                expect(answer.status_code == 206, answer.status_code)
                expect(answer.headers["Content-Range"] == f"bytes 4-11/{len(data)}", answer.headers["Content-Range"])
                expect(answer.data == data[4:12], f"{answer.data!r} instead of {data[4:12]!r}")

        with steps("NDJSON export, GET /export"):
            body = fhir.export_resources()
            expect(isinstance(body, bytes), f"{type(body).__name__}, not bytes")
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            kinds = Counter(line["resourceType"] for line in lines)
            expect(kinds == Counter(Patient=1, DocumentReference=3), kinds)
            expect(lines[0]["id"] == state.patient.id, lines[0])
        with steps("list, limit=2 and nextCursor to the end"):
            for number in range(4):
                state.created.append(patients.create_patient(client.PatientInput(**{**ada, "first_name": f"Ada{number}"})).id)
            seen, cursor, pages = [], None, 0
            while True:
                page = patients.list_patients(limit=2, cursor=cursor)
                seen += [patient.id for patient in page.items]
                pages += 1
                expect(len(page.items) <= 2 and pages <= 5, f"page {pages} has {len(page.items)}")
                if (cursor := page.next_cursor) is None:
                    break
            expect(sorted(seen) == sorted(state.created) and pages == 3, f"{pages} pages: {seen}")
        with steps("FHIR read, GET /fhir/Patient/{id}"):
            resource = fhir.read_fhir_patient(state.patient.id)
            expect(resource.resource_type == "Patient" and resource.id == state.patient.id, resource)
            expect(resource.birth_date == ada["date_of_birth"] and resource.name[0]["family"] == "Lovelace", resource)
            expect(resource.meta.version_id == state.etag.strip('"'), resource.meta)
        with steps("delete: 204, then 404"):
            answer = patients.delete_patient_with_http_info(state.patient.id, if_match=state.etag)
            expect(answer.status_code == 204, answer.status_code)
            error = refused(client, 404, patients.get_patient, state.patient.id)
            expect(isinstance(error.data, client.Problem) and error.data.status == 404, f"{error.data!r}: no Problem")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "openapi.json", help="the document (default: openapi.json)")
    arguments = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers are stopped (finally) then too
    jar = ensure_generator()
    steps = Steps()
    with tempfile.TemporaryDirectory(prefix="meditrack-clients-") as scratch:
        warnings = generate(jar, arguments.spec.resolve(), Path(scratch) / "python")
        print("== generator warnings", flush=True)
        with steps("every generator warning is the tool's"):
            expect(check_warnings(warnings), "a warning no entry of ALLOWED_WARNINGS explains")
        sys.path.insert(0, str(Path(scratch) / "python"))
        client = importlib.import_module(PACKAGE)
        stores = [("sqlite", {})]
        if os.environ.get("MEDITRACK_TEST_MONGODB_URI"):
            database = f"meditrack_clients_{secrets.token_hex(4)}"
            stores.append(("mongodb", {"MONGODB_URI": os.environ["MEDITRACK_TEST_MONGODB_URI"].rstrip("/") + "/" + database}))
        for store, settings in stores:
            steps.where = store
            with tempfile.TemporaryDirectory(prefix="meditrack-clients-data-") as data_dir:
                process, url = start_server(Path(data_dir), {**SETTINGS, **settings})
                try:
                    print(f"== the generated client against MediTrack on {store} ({url})", flush=True)
                    drive(client, url, steps)
                finally:
                    stop(process)
    for name in steps.failed:
        print(f"failed: {name}")
    print(f"clients: {steps.passed} passed, {len(steps.failed)} failed")
    return 1 if steps.failed else 0


if __name__ == "__main__":
    sys.exit(main())
