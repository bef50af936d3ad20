"""The MongoDB store's report files: bytes in GridFS (the `reports` bucket), metadata in
the patient's document, each change to that list a new version of the patient.

`MongoReports` is a part that `MongoStore` (storage/mongo/store.py) holds; it works
through the store's `Database` and its versions protocol (storage/mongo/versions.py):
an upload writes its GridFS file first, then adds the metadata with a new version; a
delete removes the metadata with a new version, then the file. A crash between the
two steps leaves a file that no patient names, which the start-up sweep removes once
it is old enough not to be an upload still in flight (or, if a claimed version names
it, keeps, and applies that version).
"""

from contextlib import closing
from datetime import datetime, timedelta, timezone

import gridfs
from bson import ObjectId

from storage.base import ReportChunks, ReportWriter, base64_sha1
from storage.errors import NotFound, StoreError, Unavailable
from storage.ids import new_id
from storage.mongo.accounts import as_object_id
from storage.mongo.database import Database
from storage.mongo.versions import ClaimedNotApplied, MongoVersions

# GridFS files that no patient names are swept at start-up only when at least this old,
# so an upload that another MediTrack process is writing right now is left alone.
SWEEP_MIN_AGE = timedelta(minutes=10)


class MongoReports:
    def __init__(self, database: Database, versions: MongoVersions):
        self.database = database
        self._versions = versions

    def report_writer(self):
        if self.database.objects is not None:
            # The object stays if its version was claimed: the next write to the patient applies it.
            return self.database.objects.writer(self.attach, keep_after=ClaimedNotApplied)
        return MongoReportWriter(self.database, attach=self.attach)

    def attach(self, patient_id: str, report: dict) -> None:
        # NotFound if the patient was deleted while the upload ran.
        with self.database.errors_translated():
            self._versions.write_version(patient_id, None,
                                         lambda head: {"fields": head["fields"], "reports": [*head["reports"], report]})

    def open_report(self, patient_id, report_id, *, start=0, length=None):
        report_object_id = as_object_id(report_id)
        with self.database.errors_translated():
            document = self.database.patients.find_one({"_id": as_object_id(patient_id), "reports.id": report_id},
                                                       {"reports": 1})
            if document is None:
                raise NotFound("this patient has no report with this id")
            report = next(report for report in document["reports"] if report["id"] == report_id)
            if self.database.objects is not None:
                return report, self.database.objects.open(report_id, start=start, length=length)
            try:
                source = self.database.files.open_download_stream(report_object_id)
            except gridfs.errors.NoFile as exc:
                raise Unavailable("the report's file cannot be read") from exc
        # GridOut.seek only moves its position: the next read asks for the chunks from
        # the one holding `start` on (files_id, n ≥ start // chunkSize).
        return report, ReportChunks(source, start=start, length=length)

    def report_patient(self, report_id):
        with self.database.errors_translated():
            document = self.database.patients.find_one({"reports.id": report_id}, {"_id": 1})  # patients_by_report
        return None if document is None else str(document["_id"])

    def delete_report(self, patient_id, report_id):
        def without_report(head):
            reports = [report for report in head["reports"] if report["id"] != report_id]
            if len(reports) == len(head["reports"]):
                raise NotFound("this patient has no report with this id")
            return {"fields": head["fields"], "reports": reports}

        with self.database.errors_translated():
            self._versions.write_version(patient_id, None, without_report)
            self.database.delete_file(report_id)

    def stored_report_ids(self) -> set[str]:
        if self.database.objects is not None:
            return self.database.objects.ids()
        with self.database.errors_translated():
            files = {str(file_id) for file_id in self.database.file_documents.distinct("_id")}
            chunks = {str(file_id) for file_id in self.database.chunk_documents.distinct("files_id")}
        return files | chunks

    def sweep(self) -> None:
        """Remove GridFS files and chunks that no patient names, once they are older
        than SWEEP_MIN_AGE (a report id starts with its creation time, like any ObjectId),
        but for an upload whose version was claimed and not applied: that one is applied."""
        if self.database.objects is not None:
            self.database.objects.sweep(self._named_or_applied, SWEEP_MIN_AGE.total_seconds())
            return
        cutoff = ObjectId.from_datetime(datetime.fromtimestamp(self.database.clock(), timezone.utc) - SWEEP_MIN_AGE)
        for file_id in self.database.file_documents.distinct("_id", {"_id": {"$lt": cutoff}}):
            if not self._named_or_applied(str(file_id)):
                self.database.delete_file(str(file_id))
        # Chunks with no files document: an upload cut off before it was closed.
        known = set(self.database.file_documents.distinct("_id"))
        old_chunks = self.database.chunk_documents.distinct("files_id", {"files_id": {"$lt": cutoff}})
        stray = [file_id for file_id in old_chunks if file_id not in known]
        if stray:
            self.database.chunk_documents.delete_many({"files_id": {"$in": stray}})

    def _named_or_applied(self, report_id: str) -> bool:
        """Whether a patient names this report's bytes, or a claimed version does (then applied now)."""
        return (self.database.patients.find_one({"reports.id": report_id}, {"_id": 1}) is not None
                or self._versions.apply_claimed_version_listing(report_id))

    def kept_sha1s(self, report_ids: list[str]) -> dict[str, str | None]:
        """The SHA-1s `add_missing_sha1` keeps for reports whose patient documents lack one."""
        if self.database.objects is not None:
            found = self.database.report_hashes.find({"_id": {"$in": report_ids}})
            return {document["_id"]: document["sha1"] for document in found}
        found = self.database.file_documents.find({"_id": {"$in": [ObjectId(each) for each in report_ids]}},
                                                  {"metadata": 1})
        return {str(file["_id"]): file.get("metadata", {}).get("sha1") for file in found}

    def add_missing_sha1(self) -> None:
        """Reports uploaded before the SHA-1 was kept get it now, read from their bytes,
        and written to their GridFS file document (where each upload also writes it), or
        with an object store to `reportHashes` {_id: report id, sha1}. Nothing else ever
        changes those, so this races no writer, and the patients' own documents, where
        the versions protocol rules, are left alone: a report without its hash there is
        given the kept one when read. Bytes that cannot be read are left without one
        (the FHIR view then has no hash)."""
        if self.database.objects is not None:
            self._add_missing_sha1_of_objects()
            return
        lacking = {"metadata.sha1": {"$exists": False}}
        for file in list(self.database.file_documents.find(lacking, {"_id": 1})):
            try:
                with closing(self.database.files.open_download_stream(file["_id"])) as source:
                    sha1 = base64_sha1(ReportChunks(source))
            except gridfs.errors.GridFSError:
                continue  # no chunks, a chunk missing or the wrong size: the file is damaged
            self.database.file_documents.update_one({"_id": file["_id"], **lacking}, {"$set": {"metadata.sha1": sha1}})


    def _add_missing_sha1_of_objects(self) -> None:
        # NOTE: every patient's report list is read and tested here, not queried for a
        # report without "sha1": FerretDB 1.24 answers neither $elemMatch with $exists
        # nor a dotted path compared with null as MongoDB does (it finds nothing).
        for document in self.database.patients.find({}, {"reports": 1}):
            for report in document["reports"]:
                if "sha1" in report or self.database.report_hashes.find_one({"_id": report["id"]}) is not None:
                    continue
                try:
                    with closing(self.database.objects.open(report["id"])) as chunks:
                        sha1 = base64_sha1(chunks)
                except StoreError:
                    continue
                self.database.report_hashes.update_one({"_id": report["id"]}, {"$set": {"sha1": sha1}}, upsert=True)


