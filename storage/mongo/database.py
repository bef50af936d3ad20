"""How the MongoDB store reaches its server: the collections, the GridFS bucket of report
bytes, the clock, and pymongo's errors turned into the store's own (storage/errors.py).

`Database` is what every part of the store holds (storage/mongo/store.py builds it and
hands it to the accounts, the versions protocol, the reports and the audit log).
"""

from contextlib import contextmanager

import gridfs
from bson import ObjectId
from pymongo.errors import DuplicateKeyError, PyMongoError

from storage.base import utc_timestamp
from storage.errors import Conflict, Unavailable


class Database:
    """What every part of the MongoDB store works through, and nothing else: the
    database's collections, the GridFS bucket (and `delete_file`), the clock, and
    `errors_translated()`.

    `MongoStore` makes one and hands it to each part it is built from (accounts, the
    versions protocol, the reports, the audit log), so no part reaches into another's
    attributes."""

    def __init__(self, client, clock, objects=None):
        database = client.get_default_database(default="meditrack")
        self.users = database["users"]
        self.sessions = database["sessions"]
        self.refresh_tokens = database["refreshTokens"]
        self.spent_tokens = database["spentRefreshTokens"]
        self.login_failures = database["loginFailures"]
        self.patients = database["patients"]
        self.patient_versions = database["patientVersions"]
        self.migrations = database["schemaMigrations"]
        self.audit = database["audit"]
        self.audit_chains = database["auditChains"]
        self.files = gridfs.GridFSBucket(database, bucket_name="reports")
        self.file_documents = database["reports.files"]
        self.chunk_documents = database["reports.chunks"]
        self.report_hashes = database["reportHashes"]  # with an object store: SHA-1s computed after upload
        self.clock = clock
        # With an object store (storage/s3/reports.py) report bytes live there, not in GridFS.
        self.objects = objects

    @contextmanager
    def errors_translated(self):
        """pymongo's exceptions become the store's own: handlers never see a driver."""
        try:
            yield
        except DuplicateKeyError as exc:
            raise Conflict("a record with this key already exists") from exc
        except PyMongoError as exc:  # unreachable, timed out, not primary, ...
            raise Unavailable("the database cannot complete the request") from exc

    def now(self) -> str:
        return utc_timestamp(self.clock())

    def delete_file(self, report_id: str) -> None:
        """Delete a report's bytes (its GridFS file, or its object); ones already gone are
        fine (deleting is idempotent)."""
        if self.objects is not None:
            self.objects.remove(report_id)
            return
        try:
            self.files.delete(ObjectId(report_id))
        except gridfs.errors.NoFile:
            pass
