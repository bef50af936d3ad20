"""MediTrack: a patient-record REST API on Python's standard library.

    python meditrack.py [--host H] [--port P] [--data-dir DIR]

Start-up reads the settings (flags override environment variables), opens the store,
builds the route table and serves HTTP/1.1 until SIGTERM or Ctrl-C. A bad setting
stops start-up with one line that names it.
"""

import argparse
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from handlers import auth, docs, patients, reports, service
from storage import open_store
from storage.base import Store
from storage.errors import StoreError
from web.backoff import FailureBackoff
from web.dispatch import Dispatcher
from web.ratelimit import RateLimiter, parse_rate
from web.router import Router
from web.server import MediTrackServer
from web.validation import SchemaValidator

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.json"
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key MUST be at least 256 bits


class SettingError(Exception):
    """A setting has a value MediTrack cannot start with."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./data")
    mongodb_uri: str | None = None
    jwt_secret: bytes | None = None          # None: generated once, kept in DATA_DIR/jwt-secret
    token_ttl: int = 3600
    bcrypt_rounds: int = 12
    max_upload_bytes: int = 10 * 1024 * 1024
    max_json_bytes: int = 1024 * 1024
    rate_limit: tuple[int, float] | None = (120, 60.0)
    auth_rate_limit: tuple[int, float] | None = (10, 60.0)
    trusted_proxies: frozenset[str] = frozenset()
    socket_timeout: float = 30.0
    header_timeout: float = 10.0
    max_connections: int = 200
    shutdown_grace: float = 10.0
    refusal_delay: float = 1.0
    min_body_rate: int = 16 * 1024


def _integer(name: str, text: str, minimum: int, maximum: int) -> int:
    # ASCII digits only: int() alone would also take " 12", "+12", "1_2" and "١٢".
    if not re.fullmatch(r"[0-9]{1,15}", text) or not minimum <= int(text) <= maximum:
        raise SettingError(f"{name} must be a whole number from {minimum} to {maximum}, not {text!r}")
    return int(text)


def _rate(name: str, text: str) -> tuple[int, float] | None:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise SettingError(f"{name}: {exc}") from None


def _secret(name: str, text: str) -> bytes:
    if len(text.encode("utf-8")) < MIN_SECRET_BYTES:
        raise SettingError(f"{name} must be at least {MIN_SECRET_BYTES} bytes long")
    return text.encode("utf-8")


def _addresses(name: str, text: str) -> frozenset[str]:
    addresses = frozenset(part.strip() for part in text.split(",") if part.strip())
    for address in addresses:
        try:
            ipaddress.ip_address(address)  # a host name or a range would never match a peer
        except ValueError:
            raise SettingError(f"{name} must list IP addresses, not {address!r}") from None
    return addresses


# Environment variable → (Settings field, parser). Each parser gets the variable's name
# so its error message can name the setting.
ENVIRONMENT = {
    "MEDITRACK_HOST": ("host", lambda name, text: text),
    "MEDITRACK_PORT": ("port", lambda name, text: _integer(name, text, 0, 65535)),
    "MEDITRACK_DATA_DIR": ("data_dir", lambda name, text: Path(text)),
    "MONGODB_URI": ("mongodb_uri", lambda name, text: text or None),
    "MEDITRACK_JWT_SECRET": ("jwt_secret", _secret),
    "MEDITRACK_TOKEN_TTL": ("token_ttl", lambda name, text: _integer(name, text, 60, 30 * 24 * 3600)),
    "MEDITRACK_BCRYPT_ROUNDS": ("bcrypt_rounds", lambda name, text: _integer(name, text, 4, 31)),
    "MEDITRACK_MAX_UPLOAD_BYTES": ("max_upload_bytes", lambda name, text: _integer(name, text, 1, 2**40)),
    "MEDITRACK_MAX_JSON_BYTES": ("max_json_bytes", lambda name, text: _integer(name, text, 1024, 2**30)),
    "MEDITRACK_RATE_LIMIT": ("rate_limit", _rate),
    "MEDITRACK_AUTH_RATE_LIMIT": ("auth_rate_limit", _rate),
    "MEDITRACK_TRUSTED_PROXIES": ("trusted_proxies", _addresses),
    "MEDITRACK_SOCKET_TIMEOUT": ("socket_timeout", lambda name, text: _integer(name, text, 1, 3600)),
    "MEDITRACK_HEADER_TIMEOUT": ("header_timeout", lambda name, text: _integer(name, text, 1, 3600)),
    "MEDITRACK_MAX_CONNECTIONS": ("max_connections", lambda name, text: _integer(name, text, 1, 100_000)),
    "MEDITRACK_SHUTDOWN_GRACE": ("shutdown_grace", lambda name, text: _integer(name, text, 0, 3600)),
    "MEDITRACK_REFUSAL_DELAY": ("refusal_delay", lambda name, text: _integer(name, text, 0, 60)),
    "MEDITRACK_MIN_BODY_RATE": ("min_body_rate", lambda name, text: _integer(name, text, 1, 2**30)),
}


def load_settings(argv: list[str], environ: dict[str, str]) -> Settings:
    values = {}
    for variable, (field, parse) in ENVIRONMENT.items():
        if variable in environ:
            values[field] = parse(variable, environ[variable])
    parser = argparse.ArgumentParser(prog="meditrack", description="MediTrack patient-record API")
    parser.add_argument("--host")
    parser.add_argument("--port")
    parser.add_argument("--data-dir")
    flags = parser.parse_args(argv)
    if flags.host is not None:
        values["host"] = flags.host
    if flags.port is not None:
        values["port"] = _integer("--port", flags.port, 0, 65535)
    if flags.data_dir is not None:
        values["data_dir"] = Path(flags.data_dir)
    return Settings(**values)


def load_or_create_secret(data_dir: Path) -> bytes:
    """The JWT key kept in DATA_DIR/jwt-secret, made on first start (mode 0600)."""
    path = data_dir / "jwt-secret"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # NOTE: O_EXCL so two processes starting at once cannot both write a key,
        # and mode 0600 from the first byte: the key is never readable by others.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes().strip()
        if len(secret) < MIN_SECRET_BYTES:
            raise SettingError(f"{path} holds fewer than {MIN_SECRET_BYTES} bytes") from None
        return secret
    with os.fdopen(descriptor, "wb") as file:
        secret = secrets.token_hex(32).encode("ascii")  # 32 random bytes, written as hex
        file.write(secret)
    return secret


@dataclass
class App:
    """What every handler can reach as `request.app`."""
    settings: Settings
    store: Store
    validator: SchemaValidator
    jwt_key: bytes
    dummy_password_hash: bytes  # what a login for an unknown user is checked against
    login_backoff: FailureBackoff  # failed logins per username
    verified_tokens: auth.VerifiedTokens  # tokens already checked, so each is verified once
    openapi_bytes: bytes
    docs_html: bytes
    clock: object = time.time


def build_router(settings: Settings) -> Router:
    """The whole API on one screen: method, path template, handler, and options."""
    router = Router()
    router.add("POST", "/auth/register", auth.register, credentials=True)
    router.add("POST", "/auth/login", auth.login, credentials=True)
    router.add("GET", "/auth/me", auth.me, auth=True)
    router.add("GET", "/patients", patients.list_patients, auth=True)
    router.add("POST", "/patients", patients.create_patient, auth=True)
    router.add("GET", "/patients/{patientId}", patients.get_patient, auth=True)
    router.add("PUT", "/patients/{patientId}", patients.replace_patient, auth=True)
    router.add("DELETE", "/patients/{patientId}", patients.delete_patient, auth=True)
    router.add("GET", "/patients/{patientId}/reports", reports.list_reports, auth=True)
    router.add("POST", "/patients/{patientId}/reports", reports.upload_report, auth=True,
               max_body=settings.max_upload_bytes + reports.MULTIPART_OVERHEAD)
    router.add("GET", "/patients/{patientId}/reports/{reportId}", reports.download_report, auth=True)
    router.add("DELETE", "/patients/{patientId}/reports/{reportId}", reports.delete_report, auth=True)
    router.add("GET", "/health", service.health)
    router.add("GET", "/openapi.json", docs.get_openapi)
    router.add("GET", "/docs", docs.get_docs)
    return router


def rate_limiter(rate: tuple[int, float] | None) -> RateLimiter | None:
    """A limiter for (requests, seconds), or none when the setting is 0."""
    return RateLimiter(*rate) if rate else None


def build_dispatcher(settings: Settings, store: Store, *, clock=time.time) -> Dispatcher:
    spec = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    jwt_key = settings.jwt_secret or load_or_create_secret(settings.data_dir)
    app = App(
        settings=settings, store=store, validator=SchemaValidator(spec), jwt_key=jwt_key,
        verified_tokens=auth.VerifiedTokens(jwt_key),
        dummy_password_hash=bcrypt.hashpw(b"not a real password", bcrypt.gensalt(settings.bcrypt_rounds)),
        login_backoff=FailureBackoff(),
        openapi_bytes=OPENAPI_PATH.read_bytes(), docs_html=docs.render_reference(spec).encode("utf-8"),
        clock=clock)
    return Dispatcher(build_router(settings), app, authenticate=auth.authenticate,
                      max_body=settings.max_json_bytes, general_limit=rate_limiter(settings.rate_limit),
                      credentials_limit=rate_limiter(settings.auth_rate_limit),
                      trusted_proxies=settings.trusted_proxies, refusal_delay=settings.refusal_delay)


def make_server(settings: Settings, store: Store) -> MediTrackServer:
    return MediTrackServer((settings.host, settings.port), build_dispatcher(settings, store),
                           socket_timeout=settings.socket_timeout, header_timeout=settings.header_timeout,
                           min_body_rate=settings.min_body_rate, max_connections=settings.max_connections)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, dict(os.environ))
        store = open_store(settings.data_dir, settings.mongodb_uri)
        server = make_server(settings, store)
    except SettingError as exc:
        print(f"meditrack: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, the data directory is not writable, ...
        print(f"meditrack: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except StoreError as exc:  # e.g. MongoDB unreachable at start-up
        print(f"meditrack: cannot open the store: {exc}", file=sys.stderr)
        return 1

    def stop(signum, frame):
        # shutdown() stops accepting and waits for serve_forever() to return, which runs
        # in this very thread: it has to be called from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    print(f"MediTrack serving on http://{host}:{port} (store: {store.name}, data: {settings.data_dir})",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
        # No new connections now; requests in progress get `shutdown_grace` seconds.
        if not server.drain(settings.shutdown_grace):
            print("MediTrack: requests still running after the grace period were cut off", file=sys.stderr)
    finally:
        server.server_close()
        store.close()
    print("MediTrack stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