class MongoReportWriter(ReportWriter):
    """Writes one GridFS file chunk by chunk, as the GridFS specification lays it out.

    A file is documents in two collections: `reports.chunks` holds {files_id, n, data}
    pieces of CHUNK_SIZE bytes, numbered from 0, and `reports.files` one document with
    the total length, written last. Until that document exists no reader sees the file.

    NOTE: we write the chunks ourselves rather than through pymongo's GridIn because
    GridIn batches up to 32 MB of chunks in memory before inserting them; an upload
    must hold no more than one chunk however large the file is.
    """

    CHUNK_SIZE = 255 * 1024  # the GridFS default: a chunk document stays well under 16 MB

    def __init__(self, database: Database, *, attach, report_id: str | None = None):
        self._database = database
        self._attach = attach  # the store's: adds the report to its patient (a new version)
        self.report_id = report_id or new_id(database.clock)  # given only by a restore (storage/mongo/backup.py)
        self._file_id = ObjectId(self.report_id)
        self._pending = bytearray()
        self._chunk_number = 0
        self._length = 0
        self._file_written = False
        self._committed = False

    def write(self, chunk):
        self._pending += chunk
        self._length += len(chunk)
        while len(self._pending) >= self.CHUNK_SIZE:
            self._insert_chunk(bytes(self._pending[:self.CHUNK_SIZE]))
            del self._pending[:self.CHUNK_SIZE]

    def _insert_chunk(self, data: bytes) -> None:
        with self._database.errors_translated():
            self._database.chunk_documents.insert_one({"files_id": self._file_id, "n": self._chunk_number,
                                                       "data": data})
        self._chunk_number += 1

    def commit(self, patient_id, metadata):
        if self._pending:
            self._insert_chunk(bytes(self._pending))
            self._pending.clear()
        with self._database.errors_translated():
            self._database.file_documents.insert_one({
                "_id": self._file_id, "length": self._length, "chunkSize": self.CHUNK_SIZE,
                "uploadDate": datetime.now(timezone.utc), "filename": self.report_id,
                # GridFS's place for an application's own data: the spec's `metadata` field.
                "metadata": {"sha1": metadata["sha1"]}})
        self._file_written = True
        report = {"id": self.report_id, **metadata, "uploadedAt": self._database.now()}
        try:
            self._attach(patient_id, report)  # if this fails, abort() deletes the file...
        except ClaimedNotApplied:
            self._committed = True  # ...unless a version naming it is claimed: the next write applies it
            raise
        self._committed = True
        return report

    def abort(self):
        if self._committed:
            return
        try:
            with self._database.errors_translated():
                if self._file_written:
                    self._database.file_documents.delete_one({"_id": self._file_id})
                self._database.chunk_documents.delete_many({"files_id": self._file_id})
        except Unavailable:
            pass  # the database is gone too: the start-up sweep will remove the chunks
