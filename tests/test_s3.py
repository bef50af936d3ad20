"""The object store for report bytes (storage/s3/), against a live S3-compatible server.

Collected only under `make test-s3`, which starts versitygw (tests/s3server.py). The
client's signatures against a server that checks them (a wrong secret is refused), the
calls the stores make, start-up's check of the bucket and credentials, `/health`, and
the object store stopped and started again under a running MediTrack: 503 with
Retry-After while it is down and nothing half-written; once it is back every report
acknowledged reads back byte-exact. (The report tests themselves run on the object
store too: `make test-s3` runs them with it, on both stores.)
"""

import hashlib
import io
import os
import subprocess
import sys

import pytest

from storage.s3.client import ObjectGone, ObjectStore, ObjectStoreError
from storage.errors import Unavailable
from tests.s3server import own_gateway
from tests.support.api import ApiClient
from tests.support.objects import S3_ACCESS_KEY, S3_ENDPOINT, S3_SECRET_KEY, fresh_bucket
from tests.support.uploads import MULTIPART, file_part, multipart, pdf_of_size


def put_bytes(objects: ObjectStore, key: str, data: bytes) -> None:
    objects.put(key, io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest())


def read_all(body) -> bytes:
    chunks = []
    while chunk := body.read(65536):
        chunks.append(chunk)
    body.close()
    return b"".join(chunks)


def test_the_server_checks_the_signature_a_wrong_secret_is_refused():
    bucket = fresh_bucket()
    assert bucket.check() is None
    wrong = ObjectStore(S3_ENDPOINT, bucket.bucket, region="us-east-1", access_key=S3_ACCESS_KEY,
                        secret_key=S3_SECRET_KEY[:-1] + ("x" if S3_SECRET_KEY[-1] != "x" else "y"))
    with pytest.raises(ObjectStoreError, match="refused the access key or secret key"):
        wrong.check()
    with pytest.raises(ObjectStoreError):
        put_bytes(wrong, "reports/x", b"never stored")
    with pytest.raises(ObjectGone):
        bucket.open("reports/x")


def test_a_bucket_that_does_not_exist_is_named():
    missing = ObjectStore(S3_ENDPOINT, "meditrack-no-such-bucket", region="us-east-1", access_key=S3_ACCESS_KEY,
                          secret_key=S3_SECRET_KEY)
    with pytest.raises(ObjectStoreError, match="no bucket named 'meditrack-no-such-bucket'"):
        missing.check()


def test_put_get_ranges_list_and_delete():
    objects = fresh_bucket()
    data = os.urandom(300_000)
    put_bytes(objects, "reports/one", data)
    put_bytes(objects, "reports/two $ü", b"")
    put_bytes(objects, "other/three", b"x")
    assert read_all(objects.open("reports/one")) == data
    assert read_all(objects.open("reports/one", 10, 5)) == data[10:15]
    assert read_all(objects.open("reports/one", 299_990)) == data[299_990:]
    assert read_all(objects.open("reports/two $ü")) == b""
    assert sorted(objects.keys("reports/")) == ["reports/one", "reports/two $ü"]
    objects.delete("reports/one")
    objects.delete("reports/one")  # already gone: still fine
    with pytest.raises(ObjectGone):
        objects.open("reports/one")


def test_the_server_refuses_bytes_that_do_not_match_their_sha256():
    objects = fresh_bucket()
    with pytest.raises(ObjectStoreError):
        objects.put("reports/bad", io.BytesIO(b"these bytes"), 11, hashlib.sha256(b"other bytes").hexdigest())
    with pytest.raises(ObjectGone):
        objects.open("reports/bad")


def test_keys_are_listed_page_by_page():
    objects = fresh_bucket()
    for number in range(1005):  # ListObjectsV2 answers at most 1,000 a page
        put_bytes(objects, f"reports/{number:04d}", b"")
    assert len(list(objects.keys("reports/"))) == 1005


def start_up(tmp_path, **environment):
    return subprocess.run([sys.executable, "meditrack.py", "--port", "0", "--data-dir", str(tmp_path)],
                          env={**os.environ, **environment}, capture_output=True, text=True, timeout=60)


