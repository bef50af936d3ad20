"""MediTrack: a patient-record REST API on Python's standard library.

    python meditrack.py [--host H] [--port P] [--data-dir DIR] [--workers N|auto]
    python meditrack.py verify-audit [--data-dir DIR]     check the audit trail's hash chains
    python meditrack.py backup DEST [--data-dir DIR]      copy everything, while serving, into DEST
    python meditrack.py restore SRC [--data-dir DIR]      load a backup into an empty store
    python meditrack.py --help                            every flag, its default and variable

This file is composition only, read top to bottom in the order things are built:

    settings (settings.py) → store (storage/) → services (handlers/) → routes → server (web/)

It serves HTTP/1.1 until SIGTERM or Ctrl-C. A bad setting stops start-up with one
line that names it.
"""

import sys
from importlib.util import find_spec
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"


def install_hint(package: str) -> str:
    """One line: which package this Python lacks, and the command that installs it."""
    return (f"meditrack: the package {package} is not installed for this Python ({sys.executable}); "
            f"install the requirements with: \"{sys.executable}\" -m pip install -r \"{REQUIREMENTS}\" "
            f"(into a virtual environment: see README.md, Quick start)")


# Checked before the imports below, which would otherwise end in a traceback: a Python
# too old for this code, or without bcrypt (the one package the default store needs;
# pymongo is asked for only when MONGODB_URI is set, in main()).
if sys.version_info < (3, 11):
    sys.exit(f"meditrack: needs Python 3.11 or newer, and this is {sys.version.split()[0]} ({sys.executable})")
if find_spec("bcrypt") is None:
    sys.exit(install_hint("bcrypt"))

import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from functools import partial

import system
from handlers import (ERROR_STATUSES, audit_trail, auth, bulk_export, docs, fhir, patients, report_links, reports,
                      service, sessions, versions)
from handlers.audit_trail import AuditTrail
from handlers.auth import Accounts
from handlers.bulk_jobs import BulkJobs
from handlers.docs import Documents
from handlers.patients import PatientRecords
from settings import COMMANDS, Settings, SettingError, load_or_create_secret, load_settings
from storage import open_store
from storage.audit_writer import QUARANTINE_FILE, AuditQuarantine, AuditWriter
from storage.backup import BackupError, check_backup, described, restore_backup, take_backup
from storage.hash_chain import ChainBroken, verify_chains
from storage.base import Store, utc_timestamp
from storage.errors import StoreError
from storage.s3.client import ObjectStore
from web.cors import CorsPolicy
from web.dispatch import Dispatcher
from web.housekeeping import Housekeeping
from web.ratelimit import RateLimiter
from web.router import Router
from web.server import MediTrackServer
from web.validation import SchemaValidator

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.json"


def audited(action: str, resource_type: str) -> dict:
    """A route's tag for the audit trail: every request to it leaves one event
    (handlers/audit_trail.py reads it; the router and the dispatcher never do)."""
    return {"audit": (action, resource_type)}


def open_configured_store(settings: Settings, *, clock=time.time) -> Store:
    """The store the settings name; with MEDITRACK_S3_ENDPOINT, its report bytes in that
    object store, whose bucket and credentials are checked first (a wrong one stops
    start-up with one line: ObjectStoreError, a StoreError)."""
    objects = None
    if settings.s3_endpoint:
        objects = ObjectStore(settings.s3_endpoint, settings.s3_bucket, region=settings.s3_region,
                              access_key=settings.s3_access_key, secret_key=settings.s3_secret_key)
        objects.check()
    return open_store(settings.data_dir, settings.mongodb_uri, clock=clock, objects=objects)


def open_bulk_jobs(settings: Settings, store: Store, *, clock=time.time) -> BulkJobs:
    """The bulk exports under <data-dir>/bulk (handlers/bulk_jobs.py); those that expired
    while the server was down are swept now, and the rest hourly (serve)."""
    jobs = BulkJobs(settings.data_dir / "bulk", store, clock=clock, retention=settings.export_retention_hours * 3600,
                    identifier_system=settings.fhir_identifier_system)
    jobs.sweep()
    return jobs


