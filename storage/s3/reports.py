"""Report bytes in an S3-compatible object store, for either store (SQLite or MongoDB).

When `MEDITRACK_S3_ENDPOINT` is set, each store keeps its report rows or documents as
always and hands the bytes to `ObjectReports`: one object per report, under the key
`reports/<report id>` in the bucket. The store's rules for an upload, a download, a
delete and the sweep hold unchanged:

- **upload**: the bytes are parsed and hashed as they stream in, spooled to a temp
  file (unlinked at once, so a crash leaves nothing on disk; an upload is capped by
  MEDITRACK_MAX_UPLOAD_BYTES), then sent with one signed PUT whose
  x-amz-content-sha256 is the SHA-256 just computed: the server stores the object
  only if the bytes it received hash to it. Only then is the row written; if that
  fails (the patient was deleted meanwhile), the object is deleted again.
- **download**: a GET with the Range the client asked for, streamed through.
- **delete**: the row first, then the object (a crash between leaves an object no row
  names, never a row without its object).
- **sweep**: objects no row names, once older than the store's minimum age (an upload
  in flight on another instance is younger), are deleted: at start-up and hourly.

A single PUT takes at most 5 GiB (S3's limit), so start-up refuses a larger
MEDITRACK_MAX_UPLOAD_BYTES when the object store is in use (settings.py).
"""

import logging
import tempfile
from typing import Callable

from storage.backup import ReportGone
from storage.base import ReportChunks, ReportWriter, utc_timestamp
from storage.errors import StoreError, Unavailable
from storage.ids import id_seconds, is_object_id, new_id
from storage.s3.client import ObjectGone, ObjectStore

PREFIX = "reports/"
SPOOL_BLOCK = 1024 * 1024

log = logging.getLogger("meditrack.store")


class ObjectReports:
    """The report bytes of one store in `objects` (one bucket), on the store's clock."""

    def __init__(self, objects: ObjectStore, *, clock, spool_dir=None):
        self.objects = objects
        self.clock = clock
        self.spool_dir = spool_dir  # where uploads wait for their PUT (None: the system's temp directory)

    def describe(self) -> dict:
        """For /health: which object store, and whether it answers now."""
        try:
            self.objects.check()
            answers = True
        except StoreError:
            answers = False
        return {"kind": "s3", "endpoint": self.objects.endpoint, "bucket": self.objects.bucket, "answers": answers}

    def key(self, report_id: str) -> str:
        return PREFIX + report_id

    def writer(self, attach: Callable[[str, dict], None], *,
               keep_after: tuple[type[Exception], ...] = ()) -> "ObjectReportWriter":
        return ObjectReportWriter(self, attach, keep_after=keep_after)

    def put_file(self, report_id: str, file, size: int, sha256: str) -> None:
        """Store an open file's bytes (from its start) as the report's object."""
        file.seek(0)
        self.objects.put(self.key(report_id), file, size, sha256)

    def open(self, report_id: str, *, start: int = 0, length: int | None = None) -> ReportChunks:
        try:
            body = self.objects.open(self.key(report_id), start, length)
        except ObjectGone as exc:
            raise Unavailable("the report's file cannot be read") from exc
        return ReportChunks(body, length=length)  # the Range header already skipped to `start`

    def read(self, report_id: str):
        """The report's bytes in chunks, for a backup; `ReportGone` if the object is gone."""
        try:
            body = self.objects.open(self.key(report_id))
        except ObjectGone:
            raise ReportGone(report_id) from None
        chunks = ReportChunks(body)
        try:
            yield from chunks
        finally:
            chunks.close()

    def remove(self, report_id: str) -> None:
        """Delete the bytes of a report whose row is gone; if the object store cannot be
        reached, the object is left for the sweep (the delete itself has happened)."""
        try:
            self.objects.delete(self.key(report_id))
        except StoreError:
            log.warning("report %s: its object could not be deleted now; left for the sweep", report_id)

    def ids(self) -> set[str]:
        return {key[len(PREFIX):] for key in self.objects.keys(PREFIX)}

    def sweep(self, is_named: Callable[[str], bool], min_age: float) -> None:
        """Delete the objects that no report names (`is_named(report_id)` says), once they
        are `min_age` seconds old. An object's age is its report id's: an id holds the
        second it was made, by the clock of the MediTrack that made it, as GridFS's sweep
        reads it (storage/mongo/reports.py); the object store's own clock is not ours.
        A key that is not a report id is not ours either, and is left alone."""
        cutoff = self.clock() - min_age
        for key in list(self.objects.keys(PREFIX)):
            report_id = key[len(PREFIX):]
            if is_object_id(report_id) and id_seconds(report_id) < cutoff and not is_named(report_id):
                self.objects.delete(key)


class ObjectReportWriter(ReportWriter):
    """An upload bound for the object store: spooled, then one PUT, then `attach`
    (the store's: the row, or the patient's new version). `keep_after`: errors of
    `attach` after which the object must stay (MongoDB's claimed version names it)."""

    def __init__(self, reports: ObjectReports, attach, *, keep_after=()):
        self._reports = reports
        self._attach = attach
        self._keep_after = keep_after
        self.report_id = new_id(reports.clock)
        # NOTE: TemporaryFile is unlinked as soon as it is made (on POSIX): whatever
        # happens to this process, the spooled bytes leave nothing behind on disk.
        self._spool = tempfile.TemporaryFile(dir=reports.spool_dir, prefix="upload-")
        self._size = 0
        self._stored = False
        self._committed = False

    def write(self, chunk):
        self._spool.write(chunk)
        self._size += len(chunk)

    def commit(self, patient_id, metadata):
        self._spool.flush()
        self._reports.put_file(self.report_id, self._spool, self._size, metadata["sha256"])
        self._stored = True
        report = {"id": self.report_id, **metadata, "uploadedAt": utc_timestamp(self._reports.clock())}
        try:
            self._attach(patient_id, report)
        except self._keep_after:
            self._committed = True
            raise
        self._committed = True
        return report

    def abort(self):
        self._spool.close()
        if self._stored and not self._committed:
            self._reports.remove(self.report_id)
        self._stored = False

