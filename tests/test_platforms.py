"""MediTrack on a simulated macOS and a simulated Windows, and the rules that keep what
only some systems have behind system.py's named checks.

No Mac or Windows machine runs these tests. tests/platforms/sitecustomize.py takes
away, in a child Python, what CPython lacks on that system according to the Python
documentation's "Availability" notes (its tables list each name with the section that
says so); the server then runs the seed flow on it. What such a simulation cannot show
(the file system's rules, the standard library's own platform branches) is listed in
docs/platforms.md.
"""

import ast
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from bench.processes import ROOT, launch_meditrack
from tests.support.api import TEST_SECRET
from tests.support.records import PATIENT
from tests.support.uploads import PDF

# The simulation runs on a POSIX host, the one it takes names away from.
pytestmark = pytest.mark.skipif(os.name != "posix", reason="simulates macOS and Windows on a POSIX host")

SHIM_DIR = Path(__file__).resolve().parent / "platforms"
SIMULATED = ["macos", "windows"]
PRODUCT = [ROOT / "meditrack.py", ROOT / "settings.py", ROOT / "system.py",
           *sorted(path for package in ("web", "handlers", "storage") for path in (ROOT / package).rglob("*.py"))]


def load_shim():
    """The shim as a module, to read its tables (without MEDITRACK_SIMULATE it changes nothing)."""
    spec = importlib.util.spec_from_file_location("simulated_platforms", SHIM_DIR / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHIM = load_shim()


def simulated(system: str, **extra: str) -> dict[str, str]:
    """The environment variables that make a child Python the simulated `system`."""
    environ = {"PYTHONPATH": os.pathsep.join([str(SHIM_DIR), str(ROOT)]), "MEDITRACK_SIMULATE": system,
               "MEDITRACK_SIMULATE_KEEP": "", **extra}
    if system == "windows":
        environ["PYTHONWARNDEFAULTENCODING"] = "1"  # the shim makes the warning an error
    return environ


def run_python(system: str, code: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **simulated(system, **extra)},
                          capture_output=True, text=True, timeout=60)


# --- the simulation itself -------------------------------------------------------------