def build_router(settings: Settings, store: Store, accounts: Accounts, records: PatientRecords,
                 documents: Documents, trail: AuditTrail, passwords_limit=None, *, clock=time.time,
                 jobs: BulkJobs | None = None) -> Router:
    """The whole API on one screen: method, path template, handler with its services, options.
    `rate_limit=passwords_limit`: where passwords are checked, a stricter bucket as well as
    the general one: it slows guessing, and keeps a storm of bcrypt work from starving
    every other request."""
    router = Router()
    fhir_view = fhir.FhirView(records, settings.public_url,
                              identifier_system=settings.fhir_identifier_system)
    bulk = bulk_export.BulkExport(jobs or open_bulk_jobs(settings, store, clock=clock), fhir_view)
    links = report_links.ReportLinks(records, accounts, ttl=settings.link_ttl, public_url=settings.public_url)
    router.add("POST", "/auth/register", partial(auth.register, accounts), rate_limit=passwords_limit,
               tags=audited("create", "Account"))
    router.add("POST", "/auth/login", partial(auth.login, accounts), rate_limit=passwords_limit,
               tags=audited("login", "Session"))
    router.add("GET", "/auth/me", auth.me, auth=True)
    router.add("DELETE", "/auth/me", partial(auth.erase_account, accounts), auth=True, rate_limit=passwords_limit,
               tags=audited("account-delete", "Account"))
    router.add("PUT", "/auth/password", partial(auth.change_password, accounts), auth=True,
               rate_limit=passwords_limit, tags=audited("password-change", "Account"))
    router.add("POST", "/auth/refresh", partial(sessions.refresh, accounts), rate_limit=passwords_limit,
               tags=audited("refresh", "Session"))
    router.add("POST", "/auth/logout", partial(sessions.logout, accounts), auth=True, tags=audited("logout", "Session"))
    router.add("GET", "/auth/sessions", partial(sessions.list_sessions, accounts), auth=True)
    router.add("DELETE", "/auth/sessions", partial(sessions.end_all_sessions, accounts), auth=True,
               tags=audited("logout", "Session"))
    router.add("DELETE", "/auth/sessions/{sessionId}", partial(sessions.end_session, accounts), auth=True,
               tags=audited("logout", "Session"))
    router.add("GET", "/patients", partial(patients.list_patients, records), auth=True,
               tags=audited("search", "Patient"))
    router.add("POST", "/patients", partial(patients.create_patient, records), auth=True,
               tags=audited("create", "Patient"))
    router.add("GET", "/patients/{patientId}", partial(patients.get_patient, records), auth=True,
               tags=audited("read", "Patient"))
    router.add("PUT", "/patients/{patientId}", partial(patients.replace_patient, records), auth=True,
               tags=audited("update", "Patient"))
    router.add("PATCH", "/patients/{patientId}", partial(patients.patch_patient, records), auth=True,
               tags=audited("update", "Patient"))
    router.add("DELETE", "/patients/{patientId}", partial(patients.delete_patient, records), auth=True,
               tags=audited("delete", "Patient"))
    router.add("GET", "/patients/{patientId}/versions", partial(versions.list_versions, records), auth=True,
               tags=audited("read", "Patient"))
    router.add("GET", "/patients/{patientId}/versions/{version}", partial(versions.get_version, records),
               auth=True, tags=audited("read", "Patient"))
    router.add("GET", "/patients/{patientId}/audit", partial(audit_trail.patient_events, trail, records), auth=True)
    router.add("GET", "/patients/{patientId}/reports", partial(reports.list_reports, records), auth=True,
               tags=audited("read", "Report"))
    router.add("POST", "/patients/{patientId}/reports",
               partial(reports.upload_report, records, settings.max_upload_bytes), auth=True,
               max_body=settings.max_upload_bytes + reports.MULTIPART_OVERHEAD, tags=audited("create", "Report"))
    router.add("GET", "/patients/{patientId}/reports/{reportId}", partial(reports.download_report, records),
               auth=True, tags=audited("download", "Report"))
    router.add("DELETE", "/patients/{patientId}/reports/{reportId}", partial(reports.delete_report, records),
               auth=True, tags=audited("delete", "Report"))
    router.add("POST", "/patients/{patientId}/reports/{reportId}/link", partial(report_links.create_link, links),
               auth=True, tags=audited("create", "Link"))
    router.add("GET", "/patients/{patientId}/reports/{reportId}/link", partial(report_links.open_link, links),
               tags=audited("download", "Report"))  # no auth=True: the link's token is the proof
    router.add("GET", "/fhir/metadata", partial(fhir.capabilities, fhir_view))
    router.add("GET", "/fhir/Patient", partial(fhir.search_patients, fhir_view), auth=True,
               tags=audited("search", "Patient"))
    router.add("GET", "/fhir/$export", partial(bulk_export.kick_off, bulk), auth=True,
               tags=audited("export", "Export"))
    router.add("GET", "/fhir/Patient/$export", partial(bulk_export.kick_off, bulk), auth=True,
               tags=audited("export", "Export"))
    router.add("GET", "/fhir/bulk/{jobId}", partial(bulk_export.status, bulk), auth=True)
    router.add("DELETE", "/fhir/bulk/{jobId}", partial(bulk_export.cancel, bulk), auth=True)
    router.add("GET", "/fhir/bulk/{jobId}/{fileName}", partial(bulk_export.download, bulk), auth=True,
               tags=audited("download", "Export"))
    router.add("GET", "/fhir/Patient/{patientId}", partial(fhir.read_patient, fhir_view), auth=True,
               tags=audited("read", "Patient"))
    router.add("GET", "/fhir/Patient/{patientId}/_history", partial(fhir.patient_history, fhir_view), auth=True,
               tags=audited("read", "Patient"))
    router.add("GET", "/fhir/Patient/{patientId}/_history/{vid}",
               partial(fhir.read_patient_version, fhir_view), auth=True, tags=audited("read", "Patient"))
    router.add("GET", "/fhir/Patient/{patientId}/$everything", partial(fhir.patient_everything, fhir_view),
               auth=True, tags=audited("read", "Patient"))
    router.add("GET", "/fhir/DocumentReference", partial(fhir.search_document_references, fhir_view), auth=True,
               tags=audited("search", "Report"))
    router.add("GET", "/fhir/DocumentReference/{reportId}", partial(fhir.read_document_reference, fhir_view),
               auth=True, tags=audited("read", "Report"))
    router.add("GET", "/export", partial(fhir.export, fhir_view), auth=True, tags=audited("export", "Export"))
    router.add("GET", "/audit", partial(audit_trail.list_events, trail), auth=True)
    router.add("GET", "/health", partial(service.health, store, trail))
    router.add("GET", "/openapi.json", partial(docs.get_openapi, documents))
    router.add("GET", "/docs", partial(docs.get_docs, documents))
    audit_trail.check_declarations(router.routes)
    return router


