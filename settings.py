"""MediTrack's settings: what can be configured, its defaults, and how it is read.

    flags  >  environment variables  >  the defaults in `Settings`

Every environment variable is in `ENVIRONMENT` with the parser that checks it, so a
bad value stops start-up with one line that names the setting (`SettingError`)
instead of surfacing later as a strange failure. The JWT key, when none is given,
is made once and kept in DATA_DIR/jwt-secret.
"""

import argparse
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import system
from web.cors import parse_origins
from web.ratelimit import parse_rate

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
    token_ttl: int = 900                     # seconds an access token lives
    refresh_ttl: int = 14 * 24 * 3600        # seconds a session lives from its login (its refresh tokens with it)
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
    audit_flush_ms: int = 50                 # a kill -9 loses at most this last moment of audit events
    audit_retention_days: int = 2190         # six years, HIPAA's retention for documentation
    require_if_match: bool = False           # True: a patient write without If-Match is refused (428)
    public_url: str | None = None            # the URL clients reach us at; None: http:// and the request's Host
    fhir_identifier_system: str = "urn:meditrack:patient-id"  # the system of each FHIR Patient's identifier
    export_retention_hours: int = 24         # how long a bulk export's files are kept once it finishes
    cors_origins: frozenset[str] = frozenset()  # origins whose pages may call the API (web/cors.py); none: no CORS
    workers: int = 1                         # processes serving the port (web/workers/prefork.py); 1: no fork at all
    s3_endpoint: str | None = None           # an S3-compatible object store for report bytes (storage/s3/); None: none
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    link_ttl: int = 300                      # seconds a report's download link works (at most 5 minutes)
    backup_dir: Path | None = None           # `backup DEST` / `restore SRC`: the command's directory (no variable)


def _integer(name: str, text: str, minimum: int, maximum: int) -> int:
    # ASCII digits only: int() alone would also take " 12", "+12", "1_2" and "١٢".
    if not re.fullmatch(r"[0-9]{1,15}", text) or not minimum <= int(text) <= maximum:
        raise SettingError(f"{name} must be a whole number from {minimum} to {maximum}, not {text!r}")
    return int(text)


def _flag(name: str, text: str) -> bool:
    if text not in ("0", "1"):
        raise SettingError(f"{name} must be 0 or 1, not {text!r}")
    return text == "1"


# scheme "://" host [":" port] [path], no trailing slash, query or fragment (RFC 3986 §3).
PUBLIC_URL = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~\-/]*[A-Za-z0-9._~\-])?")


def _public_url(name: str, text: str) -> str | None:
    if text and not PUBLIC_URL.fullmatch(text):
        raise SettingError(f"{name} must be an http:// or https:// URL without a trailing slash, query or "
                           f"fragment, not {text!r}")
    return text or None


# An absolute URI (RFC 3986 §4.3): a scheme, ":", then no space or control character.
ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[!-~]+")


def _uri(name: str, text: str) -> str:
    if not ABSOLUTE_URI.fullmatch(text) or "#" in text:
        raise SettingError(f"{name} must be an absolute URI without a fragment (such as "
                           f"https://records.example.org/patient-id or urn:oid:1.2.3), not {text!r}")
    return text


def _text(name: str, text: str, pattern: str) -> str:
    if not re.fullmatch(pattern, text):
        raise SettingError(f"{name} has a character or a length it may not have")  # never echoed: it may be a key
    return text


def _workers(name: str, text: str) -> int:
    """A number of worker processes, or "auto": one per core this process may use."""
    workers = system.cpu_count() if text == "auto" else _integer(name, text, 1, 256)
    if workers > 1 and not system.CAN_FORK:
        raise SettingError(f"{name} {text}: more than one process needs os.fork, which this system lacks "
                           f"(Windows); run one process, or several instances on different ports behind a "
                           f"reverse proxy")
    return workers


def _origins(name: str, text: str) -> frozenset[str]:
    try:
        return parse_origins(text)
    except ValueError as exc:
        raise SettingError(f"{name}: {exc}") from None


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


