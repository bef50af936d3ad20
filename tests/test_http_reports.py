"""HTTP tests for report files: upload, list, download and delete, against a live server.

A report is uploaded as multipart/form-data (RFC 7578) with one part named `file` and
an optional `description`. Its type is decided by its first bytes, never by the
client's label or the filename; it is stored under a generated id, and the client's
filename survives only as cleaned metadata, shown back in an RFC 6266
Content-Disposition. Every refusal (400, 413, 415) must leave nothing on disk.

Most multipart bodies here are built by hand, byte by byte (tests/support/uploads.py),
so a test says exactly what went over the wire instead of what some client library
chose to send. Raw sockets (tests/support/raw_http.py) show what `requests` would
hide: a 413 answered before the body is sent. The last test streams a 20 MiB upload
while `tracemalloc` watches the server, which runs in this same process. The limits
tested (description and filename length, multipart overhead, part headers) are
imported from the code that enforces them.
"""

import hashlib
import http.client
import json
import os
import re
import socket
import tracemalloc
import unicodedata
from contextlib import closing
from urllib.parse import unquote

import pytest

from handlers.reports import MAX_DESCRIPTION, MAX_FILENAME, MULTIPART_OVERHEAD
from storage.ids import new_id
from tests.support.api import ApiClient
from tests.support.defaults import default_of
from tests.support.problems import assert_problem
from tests.support.raw_http import RawConnection, assert_still_serving, http_request
from tests.support.records import PATIENT
from tests.support.uploads import BOUNDARY, JPEG, MULTIPART, PDF, PNG, file_part, multipart, part, pdf_of_size
from web.multipart import MultipartParser

REPORT_FIELDS = {"id", "filename", "contentType", "size", "sha256", "description", "uploadedAt"}
UPLOADED_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
MAX_PART_HEADER_BYTES = default_of(MultipartParser, "max_header_bytes")
MAX_PART_HEADERS = default_of(MultipartParser, "max_headers")
MiB = 1024 * 1024


# -- requests to the report routes ---------------------------------------------------------

def reports_path(patient_id: str) -> str:
    return f"/patients/{patient_id}/reports"


def upload_body(client: ApiClient, patient_id: str, body: bytes, content_type: str = MULTIPART):
    return client.post(reports_path(patient_id), data=body, headers={"Content-Type": content_type})


def upload(client: ApiClient, patient_id: str, data: bytes, filename: str = "scan.pdf",
           content_type: str = "application/pdf", description: str | None = None):
    """Upload one file the way a browser would, with `requests` building the body."""
    form = None if description is None else {"description": description}
    return client.post(reports_path(patient_id), files={"file": (filename, data, content_type)}, data=form)


def uploaded(client: ApiClient, patient_id: str, data: bytes = PDF, **options) -> dict:
    response = upload(client, patient_id, data, **options)
    assert response.status_code == 201, response.text
    return response.json()


def new_patient(client: ApiClient) -> dict:
    response = client.post("/patients", json=PATIENT)
    assert response.status_code == 201, response.text
    return response.json()


# -- what the store holds ---------------------------------------------------------------

def stored_ids(server) -> set[str]:
    """The ids of every report whose bytes the store holds, committed or not (SQLite:
    files and temp files under DATA_DIR/reports/; MongoDB: GridFS files and chunks)."""
    return server.store.stored_report_ids()


def stored_bytes(server, patient_id: str, report_id: str) -> bytes:
    report, chunks = server.store.open_report(patient_id, report_id)
    try:
        return b"".join(chunks)
    finally:
        chunks.close()


@pytest.fixture
def stored_before(live_server) -> set[str]:
    """What the store held when the test began: a failed upload must leave exactly this."""
    return stored_ids(live_server)


def assert_report(report: dict, data: bytes, content_type: str) -> None:
    assert set(report) == REPORT_FIELDS
    assert re.fullmatch(r"[0-9a-f]{24}", report["id"])
    assert report["contentType"] == content_type
    assert report["size"] == len(data)
    assert report["sha256"] == hashlib.sha256(data).hexdigest()
    assert UPLOADED_AT.fullmatch(report["uploadedAt"])


def content_disposition(header: str) -> tuple[str, str]:
    """The ASCII `filename` and the decoded `filename*` of an attachment disposition."""
    match = re.fullmatch(r"""attachment; filename="([^"\\]*)"; filename\*=UTF-8''([A-Za-z0-9%!#$&+\-.^_`|~]*)""",
                         header)
    assert match, f"not an RFC 6266 attachment with filename and filename*: {header!r}"
    return match[1], unquote(match[2], encoding="utf-8", errors="strict")


