"""Medical report files: upload (multipart/form-data), list, download, delete.

An upload streams: the multipart parser (`web/multipart.py`) hands the file part over
in chunks, each chunk is hashed, counted and written to the store as it arrives, and
nothing holds the whole file. The file's type is decided by its first bytes, never by
the client's Content-Type label or the filename's extension.
"""

import hashlib
import unicodedata
from urllib.parse import quote

from handlers.inputs import content_type, path_id
from handlers.patients import PatientRecords, public_report
from storage.base import base64_digest
from storage.errors import NotFound
from web.conditional import NOT_MODIFIED, evaluate_preconditions, quoted, requested_range
from web.messages import Request, Response, json_response
from web.multipart import PartData, PartEnd, PartStart, boundary_from_content_type, iter_parts
from web.problems import BadRequest, UnsupportedMediaType
from web.validation import ValidationError

# The file signatures ("magic numbers") we accept, from each format's specification.
SIGNATURES = (
    (b"%PDF-", "application/pdf"),                  # ISO 32000-1 §7.5.2: the header line
    (b"\x89PNG\r\n\x1a\n", "image/png"),            # PNG (RFC 2083 §3.1): the 8-byte signature
    (b"\xff\xd8\xff", "image/jpeg"),                # JPEG: SOI marker, then the next marker's 0xFF
)
SNIFF_BYTES = max(len(signature) for signature, _ in SIGNATURES)
MAX_DESCRIPTION = 500
MAX_FILENAME = 255
MAX_PARTS = 4  # an upload holds two parts; past four the parser stops before any more is read
# A multipart body is the file plus part headers, boundaries and a short description.
MULTIPART_OVERHEAD = 64 * 1024


def sniff_content_type(head: bytes) -> str | None:
    for signature, sniffed_type in SIGNATURES:
        if head.startswith(signature):
            return sniffed_type
    return None


def clean_filename(filename: str) -> str:
    """The client's filename as safe metadata: no directories, control characters or quotes.

    It is only ever shown back (in Content-Disposition); the bytes are stored under a
    generated id, so no filename can reach a filesystem path.
    """
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C" and c not in "\"'")
    name = name.strip(" .")[:MAX_FILENAME]
    return name or "report"