# S3's own limit on one PUT: the whole report goes in one (storage/s3/reports.py).
MAX_OBJECT_BYTES = 5 * 1024**3
# A bucket name as S3 allows it: 3-63 lower-case letters, digits, dots and hyphens.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


def _s3_endpoint(name: str, text: str) -> str | None:
    """https to anywhere (verified); plain http only to this machine, where nothing is on a wire."""
    if not text:
        return None
    if not PUBLIC_URL.fullmatch(text):
        raise SettingError(f"{name} must be an http:// or https:// URL without a trailing slash, such as "
                           f"https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:7070, not {text!r}")
    host = urlsplit(text).hostname or ""
    if text.startswith("http://") and not _is_loopback(host):
        raise SettingError(f"{name}: plain http is allowed only to this machine (127.0.0.1 or localhost); "
                           f"use https for {host}")
    return text


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bucket(name: str, text: str) -> str:
    if not BUCKET_NAME.fullmatch(text):
        raise SettingError(f"{name} must be an S3 bucket name (3 to 63 lower-case letters, digits, dots and "
                           f"hyphens), not {text!r}")
    return text


def _check_object_store(values: dict) -> None:
    """The object store's settings together: all or none, and uploads that fit one PUT."""
    names = {"s3_bucket": "MEDITRACK_S3_BUCKET", "s3_access_key": "MEDITRACK_S3_ACCESS_KEY",
             "s3_secret_key": "MEDITRACK_S3_SECRET_KEY"}
    if not values.get("s3_endpoint"):
        if given := [variable for field, variable in names.items() if values.get(field)]:
            raise SettingError(f"{given[0]} is set but MEDITRACK_S3_ENDPOINT is not")
        return
    if missing := [variable for field, variable in names.items() if not values.get(field)]:
        raise SettingError(f"MEDITRACK_S3_ENDPOINT is set: {', '.join(missing)} must be set too")
    if values.get("max_upload_bytes", Settings.max_upload_bytes) > MAX_OBJECT_BYTES:
        raise SettingError(f"MEDITRACK_MAX_UPLOAD_BYTES may be at most {MAX_OBJECT_BYTES} (5 GiB) with an object "
                           f"store: a report is stored with one PUT, and S3 takes at most that")


# Environment variable → (Settings field, parser). Each parser gets the variable's name
# so its error message can name the setting.
ENVIRONMENT = {
    "MEDITRACK_HOST": ("host", lambda name, text: text),
    "MEDITRACK_PORT": ("port", lambda name, text: _integer(name, text, 0, 65535)),
    "MEDITRACK_DATA_DIR": ("data_dir", lambda name, text: Path(text)),
    "MONGODB_URI": ("mongodb_uri", lambda name, text: text or None),
    "MEDITRACK_JWT_SECRET": ("jwt_secret", _secret),
    "MEDITRACK_TOKEN_TTL": ("token_ttl", lambda name, text: _integer(name, text, 60, 30 * 24 * 3600)),
    "MEDITRACK_REFRESH_TTL": ("refresh_ttl", lambda name, text: _integer(name, text, 60, 365 * 24 * 3600)),
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
    "MEDITRACK_AUDIT_FLUSH_MS": ("audit_flush_ms", lambda name, text: _integer(name, text, 2, 60_000)),
    "MEDITRACK_AUDIT_RETENTION_DAYS": ("audit_retention_days", lambda name, text: _integer(name, text, 1, 36500)),
    "MEDITRACK_REQUIRE_IF_MATCH": ("require_if_match", _flag),
    "MEDITRACK_PUBLIC_URL": ("public_url", _public_url),
    "MEDITRACK_FHIR_IDENTIFIER_SYSTEM": ("fhir_identifier_system", _uri),
    "MEDITRACK_EXPORT_RETENTION_HOURS": ("export_retention_hours", lambda name, text: _integer(name, text, 1, 8760)),
    "MEDITRACK_CORS_ORIGINS": ("cors_origins", _origins),
    "MEDITRACK_WORKERS": ("workers", _workers),
    "MEDITRACK_S3_ENDPOINT": ("s3_endpoint", _s3_endpoint),
    "MEDITRACK_S3_BUCKET": ("s3_bucket", _bucket),
    "MEDITRACK_S3_REGION": ("s3_region", lambda name, text: _text(name, text, r"[a-z0-9-]{1,32}")),
    "MEDITRACK_S3_ACCESS_KEY": ("s3_access_key", lambda name, text: _text(name, text, r"[!-~]{1,128}")),
    "MEDITRACK_S3_SECRET_KEY": ("s3_secret_key", lambda name, text: _text(name, text, r"[!-~]{1,128}")),
    "MEDITRACK_LINK_TTL": ("link_ttl", lambda name, text: _integer(name, text, 1, 300)),
}


