"""GET /fhir/metadata: the CapabilityStatement, where every FHIR client starts.

A client reads it to learn what this server can do before it asks anything else
(FHIR R4 capabilitystatement.html; SMART's fhirclient refuses to go on without it).
It lists exactly what is built, from the same tables the handlers use: the search
parameters from handlers/fhir_search.py, so the statement cannot promise one the
search would refuse. It needs no token: it holds nothing of anyone's.
"""

from handlers.fhir_mapping import narrative
from handlers.fhir_search import PATIENT_PARAMETERS, SORT_KEYS

STATEMENT_DATE = "2026-12-07"  # when what this statement lists last changed
SOFTWARE_VERSION = "1.0.0"     # openapi.json's info.version (a test holds them equal)

# FHIR Bulk Data Access 2.0's operations, asynchronous (handlers/bulk_export.py).
EXPORT = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
PATIENT_EXPORT = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
SECURITY = ("Every resource is read with a bearer token: POST /auth/login answers an access token (a JWT "
            "that lives 15 minutes by default) and a refresh token; send the access token as "
            "'Authorization: Bearer' and the token. A user sees only the patients they created: another "
            "user's patient is 403, one that does not exist 404. Only this statement needs no token.")
DELETED = ("A deleted patient is gone with its whole history: its read, vread and history answer 404, "
           "as FHIR allows a server that keeps no deleted records.")


def capability_statement(base: str) -> dict:
    fhir = f"{base}/fhir"
    return {
        "resourceType": "CapabilityStatement",
        "text": narrative("MediTrack serves Patient (read, vread, search, history, $everything) and "
                          "DocumentReference (read, search) as FHIR R4 JSON, with bearer tokens, and "
                          "exports them in bulk ($export, asynchronous)."),
        "status": "active",                                      # CapabilityStatement.status
        "date": STATEMENT_DATE,                                  # .date
        "publisher": "MediTrack",
        "kind": "instance",                                      # .kind: this server, not a design
        "instantiates": [BULK_DATA],                             # .instantiates: Bulk Data's server role
        "software": {"name": "MediTrack", "version": SOFTWARE_VERSION},
        "implementation": {"description": "MediTrack: patient records as FHIR R4", "url": fhir},
        "fhirVersion": "4.0.1",                                  # .fhirVersion: R4
        "format": ["json"],                                      # .format: JSON only, no XML
        "rest": [{
            "mode": "server",                                    # .rest.mode
            "documentation": DELETED,
            "security": {"description": SECURITY},  # .rest.security
            "resource": [patient_capability(), document_reference_capability()],
            "operation": [{"name": "export", "definition": EXPORT}],  # .rest.operation: system-wide
        }],
    }


def patient_capability() -> dict:
    return {
        "type": "Patient",
        "interaction": [{"code": code} for code in ("read", "vread", "search-type", "history-instance")],
        "versioning": "versioned",                               # meta.versionId is kept and readable
        "readHistory": True,                                     # vread of past versions works
        "conditionalRead": "not-match",                          # If-None-Match → 304
        "searchParam": [{"name": name, "type": kind, "documentation": what}
                        for name, (kind, what) in PATIENT_PARAMETERS.items()],
        "operation": [
            {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
            {"name": "export", "definition": PATIENT_EXPORT},
        ],
        "documentation": f"_sort by {', '.join(SORT_KEYS)} ('-' for descending); _count (at most 100), "
                         "_total, _summary=count, _format (JSON only), _pretty. An unsupported parameter "
                         "is 400 unless the request says 'Prefer: handling=lenient'.",
    }


def document_reference_capability() -> dict:
    return {
        "type": "DocumentReference",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [
            {"name": "patient", "type": "reference", "documentation": "the patient the report belongs to"},
            {"name": "subject", "type": "reference", "documentation": "the same, as Patient/ and the id"},
        ],
        "documentation": "A search names its patient (patient or subject); _count pages it.",
    }