def is_safe_filename(name: str) -> bool:
    return (bool(name) and "/" not in name and "\\" not in name and '"' not in name and "'" not in name
            and not any(unicodedata.category(c)[0] == "C" for c in name))


# -- upload ----------------------------------------------------------------------------

@pytest.mark.parametrize("data, filename, content_type", [
    (PDF, "scan.pdf", "application/pdf"),
    (PNG, "xray.png", "image/png"),
    (JPEG, "photo.jpg", "image/jpeg"),
])
def test_upload_answers_201_with_location_and_the_report(client, patient, data, filename, content_type):
    response = upload(client, patient["id"], data, filename, content_type, description="blood test")
    assert response.status_code == 201, response.text
    report = response.json()
    assert_report(report, data, content_type)
    assert report["filename"] == filename and report["description"] == "blood test"
    assert response.headers["Location"] == f"/patients/{patient['id']}/reports/{report['id']}"


@pytest.mark.parametrize("data, sniffed", [(PNG, "image/png"), (JPEG, "image/jpeg"), (PDF, "application/pdf")])
def test_content_type_is_sniffed_ignoring_the_label_and_the_extension(client, patient, data, sniffed):
    label = "image/png" if sniffed == "application/pdf" else "application/pdf"
    extension = "x.png" if sniffed == "application/pdf" else "x.pdf"
    report = uploaded(client, patient["id"], data, filename=extension, content_type=label)
    assert report["contentType"] == sniffed and report["filename"] == extension


def test_a_file_part_without_content_type_is_sniffed_too(client, patient):
    response = upload_body(client, patient["id"], multipart(part("file", PNG, filename="scan")))
    assert response.status_code == 201, response.text
    assert response.json()["contentType"] == "image/png"


def test_a_file_shorter_than_the_longest_signature_is_sniffed_on_what_there_is(client, patient):
    report = uploaded(client, patient["id"], b"\xff\xd8\xff", filename="tiny.jpg")
    assert report["contentType"] == "image/jpeg" and report["size"] == 3


def test_upload_without_description_stores_null(client, patient):
    assert uploaded(client, patient["id"])["description"] is None


def test_a_description_of_500_characters_in_utf8_round_trips(client, patient):
    prefix = "Bluttest – März 🩸"
    description = prefix + "é" * (MAX_DESCRIPTION - len(prefix))
    assert len(description) == MAX_DESCRIPTION
    report = uploaded(client, patient["id"], description=description)
    assert report["description"] == description
    assert client.get(reports_path(patient["id"])).json()[0]["description"] == description


def test_the_patient_and_the_report_list_show_the_uploaded_reports(client, patient):
    first = uploaded(client, patient["id"], PDF)
    second = uploaded(client, patient["id"], PNG, filename="b.png")
    listed = client.get(reports_path(patient["id"]))
    assert listed.status_code == 200
    assert listed.headers["Content-Type"] == "application/json; charset=utf-8"
    assert listed.json() == [first, second]
    assert client.get(f"/patients/{patient['id']}").json()["reports"] == [first, second]


def test_a_patient_without_reports_lists_an_empty_array(client, patient):
    response = client.get(reports_path(patient["id"]))
    assert response.status_code == 200 and response.json() == []


def test_the_stored_bytes_are_named_by_the_report_id(client, patient, live_server):
    report = uploaded(client, patient["id"], filename="../../scan.pdf")
    assert report["id"] in stored_ids(live_server)
    assert stored_bytes(live_server, patient["id"], report["id"]) == PDF


# -- 415: not a PDF, PNG or JPEG, or not multipart --------------------------------------

@pytest.mark.parametrize("data, filename, content_type", [
    (b"<!DOCTYPE html><html><script>alert(1)</script></html>", "x.pdf", "application/pdf"),
    (b"Patient: Ada Lovelace\nDiagnosis: none\n", "notes.txt", "text/plain"),
    (b"hi", "short.pdf", "application/pdf"),
    (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "x.png", "image/png"),
    (b" %PDF-1.4 a signature that does not start the file", "x.pdf", "application/pdf"),
    (b"\x89PNG\r\n\x1b\n almost a PNG signature", "x.png", "image/png"),
])
def test_a_file_that_is_not_pdf_png_or_jpeg_is_415_and_not_stored(client, patient, live_server, stored_before,
                                                                   data, filename, content_type):
    assert_problem(upload(client, patient["id"], data, filename, content_type), 415)
    assert client.get(reports_path(patient["id"])).json() == []
    assert stored_ids(live_server) == stored_before