COMMANDS = {
    "serve": "serve the API until Ctrl-C or SIGTERM (the command when none is named)",
    "verify-audit": "check the audit trail's hash chains; name the first break, if any (exit 1)",
    "backup": "copy everything the store holds, while it serves, into a new directory DEST",
    "restore": "load a backup from SRC into an empty store (the data dir, or MONGODB_URI's), then verify-audit",
}
BACKUP_ARGUMENT = {"backup": "DEST", "restore": "SRC"}


def argument_parser(command: str = "serve") -> argparse.ArgumentParser:
    """The flags, and the help that `--help` prints: each flag's meaning, default and
    environment variable, the commands, and where every other setting is described."""
    default = Settings()
    commands = "\n".join(f"  {name:<14}{meaning}" for name, meaning in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="meditrack.py" if command == "serve" else f"meditrack.py {command}",
        description=f"MediTrack, a patient-record REST API on Python's standard library.\n{command}: "
                    f"{COMMANDS[command]}.",
        epilog=f"commands (python meditrack.py [COMMAND] [flags]):\n{commands}\n\n"
               "Flags override environment variables. MONGODB_URI, when set, keeps the data in\n"
               "MongoDB instead of SQLite. Every setting, with its environment variable, default\n"
               "and meaning: docs/configuration.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", metavar="DIR",
                        help=f"where the SQLite database, the report files and the JWT key live (default: "
                             f"{default.data_dir}, in the directory you start from; env MEDITRACK_DATA_DIR)")
    if command in BACKUP_ARGUMENT:
        parser.add_argument("backup_dir", metavar=BACKUP_ARGUMENT[command],
                            help="the backup's directory (docs/operations.md, Backup and restore)")
    if command == "serve":
        parser.add_argument("--host", help=f"address to listen on (default: {default.host}; env MEDITRACK_HOST)")
        parser.add_argument("--port", help=f"port to listen on, 0 for any free one (default: {default.port}; "
                                           f"env MEDITRACK_PORT)")
        parser.add_argument("--workers", metavar="N",
                            help=f"processes serving the port, 1 to 256, or auto for one per core; more than "
                                 f"1 needs os.fork: Linux and macOS (default: {default.workers}; "
                                 f"env MEDITRACK_WORKERS)")
    return parser


def load_settings(argv: list[str], environ: dict[str, str], command: str = "serve") -> Settings:
    values = {}
    for variable, (field, parse) in ENVIRONMENT.items():
        if variable in environ:
            values[field] = parse(variable, environ[variable])
    flags = argument_parser(command).parse_args(argv)
    if getattr(flags, "host", None) is not None:
        values["host"] = flags.host
    if getattr(flags, "port", None) is not None:
        values["port"] = _integer("--port", flags.port, 0, 65535)
    if flags.data_dir is not None:
        values["data_dir"] = Path(flags.data_dir)
    if getattr(flags, "workers", None) is not None:
        values["workers"] = _workers("--workers", flags.workers)
    if getattr(flags, "backup_dir", None) is not None:
        values["backup_dir"] = Path(flags.backup_dir)
    _check_object_store(values)
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