def content_disposition(filename: str) -> str:
    """RFC 6266 §4.3: an ASCII `filename` for old clients, and `filename*` (RFC 8187,
    UTF-8, percent-encoded) that carries the real name and wins where understood."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in "\\%" else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class IncomingFile:
    """The file part as it streams: its size, SHA-256 and sniffed type, written on."""

    def __init__(self, writer, filename: str):
        self.writer, self.filename = writer, clean_filename(filename)
        self.size, self.sha256, self.sha1, self.head = 0, hashlib.sha256(), hashlib.sha1(), b""
        self.content_type = None

    def write(self, data: bytes) -> None:
        if len(self.head) < SNIFF_BYTES:
            self.head += data[:SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES:
                self.check_type()  # refuse a wrong type early, before the rest arrives
        self.size += len(data)
        self.sha256.update(data)
        self.sha1.update(data)  # for FHIR's Attachment.hash (handlers/fhir_mapping.py)
        self.writer.write(data)

    def check_type(self) -> None:
        self.content_type = sniff_content_type(self.head)
        if self.content_type is None:
            raise UnsupportedMediaType("the file is not a PDF, PNG or JPEG")


def read_upload(request: Request, writer, max_file_bytes: int) -> tuple[IncomingFile, str | None]:
    """Stream the multipart body into `writer`; return the file and the description."""
    if content_type(request)[0] != "multipart/form-data":
        raise UnsupportedMediaType("uploads must be multipart/form-data")
    boundary = boundary_from_content_type(request.headers.get("Content-Type"))
    file, description, current = None, None, None
    # The parser's field limit (64 KiB) only bounds memory; the 500-character rule
    # for the description is checked after decoding, as a field error (400).
    for event in iter_parts(request.body, boundary, max_parts=MAX_PARTS,
                            max_file_bytes=max_file_bytes):
        if isinstance(event, PartStart):
            current = event.name
            if event.name == "file":
                if file is not None:
                    raise BadRequest("the part named 'file' may be sent only once")
                if event.filename is None:
                    # RFC 7578 §4.2: a file's part carries its name in the filename parameter.
                    raise BadRequest("the part named 'file' needs a filename in its Content-Disposition")
                file = IncomingFile(writer, event.filename)
            elif event.name == "description":
                if description is not None or event.filename is not None:
                    raise BadRequest("the part named 'description' is text, sent at most once")
                description = b""
            else:
                raise BadRequest("only the parts 'file' and 'description' are accepted")
        elif isinstance(event, PartData):
            if current == "file":
                file.write(event.data)
            else:
                description += event.data
        elif isinstance(event, PartEnd):
            current = None
    if file is None:
        raise BadRequest("a file part named 'file' is required")
    if file.size == 0:
        raise BadRequest("the file is empty")
    if file.content_type is None:  # shorter than SNIFF_BYTES: decide on what there is
        file.check_type()
    return file, None if description is None else checked_description(description)


def checked_description(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError([("description", "must be UTF-8 text")]) from None
    if len(text) > MAX_DESCRIPTION or "\x00" in text:
        raise ValidationError([("description", f"must be at most {MAX_DESCRIPTION} characters, without NUL")])
    return text


def upload_report(records: PatientRecords, max_file_bytes: int, request: Request) -> Response:
    patient = records.owned_patient(request)
    # Leaving this block without commit() — any error above — discards the bytes.
    with records.store.report_writer() as writer:
        file, description = read_upload(request, writer, max_file_bytes)
        report = writer.commit(patient["id"], {
            "filename": file.filename, "contentType": file.content_type, "size": file.size,
            "sha256": file.sha256.hexdigest(), "sha1": base64_digest(file.sha1),
            "description": description})
    request.facts["resourceId"] = report["id"]  # for the audit event
    location = f"/patients/{patient['id']}/reports/{report['id']}"
    return json_response(public_report(report), 201, [("Location", location)])


def list_reports(records: PatientRecords, request: Request) -> Response:
    return json_response([public_report(report) for report in records.owned_patient(request)["reports"]])


def report_of(patient: dict, report_id: str) -> dict | None:
    """The patient's report with this id, or None."""
    return next((report for report in patient["reports"] if report["id"] == report_id), None)


def download_report(records: PatientRecords, request: Request) -> Response:
    """The report's bytes; its entity tag is their SHA-256, so If-None-Match answers 304
    when the client has them, and Range asks for part of them (RFC 9110 §13, §14)."""
    patient = records.owned_patient(request)
    report_id = path_id(request, "reportId")
    report = report_of(patient, report_id)
    if report is None:
        raise NotFound("this patient has no report with this id")
    etag_header = ("ETag", quoted(report["sha256"]))
    if evaluate_preconditions(request.headers, request.method, report["sha256"]) == NOT_MODIFIED:
        return Response(304, headers=[etag_header])
    # The server adds nosniff and no-store to every response: the browser must not
    # re-guess the type, and patient data stays out of caches. Accept-Ranges (§14.3)
    # tells the client it may ask for part of the file.
    headers = [("Content-Type", report["contentType"]),
               ("Content-Disposition", content_disposition(report["filename"])),
               etag_header, ("Accept-Ranges", "bytes")]
    # RFC 9110 §14.2: Range is defined for GET only; a HEAD gets the whole file's headers.
    wanted = requested_range(request.headers, report["size"], report["sha256"]) if request.method == "GET" else None
    if wanted is None:
        _, chunks = records.store.open_report(patient["id"], report_id)
        return Response(200, chunks, headers, content_length=report["size"])
    _, chunks = records.store.open_report(patient["id"], report_id, start=wanted.start, length=wanted.length)
    headers.append(("Content-Range", wanted.content_range(report["size"])))
    return Response(206, chunks, headers, content_length=wanted.length)


def delete_report(records: PatientRecords, request: Request) -> Response:
    patient = records.owned_patient(request)
    records.store.delete_report(patient["id"], path_id(request, "reportId"))
    return Response(204)
