"""`python meditrack.py` as a real process: it starts, serves, and stops cleanly on a signal."""

import signal
import stat

import pytest
import requests

from bench.processes import launch_meditrack
from tests.support.platforms import needs_posix_signals


def start(tmp_path, **env):
    return launch_meditrack(tmp_path, {"MEDITRACK_BCRYPT_ROUNDS": "4", **env})


@needs_posix_signals
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_the_server_stops_cleanly_on_a_signal(tmp_path, stop_signal):
    process, url = start(tmp_path)
    try:
        assert requests.get(url + "/health", timeout=5).json().items() >= {"status": "ok", "store": "sqlite"}.items()
        process.send_signal(stop_signal)
        assert process.wait(timeout=15) == 0
        assert "MediTrack stopped" in process.stderr.read()
    finally:
        process.kill()
        process.stderr.close()


def test_a_generated_jwt_secret_is_kept_private(tmp_path):
    process, url = start(tmp_path)
    try:
        secret = tmp_path / "jwt-secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert len(secret.read_bytes()) >= 32
    finally:
        process.terminate()
        process.wait(timeout=15)
        process.stderr.close()


def test_tokens_survive_a_restart_because_the_secret_is_kept(tmp_path):
    process, url = start(tmp_path)
    try:
        credentials = {"username": "restart", "password": "correct horse battery"}
        requests.post(url + "/auth/register", json=credentials, timeout=5)
        token = requests.post(url + "/auth/login", json=credentials, timeout=5).json()["accessToken"]
    finally:
        process.terminate()
        process.wait(timeout=15)
        process.stderr.close()
    process, url = start(tmp_path)
    try:
        me = requests.get(url + "/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert me.status_code == 200 and me.json()["username"] == "restart"
    finally:
        process.terminate()
        process.wait(timeout=15)
        process.stderr.close()
