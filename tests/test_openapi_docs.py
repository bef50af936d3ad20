"""openapi.json is the contract: it must be well formed, list exactly the routes the server has,
stay inside the schema subset the validator understands, and render to a safe /docs page."""

import base64
import copy
import hashlib
import html
import json
from pathlib import Path

import pytest

import meditrack
from handlers.docs import DOCS_CONTENT_SECURITY_POLICY, Documents, get_docs, get_openapi, render_reference
from settings import Settings
from web.messages import JSON_TYPE
from web.formats import ANNOTATIONS, FORMATS
from web.validation import SchemaValidator

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi.json"

CONTRACT_ROUTES = {
    ("post", "/auth/register"), ("post", "/auth/login"), ("get", "/auth/me"), ("delete", "/auth/me"),
    ("put", "/auth/password"), ("post", "/auth/refresh"), ("post", "/auth/logout"),
    ("get", "/auth/sessions"), ("delete", "/auth/sessions"), ("delete", "/auth/sessions/{sessionId}"),
    ("get", "/patients"), ("post", "/patients"),
    ("get", "/patients/{patientId}"), ("put", "/patients/{patientId}"), ("patch", "/patients/{patientId}"),
    ("delete", "/patients/{patientId}"), ("get", "/patients/{patientId}/versions"),
    ("get", "/patients/{patientId}/versions/{version}"),
    ("get", "/patients/{patientId}/reports"), ("post", "/patients/{patientId}/reports"),
    ("get", "/patients/{patientId}/reports/{reportId}"), ("delete", "/patients/{patientId}/reports/{reportId}"),
    ("get", "/audit"), ("get", "/patients/{patientId}/audit"),
    ("get", "/fhir/metadata"), ("get", "/fhir/Patient"), ("get", "/fhir/Patient/{patientId}"),
    ("get", "/fhir/Patient/{patientId}/_history"), ("get", "/fhir/Patient/{patientId}/_history/{vid}"),
    ("get", "/fhir/Patient/{patientId}/$everything"),
    ("get", "/fhir/DocumentReference"), ("get", "/fhir/DocumentReference/{reportId}"), ("get", "/export"),
    ("get", "/fhir/$export"), ("get", "/fhir/Patient/$export"), ("get", "/fhir/bulk/{jobId}"),
    ("delete", "/fhir/bulk/{jobId}"), ("get", "/fhir/bulk/{jobId}/{fileName}"),
    ("get", "/health"), ("get", "/openapi.json"), ("get", "/docs"),
    ("post", "/patients/{patientId}/reports/{reportId}/link"), ("get", "/patients/{patientId}/reports/{reportId}/link"),
}
PUBLIC_ROUTES = {("post", "/auth/register"), ("post", "/auth/login"), ("post", "/auth/refresh"),
                 ("get", "/health"), ("get", "/openapi.json"), ("get", "/docs"), ("get", "/fhir/metadata"),
                 ("get", "/patients/{patientId}/reports/{reportId}/link")}  # a download link: its token is the proof
ROUTES_WITHOUT_4XX = {("get", "/health"), ("get", "/openapi.json"), ("get", "/docs")}

# The keywords web/validation.py understands, plus the annotations it ignores.
ALLOWED_SCHEMA_KEYWORDS = {
    "type", "required", "properties", "additionalProperties", "enum", "const", "minLength", "maxLength",
    "pattern", "format", "minimum", "maximum", "items", "minItems", "maxItems", "$ref",
    "description", "example", "examples", "title", "default", "readOnly", "contentMediaType",
}
OPERATION_KEYS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))


def operations(spec):
    for path, path_item in spec["paths"].items():
        for method, operation in path_item.items():
            if method in OPERATION_KEYS:
                yield method, path, operation


def all_refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from all_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_refs(value)


def follow_pointer(spec, ref):
    node = spec
    for token in ref.removeprefix("#/").split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def keywords_outside_subset(schema, where):
    """Yield (location, keyword) for every keyword the validator would not understand."""
    for keyword in schema:
        if keyword not in ALLOWED_SCHEMA_KEYWORDS:
            yield where, keyword
    # Only these keywords hold sub-schemas; example/default/enum hold data, not schemas.
    for name, sub_schema in schema.get("properties", {}).items():
        yield from keywords_outside_subset(sub_schema, f"{where}.properties.{name}")
    for keyword in ("items", "additionalProperties"):
        if isinstance(schema.get(keyword), dict):
            yield from keywords_outside_subset(schema[keyword], f"{where}.{keyword}")


