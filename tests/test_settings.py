"""Tests for settings.py: defaults, environment variables, flags, refusals, the JWT key file.

`load_settings(argv, environ)` takes both inputs as arguments, so no test touches the
real environment; the one subprocess test gives the child a cleaned copy of it.
"""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import meditrack
import settings as settings_module
import system
from settings import Settings, SettingError, load_or_create_secret, load_settings
from tests.support.platforms import needs_fork

REPOSITORY = Path(meditrack.__file__).resolve().parent
SECRET_32 = "s" * 32


# --- defaults -------------------------------------------------------------------------


def test_defaults_match_the_design_table():
    settings = load_settings([], {})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.data_dir == Path("./data")
    assert settings.mongodb_uri is None            # unset -> sqlite store
    assert settings.jwt_secret is None             # unset -> DATA_DIR/jwt-secret
    assert settings.token_ttl == 900               # a short-lived access token
    assert settings.refresh_ttl == 14 * 24 * 3600  # refreshed within 14 days, or log in again
    assert settings.bcrypt_rounds == 12
    assert settings.max_upload_bytes == 10485760
    assert settings.max_json_bytes == 1048576
    assert settings.rate_limit == (120, 60.0)
    assert settings.auth_rate_limit == (10, 60.0)


def test_defaults_are_the_settings_dataclass_defaults():
    assert load_settings([], {}) == Settings()


def test_unrelated_environment_variables_are_ignored():
    assert load_settings([], {"PORT": "1", "HOME": "/root", "MEDITRACK_UNKNOWN": "x"}) == Settings()


# --- environment variables ------------------------------------------------------------

# Every variable in settings_module.ENVIRONMENT, with a valid value and what it becomes.
VALID_ENVIRONMENT = [
    ("MEDITRACK_HOST", "0.0.0.0", "host", "0.0.0.0"),
    ("MEDITRACK_PORT", "8080", "port", 8080),
    ("MEDITRACK_DATA_DIR", "/var/lib/meditrack", "data_dir", Path("/var/lib/meditrack")),
    ("MONGODB_URI", "mongodb://db.example:27017/meditrack", "mongodb_uri", "mongodb://db.example:27017/meditrack"),
    ("MEDITRACK_JWT_SECRET", SECRET_32, "jwt_secret", SECRET_32.encode()),
    ("MEDITRACK_TOKEN_TTL", "3600", "token_ttl", 3600),
    ("MEDITRACK_REFRESH_TTL", "86400", "refresh_ttl", 86400),
    ("MEDITRACK_BCRYPT_ROUNDS", "4", "bcrypt_rounds", 4),
    ("MEDITRACK_MAX_UPLOAD_BYTES", "2048", "max_upload_bytes", 2048),
    ("MEDITRACK_MAX_JSON_BYTES", "4096", "max_json_bytes", 4096),
    ("MEDITRACK_RATE_LIMIT", "30/10", "rate_limit", (30, 10.0)),
    ("MEDITRACK_AUTH_RATE_LIMIT", "5/60", "auth_rate_limit", (5, 60.0)),
    ("MEDITRACK_TRUSTED_PROXIES", "10.0.0.1, 10.0.0.2,", "trusted_proxies", frozenset({"10.0.0.1", "10.0.0.2"})),
    ("MEDITRACK_SOCKET_TIMEOUT", "15", "socket_timeout", 15),
    ("MEDITRACK_HEADER_TIMEOUT", "5", "header_timeout", 5),
    ("MEDITRACK_MAX_CONNECTIONS", "64", "max_connections", 64),
    ("MEDITRACK_SHUTDOWN_GRACE", "3", "shutdown_grace", 3),
    ("MEDITRACK_REFUSAL_DELAY", "2", "refusal_delay", 2),
    ("MEDITRACK_MIN_BODY_RATE", "4096", "min_body_rate", 4096),
    ("MEDITRACK_AUDIT_FLUSH_MS", "20", "audit_flush_ms", 20),
    ("MEDITRACK_AUDIT_RETENTION_DAYS", "30", "audit_retention_days", 30),
    ("MEDITRACK_REQUIRE_IF_MATCH", "1", "require_if_match", True),
    ("MEDITRACK_REQUIRE_IF_MATCH", "0", "require_if_match", False),
    ("MEDITRACK_PUBLIC_URL", "https://records.example.org", "public_url", "https://records.example.org"),
    ("MEDITRACK_PUBLIC_URL", "http://10.0.0.5:8080/meditrack", "public_url", "http://10.0.0.5:8080/meditrack"),
    ("MEDITRACK_PUBLIC_URL", "", "public_url", None),
    ("MEDITRACK_EXPORT_RETENTION_HOURS", "1", "export_retention_hours", 1),
    ("MEDITRACK_EXPORT_RETENTION_HOURS", "8760", "export_retention_hours", 8760),
    ("MEDITRACK_FHIR_IDENTIFIER_SYSTEM", "urn:oid:2.16.840.1.113883.3.4", "fhir_identifier_system",
     "urn:oid:2.16.840.1.113883.3.4"),
    ("MEDITRACK_FHIR_IDENTIFIER_SYSTEM", "https://records.example.org/patient-id", "fhir_identifier_system",
     "https://records.example.org/patient-id"),
    ("MEDITRACK_CORS_ORIGINS", "https://App.example.org, http://127.0.0.1:5173", "cors_origins",
     frozenset({"https://app.example.org", "http://127.0.0.1:5173"})),
    ("MEDITRACK_CORS_ORIGINS", "", "cors_origins", frozenset()),
    pytest.param("MEDITRACK_WORKERS", "2", "workers", 2, marks=needs_fork),
    pytest.param("MEDITRACK_WORKERS", "auto", "workers", system.cpu_count(), marks=needs_fork),
    ("MEDITRACK_S3_REGION", "eu-west-1", "s3_region", "eu-west-1"),
    ("MEDITRACK_LINK_TTL", "60", "link_ttl", 60),
]