def rate_limiter(rate: tuple[int, float] | None, *, shared: bool = False):
    """A limiter for (requests, seconds), or none when the setting is 0; `shared`: one
    whose buckets every worker forked after it counts in (web/workers/sharedlimit.py)."""
    if not rate:
        return None
    if shared:
        from web.workers.sharedlimit import SharedRateLimiter  # workers only (POSIX): see serve_with_workers
        return SharedRateLimiter(*rate)
    return RateLimiter(*rate)


def rate_limiters(settings: Settings, *, shared: bool = False) -> tuple:
    """(the general limit, the stricter one where passwords are checked)."""
    return rate_limiter(settings.rate_limit, shared=shared), rate_limiter(settings.auth_rate_limit, shared=shared)


def build_dispatcher(settings: Settings, store: Store, audit_writer: AuditWriter, *, clock=time.time,
                     limiters: tuple | None = None, jobs: BulkJobs | None = None) -> Dispatcher:
    """Settings, a store and the audit writer in; the services, the route table and the pipeline out.
    `limiters`: made by the caller when workers must share them; else made here."""
    general_limit, credentials_limit = limiters or rate_limiters(settings)
    documents = Documents.load(OPENAPI_PATH)
    validator = SchemaValidator(documents.spec)  # a mistake in the schemas stops start-up here
    accounts = Accounts(store, validator, jwt_key=settings.jwt_secret or load_or_create_secret(settings.data_dir),
                        token_ttl=settings.token_ttl, refresh_ttl=settings.refresh_ttl,
                        bcrypt_rounds=settings.bcrypt_rounds, clock=clock)
    records = PatientRecords(store, validator, clock=clock, require_if_match=settings.require_if_match)
    trail = AuditTrail(store, audit_writer)
    return Dispatcher(build_router(settings, store, accounts, records, documents, trail, credentials_limit,
                                   clock=clock, jobs=jobs),
                      authenticate=accounts.authenticate, exception_statuses=ERROR_STATUSES,
                      max_body=settings.max_json_bytes, general_limit=general_limit,
                      trusted_proxies=settings.trusted_proxies, refusal_delay=settings.refusal_delay,
                      observer=trail, error_formats=[("/fhir/", fhir.fhir_error_response)],
                      cors=CorsPolicy(settings.cors_origins) if settings.cors_origins else None)


