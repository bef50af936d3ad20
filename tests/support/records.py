"""Sample records: the minimal patient, and a report written through the Store interface.

`PATIENT` is the smallest valid PatientInput (openapi.json): the same dict is posted to
the API and handed to a store. `write_report` stores a report the way the upload
handler does (bytes through a `ReportWriter`, then `commit`), for tests that talk to a
store directly.
"""

import hashlib

from storage.base import base64_sha1

PATIENT = {"firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1815-12-10"}

REPORT_METADATA = {"filename": "scan.pdf", "contentType": "application/pdf", "size": 11,
                   "sha256": "0" * 64, "sha1": "A" * 27 + "=", "description": "a scan"}


def write_report(store, patient_id, data=b"%PDF-1.7 hi", **metadata):
    """Write `data` in two pieces and commit it to the patient, with its real size and
    hashes; the stored report."""
    with store.report_writer() as writer:
        writer.write(data[:4])
        writer.write(data[4:])
        return writer.commit(patient_id, {**REPORT_METADATA, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                          "sha1": base64_sha1([data]), **metadata})