def test_document_is_openapi_3_1_json(spec):
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["title"] == "MediTrack"
    assert spec["info"]["version"] == "1.0.0"
    # No servers: a tool uses the URL it loaded the spec from, whatever port the server is on.
    assert "servers" not in spec


def test_document_is_indented_with_two_spaces():
    second_line = SPEC_PATH.read_text(encoding="utf-8").splitlines()[1]
    assert second_line.startswith('  "') and not second_line.startswith('   ')


def test_every_ref_resolves(spec):
    refs = set(all_refs(spec))
    assert refs, "the document should reuse components through $ref"
    for ref in refs:
        assert ref.startswith("#/"), ref
        follow_pointer(spec, ref)  # raises KeyError when the target is missing


def test_schemas_use_only_the_validator_subset(spec):
    offenders = [found for name, schema in spec["components"]["schemas"].items()
                 for found in keywords_outside_subset(schema, name)]
    assert offenders == []


def test_every_schema_example_passes_the_servers_validator(spec):
    validator = SchemaValidator(spec)
    schemas = spec["components"]["schemas"]
    examples = {name: schema["example"] for name, schema in schemas.items() if "example" in schema}
    assert {"Credentials", "PatientInput", "Patient", "Report"} <= examples.keys()
    for name, example in examples.items():
        validator.validate(example, name)  # raises ValidationError or SchemaError on a mismatch


