# MediTrack — `make run` starts the API, `make test` runs the tests.
# Both create a virtual environment in .venv on first use and install into it.
# `make test PYTHON=python3.13` (or any interpreter) does the same with that Python, in a
# virtual environment of its own (.venv-python3.13), so several versions live side by side.
# `make test-mongo` runs the whole suite again with a MongoDB-compatible server
# (FerretDB over PostgreSQL, built with Go into ~/.cache/meditrack on first use). `make test-fhir` checks
# the FHIR view with HL7's rules (HAPI FHIR's validator, fetched from Maven Central into
# the same cache; Java 17 and Maven come from Debian's packages if missing), then with
# off-the-shelf FHIR clients (SMART's fhirclient, fhir.resources) against a live server.

PYTHON ?= python3
# The interpreter itself. A pyenv shim (python3.13) answers only for the versions pyenv
# has selected; for another installed one, pyenv is asked where it is.
PYTHON_BIN := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null || \
	PYENV_VERSION=$$(pyenv versions --bare 2>/dev/null | grep -x '$(subst .,\.,$(patsubst python%,%,$(notdir $(PYTHON))))[.0-9]*' \
	| sort -V | tail -n 1) pyenv which $(notdir $(PYTHON)) 2>/dev/null)
ifeq ($(PYTHON_BIN),)
$(error $(PYTHON) is not an interpreter this machine has: set PYTHON to one, e.g. PYTHON=python3.12)
endif
VENV := $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
PY := $(VENV)/bin/python

.PHONY: run test test-simulated test-mongo test-s3 test-fhir conformance test-clients test-browser soak bench profile clean postgresql

DURATION ?= 60

run: $(VENV)/.runtime
	$(PY) meditrack.py

test: $(VENV)/.dev
	$(PY) -m pytest

# The whole suite again on a simulated Windows, then a simulated macOS: a sitecustomize
# (tests/platforms/) takes away, in the Python that runs it, what CPython lacks there.
# On Windows what needs fork skips, and says so. os.getuid and signal.SIGKILL stay for
# pytest and subprocess, which believe sys.platform (docs/platforms.md).
test-simulated: $(VENV)/.dev
	MEDITRACK_SIMULATE=windows MEDITRACK_SIMULATE_KEEP=os.getuid,signal.SIGKILL PYTHONPATH=tests/platforms \
		$(PY) -m pytest -rs
	MEDITRACK_SIMULATE=macos PYTHONPATH=tests/platforms $(PY) -m pytest

test-mongo: $(VENV)/.dev postgresql
	$(PY) tests/ferretdb.py -- $(PY) -m pytest

# The report tests with report bytes in an S3-compatible object store (versitygw on its
# POSIX backend, built with `go install` into ~/.cache/meditrack on first use: tests/s3server.py),
# with records on SQLite and on MongoDB, plus the object store's own tests (tests/test_s3.py).
S3_TESTS := tests/test_s3.py tests/test_http_reports.py tests/test_http_ranges.py tests/test_faults.py \
	tests/test_store_contract.py tests/test_housekeeping.py tests/test_backup.py tests/test_backup_under_load.py \
	tests/test_http_sessions.py tests/test_store_sessions.py tests/test_http_fhir.py tests/test_bulk_export.py \
	tests/test_workers.py tests/test_http_report_links.py
test-s3: $(VENV)/.dev postgresql
	$(PY) tests/ferretdb.py -- $(PY) tests/s3server.py -- $(PY) -m pytest $(S3_TESTS)