@pytest.mark.parametrize("system", SIMULATED)
def test_the_shim_takes_away_every_name_it_lists(system):
    table = SHIM.MACOS if system == "macos" else SHIM.WINDOWS
    names = [(module, name) for module, name, _ in table]
    code = ("import importlib, json, sys\n"
            f"names = {names!r}\n"
            "print(json.dumps([f'{m}.{n}' for m, n in names if hasattr(importlib.import_module(m), n)]))")
    result = run_python(system, code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert all(reference for _, _, reference in table)  # every removal names the doc that says so


def test_on_simulated_windows_the_posix_only_modules_cannot_be_imported_and_directories_cannot_be_opened():
    code = ("import importlib, json, os\n"
            f"missing = {[name for name, _ in SHIM.WINDOWS_MISSING_MODULES]!r}\n"
            "imported = []\n"
            "for name in missing:\n"
            "    try:\n"
            "        importlib.import_module(name); imported.append(name)\n"
            "    except ImportError:\n"
            "        pass\n"
            "try:\n"
            "    os.close(os.open('.', os.O_RDONLY)); opened = True\n"
            "except PermissionError:\n"
            "    opened = False\n"
            "print(json.dumps([imported, opened]))")
    result = run_python("windows", code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [[], False]


def test_on_simulated_macos_fcntl_has_f_fullfsync_and_it_syncs(tmp_path):
    log = tmp_path / "fullfsync.log"
    code = ("import fcntl, tempfile\n"
            "with tempfile.TemporaryFile() as f:\n"
            "    f.write(b'x'); f.flush(); fcntl.fcntl(f.fileno(), fcntl.F_FULLFSYNC)\n")
    result = run_python("macos", code, MEDITRACK_SIMULATED_FULLFSYNC_LOG=str(log))
    assert result.returncode == 0, result.stderr
    assert log.read_text(encoding="ascii") == "F_FULLFSYNC\n"


# --- MediTrack on each simulated system --------------------------------------------------


@pytest.mark.parametrize("system", SIMULATED)
def test_every_product_module_imports(system):
    modules = [".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for path in PRODUCT]
    code = f"import importlib\nfor name in {modules!r}:\n    importlib.import_module(name)\nprint('ok')"
    result = run_python(system, code)
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


def test_the_single_process_server_never_imports_the_worker_machinery():
    code = "import sys, meditrack\nprint(sorted(name for name in sys.modules if name in ('web.workers.prefork', 'web.workers.sharedlimit')))"
    result = run_python("windows", code)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr


def test_workers_are_refused_on_simulated_windows_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "meditrack.py", "--workers", "2", "--data-dir", str(tmp_path)],
                            cwd=ROOT, env={**os.environ, **simulated("windows")}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "os.fork" in result.stderr and "run one process" in result.stderr and "reverse proxy" in result.stderr
    assert not (tmp_path / "meditrack.sqlite3").exists()  # refused before anything was opened


@pytest.mark.parametrize("system", SIMULATED)
def test_the_seed_flow_runs_on(system, tmp_path):
    fullfsync_log = tmp_path / "fullfsync.log"
    data_dir = tmp_path / "data"
    process, url = launch_meditrack(data_dir, {
        **simulated(system, MEDITRACK_SIMULATED_FULLFSYNC_LOG=str(fullfsync_log)),
        "MEDITRACK_BCRYPT_ROUNDS": "4", "MEDITRACK_JWT_SECRET": TEST_SECRET.decode("ascii")})
    try:
        walk_the_seed_flow(url)
        # Ctrl-C: the way a student stops it, and on Windows the only signal there is for it.
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        log = process.stderr.read()
        assert "MediTrack stopped" in log and "Traceback" not in log, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        process.stderr.close()
    verified = subprocess.run([sys.executable, "meditrack.py", "verify-audit", "--data-dir", str(data_dir)],
                              cwd=ROOT, env={**os.environ, **simulated(system)}, capture_output=True, text=True,
                              timeout=60)
    assert verified.returncode == 0 and "audit trail intact" in verified.stdout, verified.stderr
    if system == "macos":
        # One upload: its file, then the directory it was renamed into, each through F_FULLFSYNC.
        assert fullfsync_log.read_text(encoding="ascii").count("F_FULLFSYNC") == 2
    else:
        assert not fullfsync_log.exists()


def walk_the_seed_flow(url: str) -> None:
    """Register, log in, create, update with If-Match, upload a PDF, download part of it,
    read it as FHIR, export, log out: each answered as on Linux."""
    session = requests.Session()
    credentials = {"username": "student", "password": "correct horse battery"}
    assert session.post(url + "/auth/register", json=credentials, timeout=10).status_code == 201
    login = session.post(url + "/auth/login", json=credentials, timeout=10)
    assert login.status_code == 200, login.text
    session.headers["Authorization"] = f"Bearer {login.json()['accessToken']}"
    created = session.post(url + "/patients", json=PATIENT, timeout=10)
    assert created.status_code == 201, created.text
    patient = url + created.headers["Location"]
    updated = session.put(patient, json={**PATIENT, "notes": "seen on a laptop"},
                          headers={"If-Match": created.headers["ETag"]}, timeout=10)
    assert (updated.status_code, updated.json()["version"]) == (200, 2), updated.text
    uploaded = session.post(patient + "/reports", files={"file": ("scan.pdf", PDF, "application/pdf")}, timeout=10)
    assert uploaded.status_code == 201, uploaded.text
    part = session.get(url + uploaded.headers["Location"], headers={"Range": "bytes=0-4"}, timeout=10)
    assert (part.status_code, part.content) == (206, PDF[:5])
    fhir = session.get(url + "/fhir/Patient/" + created.json()["id"], timeout=10)
    assert (fhir.status_code, fhir.json()["name"][0]["family"]) == (200, PATIENT["lastName"])
    exported = session.get(url + "/export", timeout=10)
    assert exported.status_code == 200
    kinds = [json.loads(line)["resourceType"] for line in exported.text.splitlines()]
    assert kinds == ["Patient", "DocumentReference"]
    assert session.post(url + "/auth/logout", timeout=10).status_code == 204
    assert session.get(patient, timeout=10).status_code == 401


# --- what the code may touch, and where --------------------------------------------------

# Names only some systems have, and the product modules allowed to use them: system.py,
# which asks for the rest, and the worker machinery, used only where CAN_FORK.
PLATFORM_NAMES = {("os", "fork"), ("os", "register_at_fork"), ("os", "sched_getaffinity"),
                  ("os", "process_cpu_count"), ("os", "O_DIRECTORY"), ("os", "waitpid"), ("os", "WNOHANG"),
                  ("os", "getuid"), ("signal", "SIGHUP"), ("signal", "SIGCHLD"), ("signal", "SIGKILL"),
                  ("signal", "pthread_sigmask"), ("fcntl", "*")}
ALLOWED = {ROOT / "system.py", ROOT / "web" / "workers" / "prefork.py", ROOT / "web" / "workers" / "sharedlimit.py"}


def platform_names_used(path: Path) -> set[str]:
    used = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in PLATFORM_NAMES or (node.value.id, "*") in PLATFORM_NAMES:
                used.add(f"{node.value.id}.{node.attr}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
            used.update(f"import {name}" for name in modules if (name, "*") in PLATFORM_NAMES)
    return used


def test_only_system_py_and_the_worker_machinery_touch_what_some_systems_lack():
    touched = {str(path.relative_to(ROOT)): sorted(platform_names_used(path)) for path in PRODUCT
               if path not in ALLOWED}
    assert {module: names for module, names in touched.items() if names} == {}


def strings_naming_proc(tree: ast.AST) -> list[ast.AST]:
    """The string constants that name a path under /proc, docstrings left out (prose, not reads)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value.startswith("/proc") and id(node) not in docstrings]


def test_product_code_never_reads_proc():
    readers = [str(path.relative_to(ROOT)) for path in PRODUCT
               if strings_naming_proc(ast.parse(path.read_text(encoding="utf-8")))]
    assert readers == []


def test_every_reader_of_proc_in_the_tests_checks_for_it_first():
    unguarded = []
    assert (ROOT / "tests" / "support" / "tcp.py") in set((ROOT / "tests").rglob("*.py"))  # the search sees them
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path == Path(__file__).resolve():
            continue  # this file names /proc only to look for it
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)):
            if not strings_naming_proc(function):
                continue
            checks = {node.func.id for node in ast.walk(function)
                      if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
            if "require_proc" not in checks:
                unguarded.append(f"{path.relative_to(ROOT)}:{function.name}")
    assert unguarded == []
