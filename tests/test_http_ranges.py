"""HTTP tests for report downloads in part (RFC 9110 §14) and conditionally (§13):
Range → 206 with Content-Range, a range past the end → 416, several or malformed
ranges → the whole file, If-Range, If-None-Match against the file's ETag, and a
download cut off half-way resumed to byte-identical bytes. On every store, with a
file larger than a GridFS chunk so ranges cross chunk boundaries there."""

import hashlib
import random
import socket

import pytest

from tests.support.api import ApiClient
from tests.support.problems import assert_problem
from tests.support.raw_http import RawConnection, http_request
from tests.support.records import PATIENT

GRIDFS_CHUNK = 255 * 1024
SIZE = 2 * GRIDFS_CHUNK + 1000


@pytest.fixture(scope="module")
def data() -> bytes:
    """A PDF signature, then bytes that differ from place to place: a range off by any
    number of bytes shows."""
    return b"%PDF-1.4\n" + random.Random(12).randbytes(SIZE - 9)


@pytest.fixture(scope="module")
def client(live_server) -> ApiClient:
    """One owner for the module: the file is uploaded once and only read after that."""
    return ApiClient(live_server.url).register_and_login()


@pytest.fixture(scope="module")
def report(client, data) -> dict:
    patient = client.post("/patients", json=PATIENT).json()
    uploaded = client.post(f"/patients/{patient['id']}/reports", files={"file": ("scan.pdf", data)})
    assert uploaded.status_code == 201, uploaded.text
    return {**uploaded.json(), "patientId": patient["id"],
            "path": f"/patients/{patient['id']}/reports/{uploaded.json()['id']}"}


def download(client, report, **headers):
    return client.get(report["path"], headers=headers)


def test_a_whole_download_advertises_ranges(client, report, data):
    response = download(client, report)
    assert response.status_code == 200 and response.content == data
    assert response.headers["Accept-Ranges"] == "bytes"
    assert "Content-Range" not in response.headers


@pytest.mark.parametrize("range_header, start, end", [
    ("bytes=0-0", 0, 0),                                       # the first byte
    (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1),      # the last byte
    (f"bytes={SIZE - 1}-", SIZE - 1, SIZE - 1),
    ("bytes=-1", SIZE - 1, SIZE - 1),
    (f"bytes=0-{SIZE - 1}", 0, SIZE - 1),                      # all of it, as a range
    (f"bytes=0-{SIZE + 500}", 0, SIZE - 1),                    # past the end: to the end
    (f"bytes={GRIDFS_CHUNK - 10}-{GRIDFS_CHUNK + 9}", GRIDFS_CHUNK - 10, GRIDFS_CHUNK + 9),  # across a chunk
    (f"bytes={GRIDFS_CHUNK}-", GRIDFS_CHUNK, SIZE - 1),        # from a chunk's first byte
    (f"bytes=-{SIZE + 1}", 0, SIZE - 1),                       # a suffix longer than the file
])
def test_one_range_is_206_with_exactly_those_bytes(client, report, data, range_header, start, end):
    response = download(client, report, Range=range_header)
    assert response.status_code == 206
    assert response.content == data[start:end + 1]
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert response.headers["Content-Length"] == str(end - start + 1)
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["ETag"] == f'"{report["sha256"]}"'


@pytest.mark.parametrize("range_header", [f"bytes={SIZE}-", f"bytes={SIZE}-{SIZE + 10}", "bytes=-0"])
def test_a_range_starting_one_past_the_end_is_416_with_the_size(client, report, range_header):
    response = download(client, report, Range=range_header)
    assert_problem(response, 416)
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("range_header", ["bytes=0-1,5-6", "bytes=5-4", "bytes=abc", "pages=1-2", "bytes=-"])
def test_several_or_malformed_ranges_get_the_whole_file(client, report, data, range_header):
    response = download(client, report, Range=range_header)
    assert response.status_code == 200 and response.content == data


def test_if_range_with_the_current_etag_applies_the_range(client, report, data):
    response = download(client, report, Range="bytes=10-19", **{"If-Range": f'"{report["sha256"]}"'})
    assert response.status_code == 206 and response.content == data[10:20]


@pytest.mark.parametrize("if_range", ['"another-file"', "W/\"{sha}\"", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_if_range_naming_anything_else_gets_the_whole_file(client, report, data, if_range):
    response = download(client, report, Range="bytes=10-19", **{"If-Range": if_range.format(sha=report["sha256"])})
    assert response.status_code == 200 and response.content == data


def first_bytes_then_hang_up(server, request: bytes, count: int) -> tuple[bytes, bytes]:
    """Read a response's head and the first `count` bytes of its body, then close the
    connection: a download cut off. (head, the body bytes received)"""
    with socket.create_connection((server.host, server.port), timeout=5) as connection:
        connection.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < count:
            received += connection.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    return head, body[:count]


def test_a_download_cut_off_half_way_resumes_to_identical_bytes(live_server, client, report, data):
    head, received = first_bytes_then_hang_up(live_server, http_request(
        "GET", report["path"], headers={"Authorization": client.session.headers["Authorization"]}), 300_000)
    etag = next(line.split(b": ", 1)[1].decode() for line in head.split(b"\r\n") if line.startswith(b"ETag: "))
    rest = download(client, report, Range=f"bytes={len(received)}-", **{"If-Range": etag})
    assert rest.status_code == 206
    assert hashlib.sha256(received + rest.content).hexdigest() == report["sha256"]


@pytest.mark.parametrize("if_none_match", ['"{sha}"', 'W/"{sha}"', "*"])
def test_if_none_match_with_the_files_etag_is_304(client, report, if_none_match):
    response = download(client, report, **{"If-None-Match": if_none_match.format(sha=report["sha256"])})
    assert response.status_code == 304 and response.content == b""
    assert response.headers["ETag"] == f'"{report["sha256"]}"'


def test_if_none_match_with_another_etag_downloads(client, report, data):
    assert download(client, report, **{"If-None-Match": '"0000"'}).content == data


def test_a_head_request_ignores_range_and_has_the_whole_files_headers(live_server, client, report):
    # RFC 9110 §14.2: range handling is defined for GET alone.
    with RawConnection(live_server) as connection:
        response = connection.request(http_request("HEAD", report["path"], headers={
            "Authorization": client.session.headers["Authorization"], "Range": "bytes=0-99"}), head=True)
    assert response.status == 200 and response.body == b""
    assert response.header("Content-Length") == str(SIZE) and response.header("Content-Range") is None
    assert response.header("Accept-Ranges") == "bytes"


def test_a_range_of_another_users_report_is_403(other_client, report):
    assert_problem(download(other_client, report, Range="bytes=0-9"), 403)


def test_a_range_of_a_report_that_is_not_there_is_404(client, report):
    assert_problem(client.get(f"/patients/{report['patientId']}/reports/0123456789abcdef01234567",
                              headers={"Range": "bytes=0-9"}), 404)