def open_audit_writer(settings: Settings, store: Store, *, clock=time.time) -> AuditWriter:
    return AuditWriter(store, quarantine=AuditQuarantine(settings.data_dir / QUARANTINE_FILE),
                       flush_interval=settings.audit_flush_ms / 1000,
                       retention_days=settings.audit_retention_days, clock=clock)


def make_server(settings: Settings, store: Store, audit_writer: AuditWriter, *, clock=time.time,
                listener=None, limiters: tuple | None = None, jobs: BulkJobs | None = None) -> MediTrackServer:
    dispatcher = build_dispatcher(settings, store, audit_writer, clock=clock, limiters=limiters, jobs=jobs)
    return MediTrackServer((settings.host, settings.port), dispatcher, refuse=dispatcher.refusal,
                           socket_timeout=settings.socket_timeout, header_timeout=settings.header_timeout,
                           min_body_rate=settings.min_body_rate, max_connections=settings.max_connections,
                           listener=listener)


def verify_audit(settings: Settings, store: Store) -> int:
    """`python meditrack.py verify-audit`: walk every audit chain; 0 if all hold and no
    event waits in the quarantine, else 1."""
    heads = store.audit_chains()
    try:
        chains, events = verify_chains(store, heads)
    except ChainBroken as exc:
        print(f"audit trail BROKEN: {exc}", file=sys.stderr)
        return 1
    for head in heads:  # the anchors just checked: worth copying somewhere else
        print(f"chain {head['chain']}: sequence {head['lastSequence']}, hash {head['lastHash']}")
    print(f"audit trail intact: {events} events in {chains} chain{'' if chains == 1 else 's'}")
    quarantine = AuditQuarantine(settings.data_dir / QUARANTINE_FILE)
    if quarantined := quarantine.count():
        print(f"audit trail INCOMPLETE: {quarantined} event{'' if quarantined == 1 else 's'} the store refused "
              f"wait in {quarantine.path}", file=sys.stderr)
        return 1
    return 0


def backup(settings: Settings, store: Store) -> int:
    """`python meditrack.py backup DEST` (storage/backup.py): safe while a server serves the store."""
    key = ("environment" if settings.jwt_secret is not None
           else "file" if (settings.data_dir / "jwt-secret").is_file() else "none")
    manifest = take_backup(store, settings.backup_dir, data_dir=settings.data_dir, key=key,
                           now=utc_timestamp(time.time()))
    print(f"backup of the {store.name} store written to {settings.backup_dir}: {described(manifest['counts'])}")
    if key == "environment":
        print("the JWT key comes from MEDITRACK_JWT_SECRET and is not in the backup: keep it with the backup")
    return 0


def restore(settings: Settings, store: Store) -> int:
    """`python meditrack.py restore SRC`: check the whole backup, load it into the empty
    store the settings name, then check the audit trail it brought."""
    manifest = restore_backup(store, check_backup(settings.backup_dir), data_dir=settings.data_dir)
    print(f"restored the {manifest['store']} backup of {manifest['createdAt']} into the {store.name} store: "
          f"{described(manifest['counts'])}")
    if manifest["jwtKey"] == "environment":
        print("the backed-up server took its JWT key from MEDITRACK_JWT_SECRET: set the same value here, "
              "or every token it issued is refused")
    return verify_audit(settings, store)


