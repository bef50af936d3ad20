"""`python meditrack.py backup` while the server is busy, and `restore` into each store.

A real server (`python meditrack.py`, on either store) takes patients, edits and
report uploads from two writers throughout; the backup command runs meanwhile. Its
backup is restored, with the command, into a fresh data directory and, under
`make test-mongo`, into a fresh MongoDB database (the migration path). On each, a
server started on the restored data must hold every write acknowledged before the
backup began (each report byte-exact), `verify-audit` must have passed as the last
step of the restore, and a token issued before the backup must still work.
"""

import os
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import STORES
from tests.support.api import TEST_SECRET, ApiClient
from tests.support.deployment import Deployment, until
from tests.support.uploads import MULTIPART, file_part, multipart

WRITERS = 2
COMMAND_TIMEOUT = 120


def command(*arguments: str, deployment: Deployment) -> subprocess.CompletedProcess:
    # The settings the deployment's servers run with (storage and key), as an operator would give them.
    environment = {**os.environ, "MONGODB_URI": deployment.mongodb_uri or "",
                   "MEDITRACK_DATA_DIR": str(deployment.data_dir), "MEDITRACK_JWT_SECRET": TEST_SECRET.decode(),
                   **deployment.object_store}
    return subprocess.run([sys.executable, "meditrack.py", *arguments], env=environment, capture_output=True,
                          text=True, timeout=COMMAND_TIMEOUT)


class Writers:
    """Threads that create, edit and upload until stopped; every acknowledged write,
    with the moment (time.monotonic) its answer arrived."""

    def __init__(self, client: ApiClient):
        self.client = client
        self.acknowledged = []  # (moment, patient id, version, report id or None, bytes or None)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(number,)) for number in range(WRITERS)]
        self.errors = []

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _write(self, number: int) -> None:
        count = 0
        while not self._stop.is_set():
            count += 1
            try:
                created = self.client.post("/patients", json={"firstName": f"W{number}", "lastName": f"N{count}",
                                                              "dateOfBirth": "1990-01-01"})
                assert created.status_code == 201, created.text
                patient = created.json()
                self.acknowledged.append((time.monotonic(), patient["id"], patient["version"], None, None))
                data = b"%PDF-1.4 " + os.urandom(2000 + count)
                uploaded = self.client.post(f"/patients/{patient['id']}/reports", data=multipart(file_part(data)),
                                            headers={"Content-Type": MULTIPART})
                assert uploaded.status_code == 201, uploaded.text
                self.acknowledged.append((time.monotonic(), patient["id"], patient["version"] + 1,
                                          uploaded.json()["id"], data))
            except Exception as exc:  # noqa: BLE001 - kept for the test to report
                self.errors.append(repr(exc))
                return


@pytest.mark.parametrize("target_kind", STORES)
def test_a_backup_taken_under_load_restores_every_acknowledged_write(tmp_path, store_kind, target_kind):
    source = Deployment(tmp_path / "source", store_kind)
    target = Deployment(tmp_path / "target", target_kind)
    try:
        server = source.start()
        client = ApiClient(server.url).register_and_login()
        for number in range(40):  # something to copy before the writers start
            assert client.post("/patients", json={"firstName": "Pre", "lastName": f"P{number}",
                                                  "dateOfBirth": "1980-01-01"}).status_code == 201
        with Writers(client) as writers:
            assert until(lambda: len(writers.acknowledged) >= 10, timeout=30), writers.errors
            began = time.monotonic()
            backup = command("backup", str(tmp_path / "backup"), deployment=source)
            assert until(lambda: writers.acknowledged[-1][0] > time.monotonic() - 1 and
                         len([w for w in writers.acknowledged if w[0] > began]) >= 2, timeout=30)
        assert not writers.errors
        assert backup.returncode == 0, backup.stderr
        assert f"backup of the {'sqlite' if store_kind == 'sqlite' else 'mongodb'} store written" in backup.stdout

        restored = command("restore", str(tmp_path / "backup"), deployment=target)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "audit trail intact" in restored.stdout
        assert "MEDITRACK_JWT_SECRET" in restored.stdout  # the key came from the environment: a reminder

        after = ApiClient(target.start().url)
        after.session.headers["Authorization"] = client.session.headers["Authorization"]  # issued before
        assert after.get("/auth/me").json()["id"] == client.user["id"]
        before_backup = [write for write in writers.acknowledged if write[0] < began]
        assert before_backup
        for moment, patient_id, version, report_id, data in before_backup:
            patient = after.get(f"/patients/{patient_id}")
            assert patient.status_code == 200, patient.text
            assert patient.json()["version"] >= version
            if report_id:
                assert after.get(f"/patients/{patient_id}/reports/{report_id}").content == data
        listed = after.get("/patients", params={"limit": 100})
        assert listed.status_code == 200
        for patient in listed.json()["items"]:
            for report in patient["reports"]:  # what the backup kept of the writes during it: whole
                download = after.get(f"/patients/{patient['id']}/reports/{report['id']}")
                assert len(download.content) == report["size"]
    finally:
        source.clean_up()
        target.clean_up()


def test_restore_refuses_a_store_that_already_holds_data(tmp_path):
    source = Deployment(tmp_path / "source", "sqlite")
    target = Deployment(tmp_path / "target", "sqlite")
    try:
        ApiClient(source.start().url).register_and_login()
        assert command("backup", str(tmp_path / "backup"), deployment=source).returncode == 0
        ApiClient(target.start().url).register_and_login()
        refused = command("restore", str(tmp_path / "backup"), deployment=target)
        assert refused.returncode == 1
        assert "restore failed: the sqlite store named by the settings already holds data" in refused.stderr
        assert command("backup", str(tmp_path / "backup"), deployment=source).returncode == 1  # exists already
    finally:
        source.clean_up()
        target.clean_up()