# The object store's settings, which only make sense together (tested below).
OBJECT_STORE = {"MEDITRACK_S3_ENDPOINT": "https://s3.eu-west-1.amazonaws.com", "MEDITRACK_S3_BUCKET": "clinic-reports",
                "MEDITRACK_S3_ACCESS_KEY": "AKIAIOSFODNN7EXAMPLE",
                "MEDITRACK_S3_SECRET_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}


def values(row) -> tuple:
    return row.values if hasattr(row, "values") else row  # a pytest.param carries its marks beside them


def test_every_environment_variable_has_a_parsing_test():
    assert {values(row)[0] for row in VALID_ENVIRONMENT} | set(OBJECT_STORE) == set(settings_module.ENVIRONMENT)


def test_the_object_store_settings_are_read_together():
    settings = load_settings([], OBJECT_STORE)
    assert (settings.s3_endpoint, settings.s3_bucket, settings.s3_region, settings.s3_access_key,
            settings.s3_secret_key) == ("https://s3.eu-west-1.amazonaws.com", "clinic-reports", "us-east-1",
                                        "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert load_settings([], {**OBJECT_STORE, "MEDITRACK_S3_ENDPOINT": "http://127.0.0.1:7070"}).s3_endpoint == \
        "http://127.0.0.1:7070"
    assert load_settings([], {**OBJECT_STORE, "MEDITRACK_S3_ENDPOINT": "http://localhost:7070"}).s3_endpoint == \
        "http://localhost:7070"


@pytest.mark.parametrize("change, message", [
    ({"MEDITRACK_S3_ENDPOINT": "http://s3.example.org"}, "plain http is allowed only to this machine"),
    ({"MEDITRACK_S3_ENDPOINT": "http://10.0.0.5:9000"}, "plain http is allowed only to this machine"),
    ({"MEDITRACK_S3_ENDPOINT": "ftp://127.0.0.1"}, "MEDITRACK_S3_ENDPOINT must be an http:// or https:// URL"),
    ({"MEDITRACK_S3_ENDPOINT": "https://s3.example.org/"}, "without a trailing slash"),
    ({"MEDITRACK_S3_BUCKET": "Clinic_Reports"}, "MEDITRACK_S3_BUCKET must be an S3 bucket name"),
    ({"MEDITRACK_S3_SECRET_KEY": "with space"}, "MEDITRACK_S3_SECRET_KEY has a character"),
    ({"MEDITRACK_S3_ACCESS_KEY": ""}, "MEDITRACK_S3_ACCESS_KEY"),
    ({"MEDITRACK_MAX_UPLOAD_BYTES": str(5 * 1024**3 + 1)}, "at most 5368709120 (5 GiB) with an object store"),
])
def test_object_store_settings_are_refused_with_a_line_that_names_them(change, message):
    environment = {name: value for name, value in {**OBJECT_STORE, **change}.items() if value}
    if change.get("MEDITRACK_S3_ACCESS_KEY") == "":
        environment.pop("MEDITRACK_S3_ACCESS_KEY", None)
    with pytest.raises(SettingError, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        load_settings([], environment)
    assert "wJalrXUtnFEMI" not in str(refused.value)  # a secret is never echoed


def test_object_store_settings_without_an_endpoint_are_refused():
    with pytest.raises(SettingError, match="MEDITRACK_S3_BUCKET is set but MEDITRACK_S3_ENDPOINT is not"):
        load_settings([], {"MEDITRACK_S3_BUCKET": "clinic-reports"})
    assert load_settings([], {"MEDITRACK_MAX_UPLOAD_BYTES": str(6 * 1024**3)}).max_upload_bytes == 6 * 1024**3


@pytest.mark.parametrize("variable, text, field, expected", VALID_ENVIRONMENT,
                         ids=[values(row)[0] for row in VALID_ENVIRONMENT])
def test_environment_variable_is_parsed(variable, text, field, expected):
    settings = load_settings([], {variable: text})
    assert getattr(settings, field) == expected
    # and nothing else changed
    assert {name: value for name, value in vars(settings).items() if name != field} == \
        {name: value for name, value in vars(Settings()).items() if name != field}


@pytest.mark.parametrize("variable", ["MEDITRACK_RATE_LIMIT", "MEDITRACK_AUTH_RATE_LIMIT"])
def test_a_rate_limit_of_zero_disables_it(variable):
    field = settings_module.ENVIRONMENT[variable][0]
    assert getattr(load_settings([], {variable: "0"}), field) is None


def test_an_empty_mongodb_uri_means_the_sqlite_store():
    assert load_settings([], {"MONGODB_URI": ""}).mongodb_uri is None


def test_jwt_secret_length_is_counted_in_utf8_bytes():
    assert load_settings([], {"MEDITRACK_JWT_SECRET": "é" * 16}).jwt_secret == ("é" * 16).encode()
    with pytest.raises(SettingError, match="MEDITRACK_JWT_SECRET"):
        load_settings([], {"MEDITRACK_JWT_SECRET": "é" * 15 + "x"})   # 31 bytes


@pytest.mark.parametrize("variable, lowest, highest", [
    ("MEDITRACK_PORT", 0, 65535),
    ("MEDITRACK_TOKEN_TTL", 60, 30 * 24 * 3600),
    ("MEDITRACK_REFRESH_TTL", 60, 365 * 24 * 3600),
    ("MEDITRACK_BCRYPT_ROUNDS", 4, 31),
    ("MEDITRACK_MAX_UPLOAD_BYTES", 1, 2**40),
    ("MEDITRACK_MAX_JSON_BYTES", 1024, 2**30),
    ("MEDITRACK_SOCKET_TIMEOUT", 1, 3600),
    ("MEDITRACK_HEADER_TIMEOUT", 1, 3600),
    ("MEDITRACK_MAX_CONNECTIONS", 1, 100_000),
    ("MEDITRACK_SHUTDOWN_GRACE", 0, 3600),
    ("MEDITRACK_REFUSAL_DELAY", 0, 60),
    ("MEDITRACK_MIN_BODY_RATE", 1, 2**30),
    ("MEDITRACK_AUDIT_FLUSH_MS", 2, 60_000),
    ("MEDITRACK_AUDIT_RETENTION_DAYS", 1, 36500),
])
def test_integer_settings_accept_both_ends_of_their_range(variable, lowest, highest):
    field = settings_module.ENVIRONMENT[variable][0]
    assert getattr(load_settings([], {variable: str(lowest)}), field) == lowest
    assert getattr(load_settings([], {variable: str(highest)}), field) == highest


# --- flags ----------------------------------------------------------------------------


def test_flags_override_the_environment():
    environ = {"MEDITRACK_HOST": "0.0.0.0", "MEDITRACK_PORT": "8080", "MEDITRACK_DATA_DIR": "/from/env"}
    settings = load_settings(["--host", "::1", "--port", "9090", "--data-dir", "/from/flag"], environ)
    assert (settings.host, settings.port, settings.data_dir) == ("::1", 9090, Path("/from/flag"))


def test_environment_applies_where_no_flag_is_given():
    settings = load_settings(["--port", "9090"], {"MEDITRACK_HOST": "0.0.0.0", "MEDITRACK_PORT": "8080"})
    assert (settings.host, settings.port) == ("0.0.0.0", 9090)


@pytest.mark.parametrize("text", ["abc", "80a", "-1", "70000", " 80", "８０"])
def test_a_bad_port_flag_is_refused_naming_the_flag(text):
    with pytest.raises(SettingError, match="--port"):
        load_settings([f"--port={text}"], {})


def test_workers_are_refused_where_os_fork_is_missing(monkeypatch):
    monkeypatch.setattr(system, "CAN_FORK", False)
    for argv, environ, named in [(["--workers", "2"], {}, "--workers 2"),
                                 ([], {"MEDITRACK_WORKERS": "3"}, "MEDITRACK_WORKERS 3")]:
        with pytest.raises(SettingError) as refusal:
            load_settings(argv, environ)
        message = str(refusal.value)
        assert message.startswith(named) and "os.fork" in message and "one process" in message
        assert "\n" not in message
    assert load_settings(["--workers", "1"], {}).workers == 1  # one process needs no fork


def test_help_names_every_flag_with_its_default_and_variable_and_every_command(capsys):
    with pytest.raises(SystemExit) as exited:
        load_settings(["--help"], {})
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal's width
    default = Settings()
    for flag, variable, value in [("--host", "MEDITRACK_HOST", default.host),
                                  ("--port", "MEDITRACK_PORT", default.port),
                                  ("--data-dir", "MEDITRACK_DATA_DIR", default.data_dir),
                                  ("--workers", "MEDITRACK_WORKERS", default.workers)]:
        assert flag in shown and f"env {variable}" in shown and f"default: {value}" in shown
    assert "verify-audit" in shown and "docs/configuration.md" in shown


def test_verify_audit_takes_only_the_data_directory(capsys):
    assert load_settings(["--data-dir", "/d"], {}, "verify-audit").data_dir == Path("/d")
    with pytest.raises(SystemExit):
        load_settings(["--port", "1"], {}, "verify-audit")
    assert "unrecognized arguments: --port" in capsys.readouterr().err


# --- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("variable, text", [
    ("MEDITRACK_PORT", "80a"),
    ("MEDITRACK_PORT", "-1"),
    ("MEDITRACK_PORT", "70000"),
    ("MEDITRACK_PORT", "65536"),
    ("MEDITRACK_PORT", " 80"),
    ("MEDITRACK_PORT", "80 "),
    ("MEDITRACK_PORT", "80\n"),
    ("MEDITRACK_PORT", "+80"),
    ("MEDITRACK_PORT", "8_0"),
    ("MEDITRACK_PORT", "８０"),          # full-width digits
    ("MEDITRACK_PORT", "٨٠"),            # Arabic-Indic digits
    ("MEDITRACK_PORT", ""),
    ("MEDITRACK_PORT", "abc"),
    ("MEDITRACK_BCRYPT_ROUNDS", "3"),
    ("MEDITRACK_BCRYPT_ROUNDS", "32"),
    ("MEDITRACK_BCRYPT_ROUNDS", "twelve"),
    ("MEDITRACK_RATE_LIMIT", "abc"),
    ("MEDITRACK_RATE_LIMIT", "120"),
    ("MEDITRACK_RATE_LIMIT", "0/60"),
    ("MEDITRACK_RATE_LIMIT", "120/0"),
    ("MEDITRACK_RATE_LIMIT", "120/60/1"),
    ("MEDITRACK_RATE_LIMIT", ""),
    ("MEDITRACK_AUTH_RATE_LIMIT", "abc"),
    ("MEDITRACK_AUTH_RATE_LIMIT", "-10/60"),
    ("MEDITRACK_JWT_SECRET", ""),
    ("MEDITRACK_JWT_SECRET", "short"),
    ("MEDITRACK_JWT_SECRET", "s" * 31),
    ("MEDITRACK_TOKEN_TTL", "0"),
    ("MEDITRACK_TOKEN_TTL", "59"),
    ("MEDITRACK_TOKEN_TTL", str(30 * 24 * 3600 + 1)),
    ("MEDITRACK_TOKEN_TTL", "1h"),
    ("MEDITRACK_REFRESH_TTL", "14d"),
    ("MEDITRACK_MAX_UPLOAD_BYTES", "0"),
    ("MEDITRACK_MAX_UPLOAD_BYTES", "10MB"),
    ("MEDITRACK_MAX_UPLOAD_BYTES", str(2**40 + 1)),
    ("MEDITRACK_MAX_JSON_BYTES", "1023"),
    ("MEDITRACK_MAX_JSON_BYTES", str(2**30 + 1)),
    ("MEDITRACK_SOCKET_TIMEOUT", "0"),
    ("MEDITRACK_SOCKET_TIMEOUT", "3601"),
    ("MEDITRACK_SOCKET_TIMEOUT", "1.5"),
    ("MEDITRACK_TRUSTED_PROXIES", "not-an-address"),
    ("MEDITRACK_TRUSTED_PROXIES", "10.0.0.1, proxy.internal"),
    ("MEDITRACK_REQUIRE_IF_MATCH", "yes"),
    ("MEDITRACK_REQUIRE_IF_MATCH", "true"),
    ("MEDITRACK_REQUIRE_IF_MATCH", ""),
    ("MEDITRACK_PUBLIC_URL", "records.example.org"),
    ("MEDITRACK_PUBLIC_URL", "https://records.example.org/"),
    ("MEDITRACK_PUBLIC_URL", "https://records.example.org/?a=1"),
    ("MEDITRACK_PUBLIC_URL", "ftp://records.example.org"),
    ("MEDITRACK_FHIR_IDENTIFIER_SYSTEM", ""),
    ("MEDITRACK_EXPORT_RETENTION_HOURS", "0"),
    ("MEDITRACK_EXPORT_RETENTION_HOURS", "8761"),
    ("MEDITRACK_FHIR_IDENTIFIER_SYSTEM", "patient-id"),
    ("MEDITRACK_FHIR_IDENTIFIER_SYSTEM", "https://records.example.org/patient id"),
    ("MEDITRACK_FHIR_IDENTIFIER_SYSTEM", "https://records.example.org/ids#patient"),
    ("MEDITRACK_CORS_ORIGINS", "https://app.example.org/"),
    ("MEDITRACK_CORS_ORIGINS", "*"),
    ("MEDITRACK_WORKERS", "0"),
    ("MEDITRACK_WORKERS", "many"),
])
def test_a_bad_value_is_refused_naming_the_setting(variable, text):
    with pytest.raises(SettingError) as caught:
        load_settings([], {variable: text})
    assert variable in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_refused_jwt_secret_is_not_repeated_in_the_message():
    with pytest.raises(SettingError) as caught:
        load_settings([], {"MEDITRACK_JWT_SECRET": "hunter2-hunter2"})
    assert "hunter2" not in str(caught.value)


# --- the JWT key file -----------------------------------------------------------------


def test_secret_file_is_created_with_mode_0600_and_at_least_32_bytes(tmp_path):
    data_dir = tmp_path / "data"
    secret = load_or_create_secret(data_dir)
    path = data_dir / "jwt-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) >= 32
    assert path.read_bytes().strip() == secret


def test_secret_file_is_read_back_on_the_second_call(tmp_path):
    assert load_or_create_secret(tmp_path) == load_or_create_secret(tmp_path)


def test_each_data_dir_gets_its_own_random_secret(tmp_path):
    assert load_or_create_secret(tmp_path / "a") != load_or_create_secret(tmp_path / "b")


def test_an_existing_secret_file_is_used_as_it_is(tmp_path):
    (tmp_path / "jwt-secret").write_bytes(b"k" * 40 + b"\n")
    assert load_or_create_secret(tmp_path) == b"k" * 40


@pytest.mark.parametrize("content", [b"", b"\n", b"k" * 31, b"  " + b"k" * 31 + b"\n"])
def test_a_secret_file_with_too_few_bytes_is_refused(tmp_path, content):
    (tmp_path / "jwt-secret").write_bytes(content)
    with pytest.raises(SettingError, match="jwt-secret"):
        load_or_create_secret(tmp_path)


# --- the command line -----------------------------------------------------------------


def run_meditrack(tmp_path, **variables) -> subprocess.CompletedProcess:
    environ = {name: value for name, value in os.environ.items()
               if name not in settings_module.ENVIRONMENT}
    environ.update(variables, MEDITRACK_DATA_DIR=str(tmp_path / "data"))
    return subprocess.run([sys.executable, str(REPOSITORY / "meditrack.py")], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=60)


def test_a_bad_environment_value_stops_start_up_with_one_line(tmp_path):
    result = run_meditrack(tmp_path, MEDITRACK_PORT="abc")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "MEDITRACK_PORT" in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("package, modules, environ", [
    ("bcrypt", ["bcrypt"], {}),
    ("pymongo", ["pymongo", "bson", "gridfs"], {"MONGODB_URI": "mongodb://127.0.0.1:9/x"}),  # one package, three modules
])
def test_a_missing_package_stops_start_up_with_one_line_naming_it_and_the_install_command(tmp_path, package, modules,
                                                                                            environ):
    hide = tmp_path / "hide"
    hide.mkdir()
    # A Python without the package: importing it fails as it would where it was never installed.
    (hide / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({modules!r}))\n",
                                           encoding="utf-8")
    result = run_meditrack(tmp_path, PYTHONPATH=str(hide), **environ)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f"the package {package} is not installed" in lines[0]
    assert f'"{sys.executable}" -m pip install -r "{REPOSITORY / "requirements.txt"}"' in lines[0]
