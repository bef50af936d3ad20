"""/docs shows a curl command for every operation (handlers/docs.py `curl_command`). Here
each one is run for real, in bash, against a live server, with `API`, `AUTH`, `PATIENT`,
`REPORT`, `SESSION` and `JOB` set as the page tells its reader to set them, each on a
fresh account with a patient and a report of its own (and, for the routes of one, a
finished bulk export): every command must get one of its
operation's 2xx answers. (The two exceptions are said where they are made.)"""

import json
import subprocess
import time
from pathlib import Path

import requests

from handlers.operations import curl_command, endpoints_by_tag
from tests.support.uploads import PDF

ROOT = Path(__file__).resolve().parent.parent
SPEC = json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))
ENDPOINTS = [endpoint for group in endpoints_by_tag(SPEC).values() for endpoint in group]
# The password of the spec's examples (login, password change, erasure), so that they are right.
EXAMPLE_PASSWORD = "correct horse battery"


def finished_export(url: str, auth: dict) -> str:
    """A bulk export's job id, once the job is complete (polled at the pace it asks for)."""
    kick_off = requests.get(f"{url}/fhir/$export", headers={**auth, "Prefer": "respond-async"}, timeout=10)
    status_url = kick_off.headers["Content-Location"]
    for _ in range(20):
        status = requests.get(status_url, headers=auth, timeout=10)
        if status.status_code == 200:
            return status_url.rsplit("/", 1)[-1]
        time.sleep(float(status.headers.get("Retry-After", "1")))  # the server's pace, not a guess
    raise AssertionError(f"the export did not finish: {status.status_code} {status.text}")


def prepared_account(url: str, number: int, *, export: bool = False) -> dict[str, str]:
    """A new account with a patient and a report (and a finished export, if asked):
    the shell variables the page asks for."""
    credentials = {"username": f"reader{number}", "password": EXAMPLE_PASSWORD}
    requests.post(f"{url}/auth/register", json=credentials, timeout=10).raise_for_status()
    token = requests.post(f"{url}/auth/login", json=credentials, timeout=10).json()["accessToken"]
    auth = {"Authorization": f"Bearer {token}"}
    patient = requests.post(f"{url}/patients", headers=auth, timeout=10,
                            json={"firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1815-12-10"}).json()
    report = requests.post(f"{url}/patients/{patient['id']}/reports", headers=auth, timeout=10,
                           files={"file": ("scan.pdf", PDF, "application/pdf")}).json()
    session = requests.get(f"{url}/auth/sessions", headers=auth, timeout=10).json()["items"][0]
    job = finished_export(url, auth) if export else ""
    return {"API": url, "AUTH": f"Authorization: Bearer {token}", "PATIENT": patient["id"],
            "REPORT": report["id"], "SESSION": session["id"], "JOB": job}


def test_every_operation_has_a_command_on_the_page():
    from handlers.docs import render_reference
    page = render_reference(SPEC)
    for endpoint in ENDPOINTS:
        command = curl_command(SPEC, endpoint)
        assert command.startswith("curl -s ")
        assert command.replace("&", "&amp;").replace("'", "&#x27;").replace('"', "&quot;") in page


def test_every_command_runs_and_is_answered_with_success(start_server, tmp_path):
    server = start_server()
    (tmp_path / "scan.pdf").write_bytes(PDF)
    for number, endpoint in enumerate(ENDPOINTS):
        variables = prepared_account(server.url, number, export="{jobId}" in endpoint.path)
        command = curl_command(SPEC, endpoint)
        # The status goes last on stdout, whatever the command does with the body.
        script = "curl() { command curl -w '\\n@status %{http_code}' \"$@\"; }\n" + command
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                                cwd=tmp_path, env={"PATH": "/usr/bin:/bin", **variables})
        status = result.stdout.rsplit("@status ", 1)[-1].strip()
        documented = set(endpoint.operation["responses"])
        if endpoint.operation["operationId"] == "refreshTokens":
            # Its example is a refresh token of the right shape that no login handed out.
            assert status == "401", (command, result.stdout)
        elif endpoint.operation["operationId"] == "openReportLink":
            # A link's token comes only from POST on the same path: the page's command has none.
            assert status == "403", (command, result.stdout)
        else:
            assert status.startswith("2") and status in documented, (command, result.stdout, result.stderr)
