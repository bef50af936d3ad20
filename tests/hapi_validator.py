"""HL7's rules for the FHIR view: HAPI FHIR's validator, fetched from Maven Central and cached.

FHIR resources are only worth emitting if every FHIR system accepts them, and the one
judge of that is the validator HL7 and HAPI publish, not a test of ours. Run as a
script, this is what `make test-fhir` does:

    python tests/hapi_validator.py -- python -m pytest tests/test_fhir_validation.py

fetches HAPI FHIR's validator and the R4 definitions with Maven (tests/fhir_validator/
pom.xml) into the cache if they are not there yet, compiles the small Java program
beside it that runs them (ValidateFhir.java), runs the command with
MEDITRACK_FHIR_VALIDATOR set to the `java` command line that validates files, and
exits with the command's status. Java 17 and Maven are needed (both are Debian
packages: openjdk-17-jdk-headless, maven); the jars take about 150 MB.

The cache directory is named after a hash of the pom and the Java source, so changing
either builds afresh; a build is made beside it and renamed into place only once it is
complete.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent / "fhir_validator"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meditrack"


def build_key() -> str:
    digest = hashlib.sha256()
    for name in ("pom.xml", "ValidateFhir.java"):
        digest.update((SOURCE_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


def ensure_built() -> Path:
    """The directory with `jars/` and `classes/`, built into the cache on first use."""
    built = CACHE_DIR / f"hapi-fhir-validator-{build_key()}"
    if built.exists():
        return built
    print(f"fetching HAPI FHIR's validator into {built} (first run only)...", file=sys.stderr, flush=True)
    staged = CACHE_DIR / f"{built.name}.partial"
    shutil.rmtree(staged, ignore_errors=True)  # what an interrupted build left
    staged.mkdir(parents=True)
    subprocess.run(["mvn", "-q", "-B", "-f", str(SOURCE_DIR / "pom.xml"), "dependency:copy-dependencies",
                    f"-DoutputDirectory={staged / 'jars'}", "-DincludeScope=runtime"], check=True)
    subprocess.run(["javac", "-d", str(staged / "classes"), "-cp", str(staged / "jars" / "*"),
                    str(SOURCE_DIR / "ValidateFhir.java")], check=True)
    staged.rename(built)
    return built


def validator_command(built: Path) -> str:
    classpath = f"{built / 'classes'}{os.pathsep}{built / 'jars' / '*'}"
    return f"java -cp {classpath} ValidateFhir"


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: python tests/hapi_validator.py -- COMMAND...", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1:]
    environment = {**os.environ, "MEDITRACK_FHIR_VALIDATOR": validator_command(ensure_built())}
    return subprocess.run(command, env=environment).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