@pytest.mark.parametrize("content_type", ["application/json", "application/pdf", "text/plain",
                                          "application/x-www-form-urlencoded", "multipart/mixed; boundary=x"])
def test_a_request_that_is_not_multipart_form_data_is_415(client, patient, content_type):
    assert_problem(upload_body(client, patient["id"], multipart(file_part(PDF)), content_type), 415)


def test_a_json_body_instead_of_multipart_is_415(client, patient):
    assert_problem(client.post(reports_path(patient["id"]), json={"file": "JVBERi0xLjQK"}), 415)


# -- 400: the form is not what the route takes ------------------------------------------

def test_an_empty_file_is_400_and_not_stored(client, patient, live_server, stored_before):
    assert_problem(upload_body(client, patient["id"], multipart(file_part(b""))), 400)
    assert client.get(reports_path(patient["id"])).json() == []
    assert stored_ids(live_server) == stored_before


@pytest.mark.parametrize("parts", [
    pytest.param([part("description", b"no file here")], id="no-file-part"),
    pytest.param([], id="no-parts-at-all"),
    pytest.param([file_part(PDF), file_part(PNG, "b.png")], id="two-file-parts"),
    pytest.param([file_part(PDF), part("comment", b"hello")], id="unknown-extra-text-part"),
    pytest.param([file_part(PDF), part("attachment", PNG, filename="b.png")], id="unknown-extra-file-part"),
    pytest.param([part("file", PDF)], id="file-part-without-filename"),
    pytest.param([file_part(PDF), part("description", b"x", filename="d.txt")], id="description-as-a-file"),
    pytest.param([file_part(PDF), part("description", b"a"), part("description", b"b")], id="two-descriptions"),
    pytest.param([part("description", b"a")] * 5 + [file_part(PDF)], id="more-parts-than-allowed"),
])
def test_a_form_without_exactly_one_file_and_an_optional_description_is_400(client, patient, live_server, stored_before, parts):
    assert_problem(upload_body(client, patient["id"], multipart(*parts)), 400)
    assert client.get(reports_path(patient["id"])).json() == []
    assert stored_ids(live_server) == stored_before


@pytest.mark.parametrize("parts, says", [
    ([part("file", PDF)], "needs a filename"),
    ([file_part(PDF), file_part(PNG, "b.png")], "only once"),
    ([file_part(PDF), part("comment", b"hello")], "only the parts 'file' and 'description'"),
    ([file_part(PDF), part("description", b"x", filename="d.txt")], "'description' is text"),
])
def test_each_malformed_form_is_told_what_is_wrong(client, patient, parts, says):
    response = upload_body(client, patient["id"], multipart(*parts))
    assert response.status_code == 400 and says in response.json()["detail"]


@pytest.mark.parametrize("description", [
    pytest.param("x" * (MAX_DESCRIPTION + 1), id="one-over-ascii"),
    pytest.param("é" * (MAX_DESCRIPTION + 1), id="one-over-two-byte"),
    pytest.param("🩺" * (MAX_DESCRIPTION + 1), id="one-over-four-byte"),
    pytest.param("x" * (10 * MAX_DESCRIPTION), id="ten-times-ascii"),
])
def test_a_description_over_500_characters_is_400_naming_the_field(client, patient, description):
    body = assert_problem(upload(client, patient["id"], PDF, description=description), 400)
    assert [error["field"] for error in body.get("errors", [])] == ["description"]
    assert client.get(reports_path(patient["id"])).json() == []


@pytest.mark.parametrize("raw", [b"\xff\xfe not utf-8", b"nul\x00inside"])
def test_a_description_that_is_not_text_is_400(client, patient, raw):
    assert_problem(upload_body(client, patient["id"], multipart(file_part(PDF), part("description", raw))), 400)


@pytest.mark.parametrize("content_type", [
    pytest.param("multipart/form-data", id="no-boundary"),
    pytest.param("multipart/form-data; boundary=", id="empty-boundary"),
    pytest.param("multipart/form-data; boundary=" + "b" * 71, id="71-character-boundary"),
    pytest.param('multipart/form-data; boundary="ends-in-space "', id="boundary-ending-in-space"),
    pytest.param("multipart/form-data; boundary=a@b", id="boundary-with-a-forbidden-character"),
    pytest.param(f"multipart/form-data; boundary={BOUNDARY}; boundary=other", id="two-boundaries"),
    pytest.param('multipart/form-data; boundary="unterminated', id="unterminated-quoted-boundary"),
])
def test_a_missing_or_malformed_boundary_is_400(client, patient, content_type):
    assert_problem(upload_body(client, patient["id"], multipart(file_part(PDF)), content_type), 400)