def test_start_up_stops_with_one_line_when_the_bucket_or_the_secret_is_wrong(tmp_path):
    bucket = fresh_bucket()
    settings = {"MEDITRACK_S3_ENDPOINT": S3_ENDPOINT, "MEDITRACK_S3_BUCKET": "meditrack-absent",
                "MEDITRACK_S3_ACCESS_KEY": S3_ACCESS_KEY, "MEDITRACK_S3_SECRET_KEY": S3_SECRET_KEY}
    absent = start_up(tmp_path, **settings)
    assert absent.returncode == 1
    assert absent.stderr.strip().splitlines() == [
        f"meditrack: cannot open the store: the object store at {S3_ENDPOINT} has no bucket named 'meditrack-absent'"]
    wrong = start_up(tmp_path, **{**settings, "MEDITRACK_S3_BUCKET": bucket.bucket,
                                  "MEDITRACK_S3_SECRET_KEY": "not-the-secret"})
    assert wrong.returncode == 1
    assert "refused the access key or secret key" in wrong.stderr
    assert "not-the-secret" not in wrong.stderr


def test_health_names_the_object_store_and_whether_it_answers(start_server):
    server = start_server()
    health = ApiClient(server.url).get("/health").json()
    assert health["reportStorage"] == {"kind": "s3", "endpoint": S3_ENDPOINT, "bucket": server.settings.s3_bucket,
                                       "answers": True}


@pytest.fixture
def gateway(tmp_path):
    """An object store of this test's own, which it may stop and start."""
    gateway = own_gateway(tmp_path / "gateway").start()
    yield gateway
    gateway.stop()


def upload(client, patient_id, data):
    return client.post(f"/patients/{patient_id}/reports", data=multipart(file_part(data)),
                       headers={"Content-Type": MULTIPART})


def test_while_the_object_store_is_down_uploads_and_downloads_answer_503_and_nothing_is_half_written(
        start_server, gateway):
    bucket = fresh_bucket(gateway.endpoint, access_key=gateway.access_key, secret_key=gateway.secret_key)
    server = start_server(s3_endpoint=gateway.endpoint, s3_bucket=bucket.bucket, s3_access_key=gateway.access_key,
                          s3_secret_key=gateway.secret_key)
    client = ApiClient(server.url).register_and_login()
    patient = client.post("/patients", json={"firstName": "Ada", "lastName": "L", "dateOfBirth": "1815-12-10"}).json()
    kept = b"%PDF-1.4\n" + os.urandom(200_000)
    stored = upload(client, patient["id"], kept)
    assert stored.status_code == 201

    gateway.stop()
    refused = upload(client, patient["id"], pdf_of_size(1000))
    assert refused.status_code == 503
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.headers["Retry-After"] == "5"
    download = client.get(f"/patients/{patient['id']}/reports/{stored.json()['id']}")
    assert download.status_code == 503 and download.headers["Retry-After"] == "5"
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["reportStorage"]["answers"] is False
    after = client.get(f"/patients/{patient['id']}").json()
    assert [report["id"] for report in after["reports"]] == [stored.json()["id"]]  # no row for the refused upload
    assert after["version"] == patient["version"] + 1

    gateway.start()
    assert client.get(f"/patients/{patient['id']}/reports/{stored.json()['id']}").content == kept
    again = upload(client, patient["id"], pdf_of_size(5000))
    assert again.status_code == 201
    assert sorted(server.store.stored_report_ids()) == sorted([stored.json()["id"], again.json()["id"]])


def test_a_download_cut_off_by_the_object_store_ends_short_never_padded(start_server, gateway):
    bucket = fresh_bucket(gateway.endpoint, access_key=gateway.access_key, secret_key=gateway.secret_key)
    server = start_server(s3_endpoint=gateway.endpoint, s3_bucket=bucket.bucket, s3_access_key=gateway.access_key,
                          s3_secret_key=gateway.secret_key, max_upload_bytes=20 * 1024 * 1024)
    client = ApiClient(server.url).register_and_login()
    patient = client.post("/patients", json={"firstName": "Ada", "lastName": "L", "dateOfBirth": "1815-12-10"}).json()
    data = b"%PDF-1.4\n" + os.urandom(16 * 1024 * 1024)
    report = upload(client, patient["id"], data).json()
    with client.get(f"/patients/{patient['id']}/reports/{report['id']}", stream=True) as response:
        assert response.status_code == 200
        first = next(response.iter_content(65536))
        gateway.stop()
        received = first
        with pytest.raises(Exception):
            for chunk in response.iter_content(65536):
                received += chunk
    assert len(received) < len(data) and data.startswith(received)
    gateway.start()
    assert client.get(f"/patients/{patient['id']}/reports/{report['id']}").content == data


def test_unavailable_is_what_a_gone_server_gives():
    objects = ObjectStore("http://127.0.0.1:1", "meditrack-x", region="us-east-1", access_key="a", secret_key="b")
    with pytest.raises(Unavailable):
        objects.check()
