"""Which product code one request runs: the lines, the files and the functions, in order.

    python bench/trace.py            the second authenticated GET /patients/{id}

It starts MediTrack in this process (a fresh data directory, rate limits off, bcrypt at
its cheapest), registers, logs in, creates a patient and reads it once, then reads it a
second time on a new connection with `sys.settrace` on the thread that serves that
connection. It prints how many distinct lines of the product (the repository's files
outside tests/ and bench/) that thread ran, in how many files, and the product
functions it entered, in the order it first entered each: the hops of
docs/request-path.md, which tests/test_request_path.py checks against this trace.

Only the serving thread is traced: the audit event that the request leaves is committed
later by the audit writer's thread, which the guide describes on its own.
"""

import http.client
import json
import sys
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import meditrack  # noqa: E402
from settings import Settings  # noqa: E402
from storage import open_store  # noqa: E402

OUTSIDE_THE_PRODUCT = (ROOT / "tests", ROOT / "bench", ROOT / ".venv")


@dataclass
class Trace:
    lines: set[tuple[str, int]] = field(default_factory=set)       # (file relative to ROOT, line)
    functions: list[tuple[str, str]] = field(default_factory=list)  # (file, qualified name), first entry order

    @property
    def files(self) -> list[str]:
        return sorted({path for path, _ in self.lines})


def product_file(filename: str) -> str | None:
    """The file's path relative to the repository if it is product code, else None."""
    path = Path(filename)
    if not path.is_absolute() or not path.is_relative_to(ROOT):
        return None
    if any(path.is_relative_to(outside) for outside in OUTSIDE_THE_PRODUCT):
        return None
    return str(path.relative_to(ROOT))


def tracer_for(trace: Trace):
    seen_functions = set()

    def local(frame, event, arg):
        if event == "line":
            path = product_file(frame.f_code.co_filename)
            if path:
                trace.lines.add((path, frame.f_lineno))
        return local

    def on_call(frame, event, arg):
        path = product_file(frame.f_code.co_filename)
        if path is None:
            return None  # not product code: its own lines are not followed (calls out of it still are)
        function = (path, frame.f_code.co_qualname)
        if function not in seen_functions:
            seen_functions.add(function)
            trace.functions.append(function)
        return local

    return on_call


def request(port: int, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = connection.getresponse()
        return json.loads(response.read() or b"null")
    finally:
        connection.close()


def trace_second_read() -> Trace:
    """The trace of the serving thread for the second authenticated read of a patient."""
    with tempfile.TemporaryDirectory(prefix="meditrack-trace-") as data_dir:
        settings = replace(Settings(), port=0, data_dir=Path(data_dir), bcrypt_rounds=4, rate_limit=None,
                           auth_rate_limit=None)
        store = open_store(settings.data_dir)
        audit_writer = meditrack.open_audit_writer(settings, store)
        server = meditrack.make_server(settings, store, audit_writer)
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        port = server.server_address[1]
        trace = Trace()
        try:
            credentials = {"username": "trace", "password": "correct horse battery"}
            request(port, "POST", "/auth/register", credentials)
            token = request(port, "POST", "/auth/login", credentials)["accessToken"]
            patient = request(port, "POST", "/patients",
                              {"firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1815-12-10"}, token)
            request(port, "GET", f"/patients/{patient['id']}", token=token)  # the first read
            before = set(threading.enumerate())
            threading.settrace(tracer_for(trace))  # every thread started from now on: the new connection's
            try:
                read = request(port, "GET", f"/patients/{patient['id']}", token=token)  # the second read
            finally:
                threading.settrace(None)
            assert read["id"] == patient["id"], read
            for thread in set(threading.enumerate()) - before:
                thread.join(10)  # the connection's thread ends once the client has closed it
        finally:
            server.shutdown()
            server.server_close()
            audit_writer.close()
            store.close()
        return trace


def main() -> int:
    trace = trace_second_read()
    print(f"the second authenticated GET /patients/{{id}}: {len(trace.lines)} distinct product lines "
          f"in {len(trace.files)} files on the serving thread")
    for path in trace.files:
        print(f"  {sum(1 for file, _ in trace.lines if file == path):4d}  {path}")
    print("functions entered, in order:")
    for number, (path, name) in enumerate(trace.functions, 1):
        print(f"  {number:3d}. {path}: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