# FerretDB runs over PostgreSQL, its production backend (tests/ferretdb.py makes a
# throw-away cluster per run). PostgreSQL comes from Debian's packages when missing; the
# cluster the package makes and starts is stopped, since the runs make their own.
# FERRETDB_BACKEND=sqlite needs none of it.
FERRETDB_BACKEND ?= postgresql
export FERRETDB_BACKEND
postgresql:
	@[ "$(FERRETDB_BACKEND)" = sqlite ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		[ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql || \
		{ $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; }; \
		pg_lsclusters --no-header 2>/dev/null | while read version cluster rest; do \
			$$SUDO pg_ctlcluster "$$version" "$$cluster" stop 2>/dev/null || true; done; }

# HL7's validator on what the FHIR view emits, then real FHIR clients against a running
# server (tests/fhir_clients/run.py: SMART's fhirclient, every answer checked with
# fhir.resources), from a virtual environment of its own in the cache: fhir.resources'
# last R4 release needs pydantic 1, which is no requirement of the product.
FHIR_CLIENTS_VENV := $(HOME)/.cache/meditrack/fhir-clients-venv
test-fhir: $(VENV)/.dev $(FHIR_CLIENTS_VENV)/.installed
	@command -v javac >/dev/null && command -v mvn >/dev/null || { [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
		$$SUDO apt-get install -y openjdk-17-jdk-headless maven || \
		{ $$SUDO apt-get update && $$SUDO apt-get install -y openjdk-17-jdk-headless maven; }; }
	$(PY) tests/hapi_validator.py -- $(PY) -m pytest -rP tests/test_fhir_validation.py
	$(FHIR_CLIENTS_VENV)/bin/python tests/fhir_clients/run.py

# MediTrack's own requirements too: run.py starts the server with the venv's python.
$(FHIR_CLIENTS_VENV)/.installed: requirements.txt tests/fhir_clients/requirements.txt
	$(PYTHON_BIN) -m venv $(FHIR_CLIENTS_VENV)
	$(FHIR_CLIENTS_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt \
		-r tests/fhir_clients/requirements.txt
	touch $@

# Schemathesis against openapi.json on both stores (tests/conformance/run.py), from a
# virtual environment of its own in the cache: it is no requirement of the product.
CONFORMANCE_VENV := $(HOME)/.cache/meditrack/conformance-venv
conformance: $(VENV)/.dev $(CONFORMANCE_VENV)/.installed postgresql
	$(PY) tests/ferretdb.py -- $(PY) tests/conformance/run.py --schemathesis $(CONFORMANCE_VENV)/bin/schemathesis

$(CONFORMANCE_VENV)/.installed: tests/conformance/requirements.txt
	$(PYTHON_BIN) -m venv $(CONFORMANCE_VENV)
	$(CONFORMANCE_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/conformance/requirements.txt
	touch $@

# Clients generated from openapi.json must work unedited. openapi-generator's Python client
# (the generator's jar fetched from Maven Central into the cache, like HAPI's validator)
# drives a patient's whole life on each store (tests/clients/run.py), from a virtual
# environment of its own in the cache: the client's requirements are none of the
# product's. Then openapi-typescript's types must compile a create, a read and an upload
# (tests/clients/typescript/use.ts) under tsc --strict; both npm packages are installed
# into the cache from the lock file beside use.ts. --default-non-nullable=false: by
# default a field with a default is typed required even in a request (PatientInput's gender).
CLIENTS_VENV := $(HOME)/.cache/meditrack/clients-venv
CLIENTS_NPM := $(HOME)/.cache/meditrack/clients-npm
test-clients: $(VENV)/.dev $(CLIENTS_VENV)/.installed $(CLIENTS_NPM)/.installed postgresql
	@command -v java >/dev/null && command -v mvn >/dev/null || { [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
		$$SUDO apt-get install -y openjdk-17-jdk-headless maven || \
		{ $$SUDO apt-get update && $$SUDO apt-get install -y openjdk-17-jdk-headless maven; }; }
	$(PY) tests/ferretdb.py -- $(CLIENTS_VENV)/bin/python tests/clients/run.py
	rm -rf $(CLIENTS_NPM)/check && mkdir $(CLIENTS_NPM)/check && cp tests/clients/typescript/use.ts $(CLIENTS_NPM)/check/
	$(CLIENTS_NPM)/node_modules/.bin/openapi-typescript openapi.json --default-non-nullable=false \
		--output $(CLIENTS_NPM)/check/meditrack.ts
	$(CLIENTS_NPM)/node_modules/.bin/tsc --strict --noEmit --target es2022 --lib es2022,dom \
		--module es2022 --moduleResolution bundler $(CLIENTS_NPM)/check/use.ts

# MediTrack's own requirements too: run.py starts the server with the venv's python.
$(CLIENTS_VENV)/.installed: requirements.txt tests/clients/requirements.txt
	$(PYTHON_BIN) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt \
		-r tests/clients/requirements.txt
	touch $@

# npm ci installs where package.json and its lock file are: copies of them, in the cache.
$(CLIENTS_NPM)/.installed: tests/clients/typescript/package.json tests/clients/typescript/package-lock.json
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
		$$SUDO apt-get install -y nodejs npm || { $$SUDO apt-get update && $$SUDO apt-get install -y nodejs npm; }; }
	mkdir -p $(CLIENTS_NPM)
	cp tests/clients/typescript/package.json tests/clients/typescript/package-lock.json $(CLIENTS_NPM)/
	npm ci --prefix $(CLIENTS_NPM) --no-audit --no-fund --loglevel=error
	touch $@

# /docs and CORS in headless Chromium (Debian's chromium and chromium-driver, installed
# if missing), driven by Selenium from a virtual environment of its own in the cache.
# Screenshots are kept in browser-artifacts/.
BROWSER_VENV := $(HOME)/.cache/meditrack/browser-venv
test-browser: $(BROWSER_VENV)/.installed
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
		$$SUDO apt-get install -y chromium chromium-driver || \
		{ $$SUDO apt-get update && $$SUDO apt-get install -y chromium chromium-driver; }; }
	MEDITRACK_CHROMEDRIVER=$$(command -v chromedriver) $(BROWSER_VENV)/bin/python -m pytest -rP tests/browser

$(BROWSER_VENV)/.installed: requirements.txt requirements-dev.txt tests/browser/requirements.txt
	$(PYTHON_BIN) -m venv $(BROWSER_VENV)
	$(BROWSER_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt \
		-r requirements-dev.txt -r tests/browser/requirements.txt
	touch $@

# Sustained mixed load, DURATION seconds on each store, one process and then two workers,
# then a check that nothing was lost; then two instances on one MongoDB and one object
# store, one killed with kill -9 half-way (bench/soak_instances.py).
soak: $(VENV)/.dev postgresql
	$(PY) bench/soak.py --duration $(DURATION)
	$(PY) bench/soak.py --duration $(DURATION) --workers 2
	$(PY) tests/ferretdb.py -- $(PY) bench/soak.py --duration $(DURATION)
	$(PY) tests/ferretdb.py -- $(PY) bench/soak.py --duration $(DURATION) --workers 2
	$(PY) tests/ferretdb.py -- $(PY) tests/s3server.py -- $(PY) bench/soak_instances.py --duration $(DURATION)

$(VENV)/.runtime: requirements.txt
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Speed and memory, as ratios to a bare ThreadingHTTPServer measured in the same run
# (a few minutes; wrk comes from Debian's packages). Results: bench/results.json.
bench: $(VENV)/.dev postgresql
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
		$$SUDO apt-get install -y wrk || { $$SUDO apt-get update && $$SUDO apt-get install -y wrk; }; }
	$(PY) tests/ferretdb.py --durable -- $(PY) bench/run.py

# Where a request's time goes: py-spy samples the server while wrk drives it (not in CI).
PROFILE_VENV := $(HOME)/.cache/meditrack/profile-venv
REQUEST ?= read
CONNECTIONS ?= 32
profile: $(VENV)/.dev $(PROFILE_VENV)/.installed
	$(PY) bench/profile.py --py-spy $(PROFILE_VENV)/bin/py-spy --request $(REQUEST) --connections $(CONNECTIONS)

$(PROFILE_VENV)/.installed: bench/profile-requirements.txt
	$(PYTHON_BIN) -m venv $(PROFILE_VENV)
	$(PROFILE_VENV)/bin/pip install --quiet --disable-pip-version-check -r bench/profile-requirements.txt
	touch $@

clean:
	rm -rf .venv .venv-* data
