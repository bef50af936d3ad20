"""HTTP tests for the FHIR R4 view: read, $everything, search, the export, and errors as
OperationOutcome under /fhir/, on every store.

What each resource holds element by element is tests/test_fhir_mapping.py's; here, the
routes: content types, ownership (403/404 as for /patients), versions and ETags, paging
by the next link, and an export of a thousand patients that holds each once.
"""

import base64
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from handlers import patients
from storage.errors import Unavailable
from tests.support.api import ApiClient
from tests.support.raw_http import RawConnection, http_request
from tests.support.records import PATIENT
from tests.support.uploads import PNG, pdf_of_size

FHIR_JSON = "application/fhir+json"
FULL = {**PATIENT, "gender": "female", "email": "ada@example.org", "phone": "+44 20 7946 0018",
        "address": {"line": "12 St James's Square", "city": "London", "country": "GB"},
        "bloodType": "O-", "allergies": ["penicillin"], "notes": "Prefers mornings."}


def fhir_path(patient: dict, suffix: str = "") -> str:
    return f"/fhir/Patient/{patient['id']}{suffix}"


def assert_outcome(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == FHIR_JSON
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [(issue["severity"], issue["code"]) for issue in outcome["issue"]] == [("error", code)]
    return outcome


def upload(client, patient, data: bytes, filename: str, content_type: str) -> dict:
    response = client.post(f"/patients/{patient['id']}/reports", files={"file": (filename, data, content_type)},
                           data={"description": "a scan"})
    assert response.status_code == 201, response.text
    return response.json()


# -- read -------------------------------------------------------------------------------------------

def test_read_answers_a_fhir_patient_with_its_version_as_a_weak_etag(client):
    created = client.post("/patients", json=FULL).json()
    response = client.get(fhir_path(created))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == FHIR_JSON
    assert response.headers["ETag"] == 'W/"1"'
    resource = response.json()
    assert (resource["resourceType"], resource["id"], resource["meta"]["versionId"]) == ("Patient", created["id"], "1")
    assert resource["meta"]["lastUpdated"] == created["updatedAt"]
    assert resource["name"] == [{"use": "official", "family": "Lovelace", "given": ["Ada"]}]
    assert (resource["birthDate"], resource["gender"]) == ("1815-12-10", "female")


def test_a_change_moves_meta_version_id_and_the_etag(client, patient):
    client.put(f"/patients/{patient['id']}", json=FULL)
    response = client.get(fhir_path(patient))
    assert response.json()["meta"]["versionId"] == "2" and response.headers["ETag"] == 'W/"2"'


def test_if_none_match_with_the_current_version_is_304_without_a_body(client, patient):
    unchanged = client.get(fhir_path(patient), headers={"If-None-Match": 'W/"1"'})
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["ETag"] == 'W/"1"'
    client.put(f"/patients/{patient['id']}", json=FULL)
    assert client.get(fhir_path(patient), headers={"If-None-Match": 'W/"1"'}).status_code == 200


def test_another_users_patient_is_403_as_an_operation_outcome(client, other_client, patient):
    assert_outcome(other_client.get(fhir_path(patient)), 403, "forbidden")
    assert_outcome(other_client.get(fhir_path(patient, "/$everything")), 403, "forbidden")


def test_a_patient_that_does_not_exist_is_404_as_an_operation_outcome(client):
    outcome = assert_outcome(client.get("/fhir/Patient/0123456789abcdef01234567"), 404, "not-found")
    assert outcome["issue"][0]["diagnostics"]
    assert_outcome(client.get("/fhir/Patient/0123456789abcdef01234567/$everything"), 404, "not-found")


def test_a_malformed_id_is_400_as_an_operation_outcome(client):
    assert_outcome(client.get("/fhir/Patient/not-an-id"), 400, "invalid")


def test_without_a_token_fhir_routes_answer_401_as_an_operation_outcome(anonymous):
    response = anonymous.get("/fhir/Patient")
    assert_outcome(response, 401, "login")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_unknown_fhir_path_and_a_wrong_method_are_outcomes_too(client):
    assert_outcome(client.get("/fhir/Observation"), 404, "not-found")
    response = client.post("/fhir/Patient", json={"resourceType": "Patient"})
    assert_outcome(response, 405, "not-supported")
    assert response.headers["Allow"] == "GET, HEAD"


def test_the_plain_api_keeps_problem_json(client):
    response = client.get("/patients/0123456789abcdef01234567")
    assert response.status_code == 404 and response.headers["Content-Type"] == "application/problem+json"


# -- $everything ------------------------------------------------------------------------------------

def test_everything_is_the_patient_and_a_document_reference_per_report(client, patient):
    pdf, png = pdf_of_size(3000), PNG
    reports = [upload(client, patient, pdf, "panel.pdf", "application/pdf"),
               upload(client, patient, png, "x-ray.png", "image/png")]
    response = client.get(fhir_path(patient, "/$everything"))
    assert response.status_code == 200 and response.headers["Content-Type"] == FHIR_JSON
    bundle = response.json()
    assert (bundle["resourceType"], bundle["type"], bundle["total"]) == ("Bundle", "searchset", 3)
    resources = [entry["resource"] for entry in bundle["entry"]]
    assert [resource["resourceType"] for resource in resources] == ["Patient", "DocumentReference", "DocumentReference"]
    assert resources[0]["meta"]["versionId"] == "3"  # two uploads after the create
    for report, data, document in zip(reports, (pdf, png), resources[1:]):
        attachment = document["content"][0]["attachment"]
        assert document["id"] == report["id"] and document["subject"] == {"reference": f"Patient/{patient['id']}"}
        assert attachment["hash"] == base64.b64encode(hashlib.sha1(data).digest()).decode()
        assert (attachment["size"], attachment["contentType"]) == (len(data), report["contentType"])
        # The attachment's url is the download: following it gives the same bytes.
        assert client.session.get(attachment["url"], timeout=10).content == data
    assert [entry["fullUrl"] for entry in bundle["entry"]][0] == client.url + fhir_path(patient)


def test_the_sha1_is_never_in_the_plain_apis_report(client, patient):
    report = upload(client, patient, PNG, "x-ray.png", "image/png")
    assert "sha1" not in report
    assert "sha1" not in client.get(f"/patients/{patient['id']}").json()["reports"][0]
    assert "sha1" not in client.get(f"/patients/{patient['id']}/reports").json()[0]


# -- search -----------------------------------------------------------------------------------------

def test_search_pages_by_the_next_link_and_counts_every_patient(client, other_client):
    created = {client.post("/patients", json=PATIENT).json()["id"] for _ in range(5)}
    other_client.post("/patients", json=PATIENT)
    seen, url = [], client.url + "/fhir/Patient?_count=2"
    while url:
        bundle = client.session.get(url, timeout=10).json()
        assert (bundle["type"], bundle["total"]) == ("searchset", 5)
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert links["self"] == url
        seen += [entry["resource"]["id"] for entry in bundle["entry"]]
        url = links.get("next")
    assert seen == sorted(created)


@pytest.mark.parametrize("query", ["_count=0", "_count=-1", "_count=abc", "cursor=zzz", "_count=1&_count=2"])
def test_a_bad_count_or_cursor_is_400_as_an_operation_outcome(client, query):
    assert_outcome(client.get(f"/fhir/Patient?{query}"), 400, "invalid")


def test_a_count_above_the_page_limit_is_served_as_the_limit(client):
    # FHIR R4 search.html#count: a server may return fewer than asked, never more.
    for _ in range(101):
        client.post("/patients", json=PATIENT)
    bundle = client.get("/fhir/Patient?_count=5000").json()
    assert (bundle["total"], len(bundle["entry"])) == (101, 100)
    assert "_count=100" in {link["relation"]: link["url"] for link in bundle["link"]}["next"]


def test_a_search_with_no_patients_is_a_bundle_without_entries(client):
    bundle = client.get("/fhir/Patient").json()
    # FHIR R4 json.html: an empty array is left out, never sent as [].
    assert bundle["total"] == 0 and "entry" not in bundle
    assert [link["relation"] for link in bundle["link"]] == ["self"]


# -- DocumentReference -----------------------------------------------------------------------------

def test_every_full_url_in_a_bundle_reads_back_the_same_resource(client, patient):
    upload(client, patient, PNG, "x-ray.png", "image/png")
    bundle = client.get(fhir_path(patient, "/$everything")).json()
    for entry in bundle["entry"]:
        response = client.session.get(entry["fullUrl"], timeout=10)
        assert response.status_code == 200 and response.headers["Content-Type"] == FHIR_JSON
        assert response.json() == entry["resource"]


def test_another_users_report_is_403_and_an_unknown_one_404(client, other_client, patient):
    report = upload(client, patient, PNG, "x-ray.png", "image/png")
    assert_outcome(other_client.get(f"/fhir/DocumentReference/{report['id']}"), 403, "forbidden")
    assert_outcome(client.get("/fhir/DocumentReference/0123456789abcdef01234567"), 404, "not-found")
    client.delete(f"/patients/{patient['id']}/reports/{report['id']}")
    assert_outcome(client.get(f"/fhir/DocumentReference/{report['id']}"), 404, "not-found")


def test_a_refused_report_read_is_in_the_patients_audit_trail(client, other_client, live_server, patient):
    report = upload(client, patient, PNG, "x-ray.png", "image/png")
    other_client.get(f"/fhir/DocumentReference/{report['id']}")
    assert live_server.audit_writer.flush(timeout=10)
    events = client.get(f"/patients/{patient['id']}/audit?limit=1").json()["items"]
    assert [(e["action"], e["outcome"], e["resourceType"], e["resourceId"], e["userId"]) for e in events] == \
        [("read", 403, "Report", report["id"], other_client.user["id"])]


# -- export -----------------------------------------------------------------------------------------

def test_the_export_of_a_thousand_patients_holds_each_patient_and_report_once(client):
    def create_many(_):
        own = ApiClient(client.url)  # a session per thread: requests.Session is not thread-safe
        own.session.headers.update(client.session.headers)
        return [own.post("/patients", json=PATIENT).json()["id"] for _ in range(125)]

    with ThreadPoolExecutor(8) as pool:
        patient_ids = {patient_id for ids in pool.map(create_many, range(8)) for patient_id in ids}
    assert len(patient_ids) == 1000
    with_reports = sorted(patient_ids)[::250]
    report_ids = {upload(client, {"id": patient_id}, PNG, "x-ray.png", "image/png")["id"] for patient_id in with_reports}

    response = client.get("/export")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/fhir+ndjson"
    assert response.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in response.headers
    lines = response.content.split(b"\n")
    assert lines[-1] == b""  # every line ends in a newline, the last one too
    resources = [json.loads(line) for line in lines[:-1]]
    exported_patients = [r["id"] for r in resources if r["resourceType"] == "Patient"]
    exported_reports = [r["id"] for r in resources if r["resourceType"] == "DocumentReference"]
    assert sorted(exported_patients) == sorted(patient_ids) and len(exported_patients) == 1000
    assert sorted(exported_reports) == sorted(report_ids)


def test_an_export_is_chunked_and_the_connection_serves_the_next_request(client, live_server, patient):
    token = client.session.headers["Authorization"]
    with RawConnection(live_server) as connection:
        exported = connection.request(http_request("GET", "/export", headers={"Authorization": token}))
        assert exported.header("Transfer-Encoding") == "chunked"
        assert json.loads(exported.body.splitlines()[0])["id"] == patient["id"]
        assert connection.request(http_request("GET", "/health")).status == 200


def test_an_export_to_a_client_that_closes_after_it_is_still_chunked(client, live_server, patient):
    # RFC 9112 §6.1 forbids chunks only to HTTP/1.0: with `Connection: close` the last
    # chunk still tells the client it got the whole export.
    token = client.session.headers["Authorization"]
    with RawConnection(live_server) as connection:
        exported = connection.request(http_request("GET", "/export", headers={
            "Authorization": token, "Connection": "close"}))
        assert exported.header("Transfer-Encoding") == "chunked" and exported.header("Connection") == "close"
        assert json.loads(exported.body)["id"] == patient["id"]
        assert connection.server_closed()


def test_an_http_1_0_export_ends_with_the_connection(client, live_server, patient):
    # RFC 9112 §6.1: no chunked coding to an HTTP/1.0 client; the close ends the body.
    token = client.session.headers["Authorization"]
    with RawConnection(live_server) as connection:
        connection.send(http_request("GET", "/export", headers={"Authorization": token}, version="HTTP/1.0"))
        raw = connection.rfile.read()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head and b"Connection: close" in head
    assert json.loads(body.splitlines()[0])["id"] == patient["id"]


def test_an_export_of_no_patients_is_an_empty_body(client):
    response = client.get("/export")
    assert (response.status_code, response.content) == (200, b"")


def test_an_export_is_an_audit_event(client, live_server, patient):
    client.get("/export")
    assert live_server.audit_writer.flush(timeout=10)
    events = client.get("/audit?action=export").json()["items"]
    assert [(event["action"], event["resourceType"], event["outcome"]) for event in events] == [("export", "Export", 200)]


def test_an_export_holds_only_the_callers_patients(client, other_client, patient):
    other_client.post("/patients", json=PATIENT)
    ids = [json.loads(line)["id"] for line in client.get("/export").content.splitlines()]
    assert ids == [patient["id"]]


def test_an_export_the_store_fails_half_way_ends_without_its_last_chunk(client, live_server, monkeypatch):
    # RFC 9112 §7.1: only the last chunk says the body is complete. Once the 200 is on
    # its way no error status can follow, so a failure closes the connection short of it.
    for _ in range(2):
        client.post("/patients", json=PATIENT)
    monkeypatch.setattr(patients, "PATIENT_PAGE", 1)
    pages = []
    list_patients = live_server.store.list_patients

    def failing_on_the_second_page(*args, **kwargs):
        pages.append(kwargs.get("after"))
        if len(pages) == 2:
            raise Unavailable("the database went away")
        return list_patients(*args, **kwargs)

    monkeypatch.setattr(live_server.store, "list_patients", failing_on_the_second_page)
    token = client.session.headers["Authorization"]
    with RawConnection(live_server) as connection:
        connection.send(http_request("GET", "/export", headers={"Authorization": token}))
        raw = connection.rfile.read()  # until the server closes the connection
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in head
    size, _, rest = body.partition(b"\r\n")
    assert json.loads(rest[:int(size, 16)])["resourceType"] == "Patient"  # the first page arrived
    assert not body.endswith(b"0\r\n\r\n"), "a failed export must not look complete"


def test_with_a_public_url_every_absolute_url_is_made_from_it(start_server):
    server = start_server(public_url="https://records.example.org")
    client = ApiClient(server.url).register_and_login()
    patient = client.post("/patients", json=FULL).json()
    upload(client, patient, PNG, "x-ray.png", "image/png")
    bundle = client.get(fhir_path(patient, "/$everything")).json()
    urls = [entry["fullUrl"] for entry in bundle["entry"]] + [link["url"] for link in bundle["link"]]
    urls += [extension["url"] for extension in bundle["entry"][0]["resource"]["extension"]]
    urls.append(bundle["entry"][1]["resource"]["content"][0]["attachment"]["url"])
    assert all(url.startswith("https://records.example.org/") for url in urls), urls


def test_a_host_header_that_is_not_a_host_is_not_echoed(client, live_server, patient):
    token = client.session.headers["Authorization"]
    with RawConnection(live_server) as connection:
        connection.send(f"GET /fhir/Patient/{patient['id']}/$everything HTTP/1.1\r\nHost: evil.example/x?\r\n"
                        f"Authorization: {token}\r\n\r\n".encode())
        bundle = connection.read_response().json()
    assert bundle["link"][0]["url"].startswith("http://localhost/fhir/Patient/")


def test_a_head_the_codec_refuses_is_still_an_operation_outcome_under_fhir(client):
    # More query fields than web/http11.py reads: refused before any route is found.
    too_many = "&".join(["_count=1"] * 51)
    assert_outcome(client.get(f"/fhir/Patient?{too_many}"), 400, "invalid")
    plain = client.get(f"/patients?{too_many}")
    assert plain.status_code == 400 and plain.headers["Content-Type"] == "application/problem+json"