COMMAND_FUNCTIONS = {"verify-audit": verify_audit, "backup": backup, "restore": restore}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv[:1] and argv[0] in COMMANDS else "serve"
    try:
        settings = load_settings(argv, dict(os.environ), command)
        # With workers, each line says which process wrote it.
        worker_id = " [%(process)d]" if settings.workers > 1 and command == "serve" else ""
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s{worker_id} %(name)s %(message)s")
        if command in COMMAND_FUNCTIONS:
            store = open_configured_store(settings)
            try:
                return COMMAND_FUNCTIONS[command](settings, store)
            finally:
                store.close()
        if settings.workers > 1:
            return serve_with_workers(settings)
        store = open_configured_store(settings)
        audit_writer = open_audit_writer(settings, store)
        jobs = open_bulk_jobs(settings, store)
        server = make_server(settings, store, audit_writer, jobs=jobs)
    except SettingError as exc:
        print(f"meditrack: {exc}", file=sys.stderr)
        return 2
    except BackupError as exc:
        print(f"meditrack: {command} failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the port is taken, the data directory is not writable, ...
        print(f"meditrack: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except StoreError as exc:  # e.g. MongoDB unreachable at start-up
        print(f"meditrack: cannot open the store: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # MONGODB_URI is set, and pymongo is not installed
        if (exc.name or "").split(".")[0] not in ("pymongo", "bson", "gridfs"):  # the modules pymongo installs
            raise
        print(install_hint("pymongo"), file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    print(f"MediTrack serving on http://{host}:{port} (store: {store.name}, data: {settings.data_dir})",
          file=sys.stderr, flush=True)
    serve(settings, server, store, audit_writer, jobs)
    print("MediTrack stopped", file=sys.stderr)
    return 0


def serve(settings: Settings, server: MediTrackServer, store: Store, audit_writer: AuditWriter,
          jobs: BulkJobs) -> None:
    """Serve until SIGTERM or Ctrl-C, drain, and close: one process, or one worker."""
    def stop(signum, frame):
        # shutdown() stops accepting and waits for serve_forever() to return, which runs
        # in this very thread: it has to be called from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    for number in system.STOP_SIGNALS:  # SIGINT, SIGTERM, and Windows' Ctrl-Break
        signal.signal(number, stop)
    # Hourly, what start-up did: report files no row names, expired sessions, expired exports.
    housekeeping = Housekeeping({"sweep": store.sweep, "bulk exports": jobs.sweep}).start()
    try:
        server.serve_forever()
        # No new connections now; requests in progress get `shutdown_grace` seconds.
        if not server.drain(settings.shutdown_grace):
            print("MediTrack: requests still running after the grace period were cut off", file=sys.stderr)
    finally:
        housekeeping.stop()
        server.server_close()
        audit_writer.close()  # every queued audit event is committed before the store closes
        store.close()


def serve_with_workers(settings: Settings) -> int:
    """`--workers N`: bind here, then fork N workers that serve the socket (web/workers/prefork.py).
    Each opens its own store: connections to a database are never shared across a fork.
    Only here are fork, POSIX signals and fcntl needed (settings.py refuses `--workers`
    where os.fork is missing), so only here is that machinery imported."""
    from web.workers.prefork import Supervisor

    # Opened once here first, then closed before any fork (no database connection may
    # cross one): a store that cannot open stops start-up as it does for one process,
    # rather than as workers dying one after another; its start-up work (schema changes,
    # the sweep, back-fills) is done before any worker serves; and a new data directory
    # gets its JWT key file here, not from two workers racing to write it.
    open_configured_store(settings).close()
    if settings.jwt_secret is None:
        settings = dataclasses.replace(settings, jwt_secret=load_or_create_secret(settings.data_dir))
    listener = socket.create_server((settings.host, settings.port), backlog=MediTrackServer.request_queue_size)
    # Made before the fork, so every worker counts in the same buckets: a client gets
    # its limit once, whichever worker its connections land on.
    limiters = rate_limiters(settings, shared=True)
    host, port = listener.getsockname()[:2]
    print(f"MediTrack serving on http://{host}:{port} with {settings.workers} workers (data: {settings.data_dir})",
          file=sys.stderr, flush=True)

    def worker(listener: socket.socket, ready) -> int:
        store = open_configured_store(settings)
        audit_writer = open_audit_writer(settings, store)
        jobs = open_bulk_jobs(settings, store)
        server = make_server(settings, store, audit_writer, listener=listener, limiters=limiters, jobs=jobs)
        ready()
        serve(settings, server, store, audit_writer, jobs)
        return 0

    status = Supervisor(listener, worker, workers=settings.workers, grace=settings.shutdown_grace).run()
    print("MediTrack stopped", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