def test_a_boundary_that_the_body_does_not_use_is_400(client, patient):
    body = multipart(file_part(PDF), boundary="a-different-boundary")
    assert_problem(upload_body(client, patient["id"], body), 400)


def test_a_body_that_ends_before_the_closing_boundary_is_400_and_not_stored(client, patient, live_server, stored_before):
    body = multipart(file_part(PDF))
    truncated = body[:body.rindex(b"\r\n--")]  # the whole file, but no closing delimiter
    assert_problem(upload_body(client, patient["id"], truncated), 400)
    assert client.get(reports_path(patient["id"])).json() == []
    assert stored_ids(live_server) == stored_before


DELIMITER = b"--" + BOUNDARY.encode("ascii")
CLOSE = b"\r\n" + DELIMITER + b"--\r\n"
FILE_DISPOSITION = b'Content-Disposition: form-data; name="file"; filename="a.pdf"'


def with_headers(*lines: bytes) -> bytes:
    """A one-part body whose part has exactly these header lines and a PDF as data."""
    return DELIMITER + b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\n" + PDF + CLOSE


MALFORMED_BODIES = {
    "empty-body": b"",
    "no-delimiter-at-all": PDF,
    "only-a-preamble": b"this is a preamble\r\n" * 20,
    "bytes-after-the-boundary": DELIMITER + b"X\r\n" + FILE_DISPOSITION + b"\r\n\r\n" + PDF + CLOSE,
    "delimiter-line-not-ended-by-crlf": DELIMITER + b" junk" + FILE_DISPOSITION + b"\r\n\r\n" + PDF + CLOSE,
    "no-content-disposition": with_headers(b"Content-Type: application/pdf"),
    "disposition-not-form-data": with_headers(b'Content-Disposition: attachment; name="file"; filename="a.pdf"'),
    "disposition-without-name": with_headers(b'Content-Disposition: form-data; filename="a.pdf"'),
    "disposition-with-empty-name": with_headers(b'Content-Disposition: form-data; name=""; filename="a.pdf"'),
    "header-line-without-colon": with_headers(b'Content-Disposition form-data; name="file"; filename="a.pdf"'),
    "header-name-with-space": with_headers(b'Content Disposition: form-data; name="file"; filename="a.pdf"'),
    "obsolete-line-folding": with_headers(b'Content-Disposition: form-data;', b' name="file"; filename="a.pdf"'),
    "two-content-dispositions": with_headers(FILE_DISPOSITION, b'Content-Disposition: form-data; name="x"'),
    "two-content-types": with_headers(FILE_DISPOSITION, b"Content-Type: a/b", b"Content-Type: c/d"),
    "repeated-name-parameter": with_headers(b'Content-Disposition: form-data; name="file"; name="x"; filename="a"'),
    "repeated-filename-parameter": with_headers(
        b'Content-Disposition: form-data; name="file"; filename="a.pdf"; filename="b.pdf"'),
    "unterminated-quoted-string": with_headers(b'Content-Disposition: form-data; name="file; filename="a.pdf'),
    "garbage-between-parameters": with_headers(b'Content-Disposition: form-data; name="file" filename="a.pdf"'),
    "filename-star-not-utf8-charset": with_headers(
        b"Content-Disposition: form-data; name=\"file\"; filename*=ISO-8859-1''caf%E9.pdf"),
    "filename-star-invalid-utf8": with_headers(b"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''%FF.pdf"),
    "filename-star-with-nul": with_headers(b"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''a%00b.pdf"),
    "filename-star-without-quotes-part": with_headers(b'Content-Disposition: form-data; name="file"; filename*=a.pdf'),
    "header-not-utf8": with_headers(b'Content-Disposition: form-data; name="file"; filename="\xff\xfe.pdf"'),
    "nul-in-a-header": with_headers(b'Content-Disposition: form-data; name="fi\x00le"; filename="a.pdf"'),
    "bare-cr-in-a-header": with_headers(b'Content-Disposition: form-data; name="file"; filename="a\r.pdf"'),
    "part-headers-over-the-limit": with_headers(FILE_DISPOSITION, b"X-Padding: " + b"p" * MAX_PART_HEADER_BYTES),
    "more-header-lines-than-the-limit": with_headers(FILE_DISPOSITION,
                                                     *[b"X-Extra-%d: x" % i for i in range(MAX_PART_HEADERS)]),
    "ends-inside-the-headers": DELIMITER + b"\r\n" + FILE_DISPOSITION,
    "ends-inside-the-data": DELIMITER + b"\r\n" + FILE_DISPOSITION + b"\r\n\r\n" + PDF,
    "ends-after-a-delimiter-line": DELIMITER + b"\r\n" + FILE_DISPOSITION + b"\r\n\r\n" + PDF + b"\r\n" + DELIMITER,
    "last-delimiter-not-closing": DELIMITER + b"\r\n" + FILE_DISPOSITION + b"\r\n\r\n" + PDF + b"\r\n" + DELIMITER
                                  + b"\r\n",
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_a_malformed_multipart_body_is_400_stores_nothing_and_the_server_keeps_serving(
        client, patient, live_server, stored_before, body):
    assert_problem(upload_body(client, patient["id"], body), 400)
    assert client.get(reports_path(patient["id"])).json() == []
    assert stored_ids(live_server) == stored_before
    assert_still_serving(live_server)


def test_a_well_formed_hand_built_body_is_accepted_so_the_corpus_fails_for_its_flaw(client, patient):
    # The control for the corpus above: the same shape with nothing wrong is a 201.
    response = upload_body(client, patient["id"], with_headers(FILE_DISPOSITION, b"Content-Type: application/pdf"))
    assert response.status_code == 201, response.text


def test_preamble_epilogue_and_transport_padding_are_accepted(client, patient):
    # RFC 2046 §5.1.1: a preamble and an epilogue are ignored, and a delimiter line may end
    # in spaces or tabs before its CRLF.
    body = (b"This is the preamble.\r\n" + DELIMITER + b" \t\r\n" + FILE_DISPOSITION + b"\r\n\r\n" + PDF
            + CLOSE + b"This is the epilogue.\r\n")
    response = upload_body(client, patient["id"], body)
    assert response.status_code == 201, response.text
    assert response.json()["sha256"] == hashlib.sha256(PDF).hexdigest()


# -- 413: over the size limit, and nothing stored ---------------------------------------

@pytest.fixture
def small_server(start_server):
    """A server that takes files of at most 1000 bytes, with a user and a patient."""
    server = start_server(max_upload_bytes=1000)
    server.client = ApiClient(server.url).register_and_login()
    server.patient = new_patient(server.client)
    return server


def test_a_file_of_exactly_the_limit_is_201(small_server):
    data = pdf_of_size(1000)
    response = upload(small_server.client, small_server.patient["id"], data)
    assert response.status_code == 201, response.text
    assert_report(response.json(), data, "application/pdf")


def test_a_file_one_byte_over_the_limit_is_413_and_nothing_is_stored(small_server):
    client, patient_id = small_server.client, small_server.patient["id"]
    before = uploaded(client, patient_id, pdf_of_size(10))
    assert stored_ids(small_server) == {before["id"]}
    assert_problem(upload(client, patient_id, pdf_of_size(1001)), 413)
    assert stored_ids(small_server) == {before["id"]}
    assert client.get(reports_path(patient_id)).json() == [before]


def test_a_file_over_the_limit_inside_an_acceptable_content_length_is_413_from_the_parser(small_server):
    # The declared length passes the route's header check (limit + multipart overhead),
    # so only the parser's own file limit can refuse it.
    client, patient_id = small_server.client, small_server.patient["id"]
    body = multipart(file_part(pdf_of_size(5000)))
    assert len(body) <= 1000 + MULTIPART_OVERHEAD
    assert_problem(upload_body(client, patient_id, body), 413)
    assert stored_ids(small_server) == set()
    assert client.get(reports_path(patient_id)).json() == []


def upload_headers(server, patient_id: str, content_length: int, **extra: str) -> bytes:
    headers = {"Authorization": server.client.session.headers["Authorization"], "Content-Type": MULTIPART,
               "Content-Length": str(content_length), **extra}
    return http_request("POST", reports_path(patient_id), headers=headers)


def test_a_declared_length_far_over_the_limit_is_413_before_the_body_is_sent(small_server):
    with RawConnection(small_server) as connection:
        response = connection.request(upload_headers(small_server, small_server.patient["id"], 10**12))
        assert_problem(response, 413)
        assert response.header("Connection") == "close" and connection.server_closed()
    assert stored_ids(small_server) == set()
    assert_still_serving(small_server)


def test_a_declared_length_one_over_the_route_limit_is_413(small_server):
    with RawConnection(small_server) as connection:
        length = 1000 + MULTIPART_OVERHEAD + 1
        assert_problem(connection.request(upload_headers(small_server, small_server.patient["id"], length)), 413)


def test_expect_continue_with_a_length_over_the_limit_is_413_without_100_continue(small_server):
    with RawConnection(small_server) as connection:
        headers = upload_headers(small_server, small_server.patient["id"], 10**9, Expect="100-continue")
        assert_problem(connection.request(headers), 413)


# -- download ------------------------------------------------------------------------

@pytest.mark.parametrize("data, content_type", [(PDF, "application/pdf"), (PNG, "image/png"), (JPEG, "image/jpeg")])
def test_download_returns_the_exact_bytes_with_safe_headers(client, patient, data, content_type):
    report = uploaded(client, patient["id"], data, filename="scan.bin", content_type="application/octet-stream")
    response = client.get(f"{reports_path(patient['id'])}/{report['id']}")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["ETag"] == f"\"{hashlib.sha256(data).hexdigest()}\""
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert content_disposition(response.headers["Content-Disposition"]) == ("scan.bin", "scan.bin")


def download_names(client, patient_id: str, report_id: str) -> tuple[str, str]:
    response = client.get(f"{reports_path(patient_id)}/{report_id}")
    assert response.status_code == 200
    return content_disposition(response.headers["Content-Disposition"])


@pytest.mark.parametrize("filename", ["résumé 2024.pdf", "Befund für Müller.pdf", "診断書.pdf", "x-ray 🦴.png",
                                      "100% sure; a=b,c.pdf"])
def test_a_non_ascii_filename_round_trips_through_rfc_6266_filename_star(client, patient, filename):
    report = uploaded(client, patient["id"], filename=filename)
    assert report["filename"] == filename
    fallback, exact = download_names(client, patient["id"], report["id"])
    assert exact == filename
    assert fallback.isascii() and fallback.isprintable() and '"' not in fallback and "\\" not in fallback
    assert len(fallback) == len(filename)  # one stand-in character for each character it cannot show


def test_an_rfc_8187_filename_star_in_the_upload_wins_over_filename(client, patient):
    disposition = "form-data; name=\"file\"; filename=\"resume.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%202024.pdf"
    response = upload_body(client, patient["id"], multipart(part("file", PDF, disposition=disposition)))
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == "résumé 2024.pdf"


@pytest.mark.parametrize("filename, stored", [
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\win.ini", "win.ini"),
    ("C:\\temp\\x.pdf", "x.pdf"),
    ("/absolute/path/scan.pdf", "scan.pdf"),
    ("tab\there.pdf", "tabhere.pdf"),
    ('say "hi" it\'s.pdf', "say hi its.pdf"),
    (".hidden.pdf", "hidden.pdf"),
    ("..", "report"),
    ("", "report"),
    ("x" * 2 * MAX_FILENAME + ".pdf", "x" * MAX_FILENAME),
])
def test_a_dangerous_filename_is_stored_cleaned(client, patient, filename, stored):
    response = upload_body(client, patient["id"], multipart(file_part(PDF, filename)))
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["filename"] == stored and is_safe_filename(report["filename"])
    assert download_names(client, patient["id"], report["id"])[1] == stored


@pytest.mark.parametrize("encoded, stored", [
    ("..%2F..%2Fetc%2Fpasswd%09.pdf", "passwd.pdf"),                  # separators and a tab
    ("report%C2%85%C2%9F.pdf", "report.pdf"),                          # C1 control characters
    ("invoice%E2%80%AEfdp.exe", "invoicefdp.exe"),                     # RIGHT-TO-LEFT OVERRIDE
    ("zero%E2%80%8Bwidth.pdf", "zerowidth.pdf"),                       # ZERO WIDTH SPACE
    ("C%3A%5Ctemp%5Cx.pdf", "x.pdf"),                                  # backslashes, unescaped
])
def test_control_and_format_characters_sent_in_filename_star_are_removed(client, patient, encoded, stored):
    disposition = f"form-data; name=\"file\"; filename*=UTF-8''{encoded}"
    response = upload_body(client, patient["id"], multipart(part("file", PDF, disposition=disposition)))
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == stored


def test_a_filename_with_crlf_from_a_real_client_is_stored_without_control_characters(client, patient):
    # requests (like browsers, per the HTML form-data rules) sends CR and LF as %0D and %0A.
    report = uploaded(client, patient["id"], filename="../../etc/passwd\r\n.pdf")
    assert is_safe_filename(report["filename"]) and report["filename"].startswith("passwd")
    fallback, exact = download_names(client, patient["id"], report["id"])
    assert exact == report["filename"] and "\r" not in fallback and "\n" not in fallback


def test_a_filename_with_crlf_in_filename_star_is_refused_rather_than_stored(client, patient):
    # The parser refuses a decoded CR or LF (web/multipart.py, NOTE in
    # _refuse_control_characters): such a name is never stored, cleaned or not.
    disposition = "form-data; name=\"file\"; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd%0D%0A.pdf"
    assert_problem(upload_body(client, patient["id"], multipart(part("file", PDF, disposition=disposition))), 400)
    assert client.get(reports_path(patient["id"])).json() == []


def test_a_3_mib_file_round_trips_byte_exact(client, patient):
    data = b"%PDF-1.7\n" + os.urandom(3 * MiB - 9)
    report = uploaded(client, patient["id"], data, filename="big.pdf")
    assert report["size"] == 3 * MiB
    response = client.get(f"{reports_path(patient['id'])}/{report['id']}")
    assert response.status_code == 200 and response.headers["Content-Length"] == str(3 * MiB)
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(data).hexdigest() == report["sha256"]


# -- delete ----------------------------------------------------------------------------

def test_delete_is_204_then_the_report_is_404_and_its_file_is_gone(client, patient, live_server):
    report = uploaded(client, patient["id"])
    path = f"{reports_path(patient['id'])}/{report['id']}"
    assert report["id"] in stored_ids(live_server)
    response = client.delete(path)
    assert response.status_code == 204 and response.content == b""
    assert_problem(client.get(path), 404)
    assert_problem(client.delete(path), 404)
    assert report["id"] not in stored_ids(live_server)
    assert client.get(reports_path(patient["id"])).json() == []


def test_deleting_one_report_leaves_the_others(client, patient, live_server):
    kept, deleted = uploaded(client, patient["id"], PDF), uploaded(client, patient["id"], PNG)
    assert client.delete(f"{reports_path(patient['id'])}/{deleted['id']}").status_code == 204
    assert client.get(reports_path(patient["id"])).json() == [kept]
    assert stored_bytes(live_server, patient["id"], kept["id"]) == PDF
    assert deleted["id"] not in stored_ids(live_server)


def test_deleting_the_patient_deletes_all_its_report_files(client, patient, live_server):
    reports = [uploaded(client, patient["id"], data) for data in (PDF, PNG, JPEG)]
    ids = {report["id"] for report in reports}
    assert ids <= stored_ids(live_server)
    assert client.delete(f"/patients/{patient['id']}").status_code == 204
    assert ids & stored_ids(live_server) == set()
    assert_problem(client.get(reports_path(patient["id"])), 404)
    assert_problem(client.get(f"{reports_path(patient['id'])}/{reports[0]['id']}"), 404)


# -- owners, ids, tokens ----------------------------------------------------------------

def every_report_request(patient_id: str, report_id: str):
    """(method, path, keyword arguments) for each of the four report routes."""
    return [("GET", reports_path(patient_id), {}),
            ("POST", reports_path(patient_id), {"files": {"file": ("a.pdf", PDF, "application/pdf")}}),
            ("GET", f"{reports_path(patient_id)}/{report_id}", {}),
            ("DELETE", f"{reports_path(patient_id)}/{report_id}", {})]


def test_another_users_patient_is_403_on_every_report_route_and_nothing_changes(client, other_client):
    theirs = new_patient(other_client)
    their_report = uploaded(other_client, theirs["id"])
    for method, path, options in every_report_request(theirs["id"], their_report["id"]):
        assert_problem(client.request(method, path, **options), 403)
    assert other_client.get(reports_path(theirs["id"])).json() == [their_report]
    assert other_client.get(f"{reports_path(theirs['id'])}/{their_report['id']}").content == PDF


def test_a_report_of_another_patient_of_the_same_user_is_404(client, live_server):
    owner, other = new_patient(client), new_patient(client)
    report = uploaded(client, owner["id"])
    assert_problem(client.get(f"{reports_path(other['id'])}/{report['id']}"), 404)
    assert_problem(client.delete(f"{reports_path(other['id'])}/{report['id']}"), 404)
    assert client.get(reports_path(owner["id"])).json() == [report]
    assert report["id"] in stored_ids(live_server)


def test_a_missing_report_is_404(client, patient):
    uploaded(client, patient["id"])
    missing = f"{reports_path(patient['id'])}/{new_id()}"
    assert_problem(client.get(missing), 404)
    assert_problem(client.delete(missing), 404)


def test_every_report_route_of_a_missing_patient_is_404(client):
    for method, path, options in every_report_request(new_id(), new_id()):
        assert_problem(client.request(method, path, **options), 404)


BAD_IDS = ["abc", "0" * 23, "0" * 25, "A" * 24, "g" * 24, "%20" + "0" * 21, "0" * 24 + "%0A"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_a_malformed_report_id_is_400(client, patient, bad_id):
    assert_problem(client.get(f"{reports_path(patient['id'])}/{bad_id}"), 400)
    assert_problem(client.delete(f"{reports_path(patient['id'])}/{bad_id}"), 400)


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_a_malformed_patient_id_is_400_on_every_report_route(client, bad_id):
    for method, path, options in every_report_request(bad_id, new_id()):
        assert_problem(client.request(method, path, **options), 400)


def test_every_report_route_without_a_token_is_401_with_www_authenticate(anonymous, client, patient):
    report = uploaded(client, patient["id"])
    for method, path, options in every_report_request(patient["id"], report["id"]):
        response = anonymous.request(method, path, **options)
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get(reports_path(patient["id"])).json() == [report]


# -- streaming: the server never holds a whole upload ------------------------------------

class GeneratedMultipartBody:
    """A multipart body made piece by piece as `read(n)` asks for it: the part's header
    block, the file's bytes (generated on the fly, never all at once), then the closing
    delimiter. Neither side of the connection ever has the whole body in memory."""

    BLOCK = 64 * 1024

    def __init__(self, boundary: str, file_size: int):
        self.file_size = file_size
        self.sha256 = hashlib.sha256()
        delimiter = b"--" + boundary.encode("ascii")
        self._head = delimiter + b"\r\n" + file_part(b"", "stream.pdf")    # up to the blank line
        self._tail = b"\r\n" + delimiter + b"--\r\n"
        self.length = len(self._head) + file_size + len(self._tail)
        self._pieces = self._generate()
        self._pending = b""

    def _generate(self):
        yield self._head
        produced = 0
        while produced < self.file_size:
            size = min(self.BLOCK, self.file_size - produced)
            if produced == 0:
                block = (b"%PDF-1.7\n" + hashlib.sha256(b"0").digest() * (self.BLOCK // 32))[:size]
            else:
                # 32 bytes repeated cannot hold the 40-byte delimiter unless it repeated too.
                block = (hashlib.sha256(produced.to_bytes(8, "big")).digest() * (self.BLOCK // 32))[:size]
            self.sha256.update(block)
            produced += size
            yield block
        yield self._tail

    def read(self, size: int = -1) -> bytes:
        while len(self._pending) < size or size < 0:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._pending += piece
        if size < 0:
            size = len(self._pending)
        data, self._pending = self._pending[:size], self._pending[size:]
        return data


def test_a_20_mib_upload_streams_through_the_server_in_little_memory(start_server):
    server = start_server(max_upload_bytes=32 * MiB)
    client = ApiClient(server.url).register_and_login()
    patient_id = new_patient(client)["id"]
    body = GeneratedMultipartBody(BOUNDARY, 20 * MiB)
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30, blocksize=64 * 1024)
    tracemalloc.start()
    try:
        connection.request("POST", reports_path(patient_id), body=body, headers={
            "Authorization": client.session.headers["Authorization"], "Content-Type": MULTIPART,
            "Content-Length": str(body.length)})
        response = connection.getresponse()
        answer = response.read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        connection.close()
    print(f"\ntraced peak during a 20 MiB upload: {peak / MiB:.2f} MiB")
    assert response.status == 201, answer
    report = json.loads(answer)
    assert report["size"] == 20 * MiB and report["sha256"] == body.sha256.hexdigest()
    _, chunks = server.store.open_report(patient_id, report["id"])
    with closing(chunks):
        assert hashlib.sha256(b"".join(chunks)).hexdigest() == body.sha256.hexdigest()
    assert peak < 4 * MiB, f"the server held {peak / MiB:.1f} MiB during the upload"


def test_a_client_that_disconnects_mid_upload_leaves_no_file(client, patient, live_server):
    """The client sends half the declared body and half-closes: the server reads end of
    stream, the upload is abandoned, and neither a temp file nor a report remains."""
    body = multipart(file_part(pdf_of_size(200_000)))
    head = http_request("POST", reports_path(patient["id"]), headers={
        "Authorization": client.session.headers["Authorization"],
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(len(body))})
    before = stored_ids(live_server)
    with RawConnection(live_server) as connection:
        connection.send(head + body[:len(body) // 2])
        connection.sock.shutdown(socket.SHUT_WR)
        response = connection.read_response()  # sent after the writer has cleaned up
    assert response.status == 400
    assert stored_ids(live_server) == before
    assert client.get(reports_path(patient["id"])).json() == []
