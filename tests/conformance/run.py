"""`make conformance`: Schemathesis checks the server against openapi.json, on each store.

    python tests/conformance/run.py --schemathesis PATH [--max-examples N]

First openapi-spec-validator checks openapi.json against the OpenAPI 3.1 schema. Then,
for the embedded store, and for MongoDB when MEDITRACK_TEST_MONGODB_URI names a server
(`make conformance` runs this under tests/ferretdb.py), it starts MediTrack as a real
process on a fresh data directory, with rate limits off and bcrypt at its cheapest
(a run makes thousands of requests and logs in before each), and runs

    schemathesis run <server>/openapi.json --config-file tests/conformance/schemathesis.toml

with the hooks beside this file (tests/conformance/hooks.py: a fresh session per
request, and valid data kept within what the schema can only describe). Schemathesis
then exercises every operation: the spec's examples, the boundaries of every schema
(coverage), generated valid and invalid requests (fuzzing), and chains of calls that
follow the spec's links and Location headers (stateful), with every check: no 5xx, each
response matches its documented status, content type, headers and schema, valid data
is accepted and invalid data refused, deleted resources stay deleted, no protected
operation works without a token.

Both tools live in a virtual environment of their own (the Makefile makes it): it is no
requirement of the product or of its test suite. Exits with the first failing run's status.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from bench.soak import start_server  # noqa: E402  (its access log drained, so the pipe never fills)

RUN_TIMEOUT = 900  # seconds one store's run may take before it counts as failed


def check_store(schemathesis: str, store: str, mongodb_uri: str, max_examples: int | None) -> int:
    with tempfile.TemporaryDirectory(prefix="meditrack-conformance-") as data_dir:
        process, url = start_server(Path(data_dir), {
            "MONGODB_URI": mongodb_uri, "MEDITRACK_RATE_LIMIT": "0", "MEDITRACK_AUTH_RATE_LIMIT": "0",
            "MEDITRACK_BCRYPT_ROUNDS": "4", "MEDITRACK_MAX_CONNECTIONS": "1000"})
        try:
            command = [schemathesis, "--config-file", str(HERE / "schemathesis.toml"), "run", f"{url}/openapi.json"]
            if max_examples:
                command += ["--max-examples", str(max_examples)]
            print(f"== Schemathesis against MediTrack on {store}: {' '.join(command)}", flush=True)
            environment = {**os.environ, "SCHEMATHESIS_HOOKS": "hooks", "MEDITRACK_CONFORMANCE_URL": url,
                           "PYTHONPATH": str(HERE)}
            # cwd: Schemathesis keeps a cache in ./.schemathesis; the data directory is scratch.
            return subprocess.run(command, env=environment, timeout=RUN_TIMEOUT, cwd=data_dir).returncode
        finally:
            process.terminate()
            process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemathesis", required=True, help="the schemathesis command of its own venv")
    parser.add_argument("--max-examples", type=int, help="examples per operation (default: the config's)")
    arguments = parser.parse_args()
    # First the document itself, against the OpenAPI 3.1 specification's own schema.
    validator = str(Path(arguments.schemathesis).with_name("openapi-spec-validator"))
    checked = subprocess.run([validator, str(ROOT / "openapi.json")])
    if checked.returncode != 0:
        return checked.returncode
    stores = [("sqlite", "")]
    if os.environ.get("MEDITRACK_TEST_MONGODB_URI"):
        stores.append(("mongodb", os.environ["MEDITRACK_TEST_MONGODB_URI"].rstrip("/") + "/meditrack_conformance"))
    for store, uri in stores:
        status = check_store(arguments.schemathesis, store, uri, arguments.max_examples)
        if status != 0:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