def schemas_in(node):
    """Every object in the document that could be a schema, nested ones included."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from schemas_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from schemas_in(value)


def test_formats_are_the_ones_the_validator_asserts_or_states(spec):
    used = {schema["format"] for schema in schemas_in(spec) if isinstance(schema.get("format"), str)}
    assert used <= set(FORMATS) | ANNOTATIONS and {"date", "date-time", "email", "binary"} <= used


def test_a_binary_body_says_so_both_ways(spec):
    # contentMediaType is JSON Schema's way; generators still read format: binary.
    for schema in schemas_in(spec):
        if "contentMediaType" in schema or schema.get("format") == "binary":
            assert schema.get("format") == "binary" and "contentMediaType" in schema, schema
    downloads = spec["paths"]["/patients/{patientId}/reports/{reportId}"]["get"]["responses"]
    assert all(media["schema"]["format"] == "binary" for status in ("200", "206")
               for media in downloads[status]["content"].values())


TIMESTAMPS = {"createdAt", "updatedAt", "uploadedAt", "lastUsedAt", "recorded", "transactionTime", "lastUpdated"}


def test_every_timestamp_is_a_date_time(spec):
    found = [(name, field.get("format")) for schema in schemas_in(spec["components"]["schemas"])
             for name, field in (schema.get("properties") or {}).items() if name in TIMESTAMPS]
    assert {name for name, _ in found} == TIMESTAMPS
    assert all(format_name == "date-time" for _, format_name in found), found


def test_schema_names_the_server_relies_on_exist(spec):
    assert set(spec["components"]["schemas"]) >= {
        "Credentials", "User", "Token", "Address", "PatientInput", "Patient", "PatientPage",
        "Report", "ReportUpload", "Problem", "Health"}


def test_patient_input_refuses_unknown_fields_and_requires_name_and_birth_date(spec):
    patient_input = spec["components"]["schemas"]["PatientInput"]
    assert patient_input["additionalProperties"] is False
    assert set(patient_input["required"]) == {"firstName", "lastName", "dateOfBirth"}
    assert "id" not in patient_input["properties"] and "reports" not in patient_input["properties"]


def test_paths_and_methods_are_exactly_the_contract(spec):
    assert {(method, path) for method, path, _ in operations(spec)} == CONTRACT_ROUTES


def test_the_spec_lists_exactly_the_routes_the_server_has(spec):
    # The route table needs its services only when a request arrives, so none are given.
    router = meditrack.build_router(Settings(), store=None, accounts=None, records=None, documents=None, trail=None)
    assert {(route.method.lower(), route.template) for route in router.routes} == \
        {(method, path) for method, path, _ in operations(spec)}


def test_every_operation_has_an_id_a_summary_and_a_tag(spec):
    operation_ids = []
    for method, path, operation in operations(spec):
        assert operation.get("summary"), (method, path)
        assert operation.get("tags") and operation["tags"][0] in {"auth", "patients", "reports", "fhir", "audit", "service"}
        operation_ids.append(operation["operationId"])
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"


def test_every_operation_but_the_service_ones_documents_a_4xx(spec):
    for method, path, operation in operations(spec):
        if (method, path) not in ROUTES_WITHOUT_4XX:
            assert any(status.startswith("4") for status in operation["responses"]), (method, path)
    assert "503" in spec["paths"]["/health"]["get"]["responses"]


def test_protected_operations_require_bearer_auth_and_document_401(spec):
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    for method, path, operation in operations(spec):
        if (method, path) in PUBLIC_ROUTES:
            assert "security" not in operation, (method, path)
        else:
            assert operation["security"] == [{"bearerAuth": []}], (method, path)
            assert "401" in operation["responses"], (method, path)


def test_error_responses_are_problem_json_with_examples(spec):
    for name, response in spec["components"]["responses"].items():
        if name.startswith("Fhir"):
            continue  # the next test's
        media = response["content"]["application/problem+json"]
        assert media["schema"] == {"$ref": "#/components/schemas/Problem"}, name
        examples = [media["example"]] if "example" in media else [e["value"] for e in media["examples"].values()]
        for example in examples:
            assert example["type"] == "about:blank", name
    assert "Retry-After" in spec["components"]["responses"]["TooManyRequests"]["headers"]
    assert "WWW-Authenticate" in spec["components"]["responses"]["Unauthorized"]["headers"]


def test_errors_under_fhir_are_operation_outcomes_with_examples(spec):
    fhir_errors = {name: response for name, response in spec["components"]["responses"].items()
                   if name.startswith("Fhir")}
    for name, response in fhir_errors.items():
        media = response["content"]["application/fhir+json"]
        assert media["schema"] == {"$ref": "#/components/schemas/OperationOutcome"}, name
        assert media["example"]["resourceType"] == "OperationOutcome", name
    for method, path, operation in operations(spec):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")) and "$ref" in response:
                assert (response["$ref"].rsplit("/", 1)[1] in fhir_errors) == path.startswith("/fhir/"), (path, status)


def test_reference_page_lists_every_path_and_summary(spec):
    page = render_reference(spec)
    assert page.startswith("<!DOCTYPE html>")
    for method, path, operation in operations(spec):
        # The page escapes every text it takes from the spec, apostrophes included.
        assert html.escape(path) in page
        assert html.escape(operation["summary"]) in page
    assert page.lower().count("<script") == 1, "one script, ours: the Try-it panels'"


def test_reference_page_escapes_markup_from_the_spec(spec):
    hostile = copy.deepcopy(spec)
    hostile["paths"]["/patients"]["get"]["summary"] = "<script>alert(1)</script>"
    page = render_reference(hostile)
    assert page.count("<script>") == 1  # ours, at the end; the summary's is text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_reference_page_shows_request_field_rules(spec):
    page = render_reference(spec)
    assert "<code>dateOfBirth</code> (required)" in page
    assert "1–100 characters" in page
    assert "at most 50 items" in page


def test_documents_load_keeps_the_files_exact_bytes_and_renders_the_page_once():
    documents = Documents.load(SPEC_PATH)
    assert documents.openapi_json == SPEC_PATH.read_bytes()
    assert documents.spec == json.loads(documents.openapi_json)
    assert documents.reference_html == render_reference(documents.spec).encode("utf-8")


def test_get_openapi_serves_the_document_as_json():
    document = SPEC_PATH.read_bytes()
    response = get_openapi(Documents({}, document, b""), request=None)
    assert response.status == 200
    assert ("Content-Type", JSON_TYPE) in response.headers
    assert response.body == document


def test_get_docs_serves_html_under_a_strict_content_security_policy():
    page = b"<!DOCTYPE html><title>x</title>"
    response = get_docs(Documents({}, b"", page), request=None)
    assert response.status == 200
    assert ("Content-Type", "text/html; charset=utf-8") in response.headers
    policy = dict(response.headers)["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'; style-src 'unsafe-inline'; ")
    assert "connect-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1]
    assert response.body == page


def test_the_pages_one_script_is_the_one_its_policy_names_by_hash(spec):
    # CSP Level 3 §8.4: an inline script runs only if its text hashes to a listed source.
    page = render_reference(spec)
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in DOCS_CONTENT_SECURITY_POLICY
