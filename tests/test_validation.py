"""Tests for web/validation.py: the JSON Schema 2020-12 subset that checks request bodies.

Every test brings its own small schemas and documents; none reads openapi.json.
"""

import re

import pytest

from web import validation
from web.validation import SchemaError, SchemaValidator, ValidationError

DOCUMENT = {
    "paths": {
        "/patients": {"post": {"requestBody": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Patient"},
        }}}}},
    },
    "components": {"schemas": {
        "Address": {
            "type": "object",
            "required": ["city"],
            "properties": {"city": {"type": "string", "maxLength": 5}},
            "additionalProperties": False,
        },
        "Patient": {
            "type": "object",
            "required": ["firstName", "dateOfBirth"],
            "properties": {
                "firstName": {"type": "string", "minLength": 1, "maxLength": 100},
                "dateOfBirth": {"type": "string", "format": "date"},
                "gender": {"enum": ["male", "female", "other", "unknown"]},
                "email": {"type": "string", "format": "email"},
                "address": {"$ref": "#/components/schemas/Address"},
                "allergies": {"type": "array", "maxItems": 3, "items": {"type": "string", "minLength": 1}},
            },
            "additionalProperties": False,
        },
        "Cohort": {"type": "array", "items": {"$ref": "#/components/schemas/Patient"}},
        "Tag": {"type": "string", "minLength": 2},
        "Tagged": {"$ref": "#/components/schemas/Tag"},
        "TaggedTwice": {"$ref": "#/components/schemas/Tagged"},
        "til~de": {"type": "boolean"},
        "odd~1name": {"type": "integer"},
        "with space": {"type": "null"},
    }},
}

VALID_PATIENT = {"firstName": "Ada", "dateOfBirth": "1815-12-10"}


def email_of_length(total: int) -> str:
    """A well-formed address of `total` characters: four labels, the last one padded."""
    address = "u@" + "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * (total - 194)
    assert len(address) == total
    return address


def errors_for(instance, schema, document=DOCUMENT) -> list[tuple[str, str]]:
    return list(SchemaValidator(document).iter_errors(instance, schema))


# --- type ---

@pytest.mark.parametrize("type_name, instance", [
    ("string", ""), ("string", "text"),
    ("integer", 0), ("integer", -7), ("integer", 10**40),
    ("number", 1.5), ("number", -3),
    ("boolean", True), ("boolean", False),
    ("object", {}), ("array", []), ("null", None),
])
def test_type_accepts_its_own_kind_of_value(type_name, instance):
    assert errors_for(instance, {"type": type_name}) == []


@pytest.mark.parametrize("type_name, instance, message", [
    ("string", 1, "must be a string"),
    ("string", None, "must be a string"),
    ("integer", "1", "must be an integer"),
    ("integer", 1.5, "must be an integer"),
    ("number", "1.5", "must be a number"),
    ("boolean", 0, "must be a boolean"),
    ("boolean", "true", "must be a boolean"),
    ("object", [], "must be an object"),
    ("array", {}, "must be an array"),
    ("array", "abc", "must be an array"),
    ("null", 0, "must be null"),
    ("null", "", "must be null"),
])
def test_type_rejects_other_kinds_of_value(type_name, instance, message):
    assert errors_for(instance, {"type": type_name}) == [("body", message)]


@pytest.mark.parametrize("type_name, message", [
    ("integer", "must be an integer"),
    ("number", "must be a number"),
])
def test_true_is_not_an_integer_nor_a_number(type_name, message):
    assert errors_for(True, {"type": type_name}) == [("body", message)]


def test_false_is_not_an_integer():
    assert errors_for(False, {"type": "integer"}) == [("body", "must be an integer")]


def test_integer_is_accepted_as_a_number():
    assert errors_for(42, {"type": "number"}) == []


def test_float_with_zero_fraction_is_an_integer():
    # JSON Schema 2020-12 validation §6.1.1: "any number with a zero fractional part".
    assert errors_for(1.0, {"type": "integer"}) == []


@pytest.mark.parametrize("instance", ["x", None])
def test_type_list_accepts_any_listed_type(instance):
    assert errors_for(instance, {"type": ["string", "null"]}) == []


@pytest.mark.parametrize("type_list, message", [
    (["string", "null"], "must be a string or null"),
    (["string", "integer", "null"], "must be a string, an integer or null"),
])
def test_type_list_message_names_every_type(type_list, message):
    assert errors_for(True, {"type": type_list}) == [("body", message)]


def test_failed_type_skips_the_other_keywords_of_that_schema():
    schema = {"type": "string", "minLength": 3, "enum": ["abc"], "format": "date"}
    assert errors_for(12, schema) == [("body", "must be a string")]


@pytest.mark.parametrize("schema, instance", [
    ({"minLength": 3, "maxLength": 0, "pattern": "^x$", "format": "email"}, 12),
    ({"minimum": 5, "maximum": 0}, "text"),
    ({"minimum": 5}, True),
    ({"minItems": 2, "maxItems": 0, "items": {"type": "string"}}, {"a": 1}),
    ({"required": ["a"], "properties": {"a": {"type": "string"}}, "additionalProperties": False}, [1, 2]),
])
def test_keywords_for_other_types_are_skipped(schema, instance):
    assert errors_for(instance, schema) == []


@pytest.mark.parametrize("type_value", ["text", "float", ["string", "int"], [], 3])
def test_unknown_type_name_is_a_schema_error(type_value):
    with pytest.raises(SchemaError):
        errors_for("x", {"type": type_value})


# --- objects: required, properties, additionalProperties ---

def test_missing_required_property_is_reported_at_its_own_path():
    schema = {"required": ["firstName"], "properties": {"address": {"required": ["city"]}}}
    assert errors_for({"address": {}}, schema) == [
        ("firstName", "is required"),
        ("address.city", "is required"),
    ]


def test_required_property_present_as_null_counts_as_present():
    assert errors_for({"a": None}, {"required": ["a"]}) == []


def test_nested_properties_report_dotted_paths():
    schema = {"properties": {"a": {"properties": {"b": {"properties": {"c": {"type": "string"}}}}}}}
    assert errors_for({"a": {"b": {"c": 1}}}, schema) == [("a.b.c", "must be a string")]


def test_additional_properties_false_reports_each_unknown_field_in_body_order():
    schema = {"properties": {"known": {}}, "additionalProperties": False}
    instance = {"zeta": 1, "known": 2, "alpha": 3}
    assert errors_for(instance, schema) == [("zeta", "unknown field"), ("alpha", "unknown field")]


def test_additional_properties_schema_applies_only_to_undeclared_properties():
    schema = {"properties": {"name": {"type": "string"}}, "additionalProperties": {"type": "integer"}}
    assert errors_for({"name": "x", "age": 3}, schema) == []
    assert errors_for({"name": "x", "age": "3"}, schema) == [("age", "must be an integer")]


def test_additional_properties_true_allows_any_extra_field():
    assert errors_for({"extra": [1]}, {"properties": {}, "additionalProperties": True}) == []


# --- enum and const ---

def test_enum_accepts_a_listed_value():
    assert errors_for("female", {"enum": ["male", "female", "other", "unknown"]}) == []


def test_enum_rejection_lists_the_allowed_values():
    assert errors_for("f", {"enum": ["male", "female", "other", "unknown"]}) == [
        ("body", "must be one of: male, female, other, unknown")
    ]


def test_enum_message_writes_non_string_values_as_json():
    assert errors_for("x", {"enum": [1, True, None]}) == [("body", "must be one of: 1, true, null")]


def test_const_rejection_names_the_expected_value():
    assert errors_for("Basic", {"const": "Bearer"}) == [("body", "must be Bearer")]


@pytest.mark.parametrize("instance, allowed, matches", [
    (True, 1, False),
    (1, True, False),
    (False, 0, False),
    (0, False, False),
    ([True], [1], False),
    ({"a": 1}, {"a": True}, False),
    ("1", 1, False),
    (None, False, False),
    (1.0, 1, True),  # JSON Schema 2020-12 core §4.2.2: numbers equal when mathematically equal
    (True, True, True),
    ([1, {"b": None}], [1, {"b": None}], True),
])
@pytest.mark.parametrize("keyword", ["enum", "const"])
def test_enum_and_const_compare_json_types_not_python_equality(keyword, instance, allowed, matches):
    schema = {"enum": [allowed]} if keyword == "enum" else {"const": allowed}
    assert (errors_for(instance, schema) == []) is matches


# --- strings: minLength, maxLength, pattern ---

@pytest.mark.parametrize("schema, instance, message", [
    ({"minLength": 1}, "a", None),
    ({"minLength": 1}, "", "must be at least 1 character long"),
    ({"minLength": 2}, "a", "must be at least 2 characters long"),
    ({"maxLength": 3}, "abc", None),
    ({"maxLength": 3}, "abcd", "must be at most 3 characters long"),
    ({"maxLength": 1}, "ab", "must be at most 1 character long"),
    ({"maxLength": 3}, "😀😀😀", None),  # three code points, though six UTF-16 units
    ({"maxLength": 1}, "é", None),  # one precomposed code point, two UTF-8 bytes
    ({"minLength": 2}, "😀", "must be at least 2 characters long"),
])
def test_string_length_counts_code_points(schema, instance, message):
    assert errors_for(instance, schema) == ([] if message is None else [("body", message)])


@pytest.mark.parametrize("pattern, instance, matches", [
    ("[0-9]", "abc1def", True),  # not anchored: a search, not a match
    ("^[0-9]+$", "123", True),
    ("^[0-9]+$", "12a3", False),
    ("^[0-9]+$", "123\n", False),  # ECMA-262 $ is the very end, unlike Python's $
    (r"^\d+$", "٣٤", False),  # ECMA-262 \d is ASCII only
    (r"^\w+$", "é", False),
    ("^[$]$", "$", True),  # a $ inside a class is a literal dollar
    (r"^\$$", "$", True),  # so is an escaped one
    (r"^\\$", "\\", True),  # an escaped backslash does not escape the anchor after it
])
def test_pattern_follows_ecma262_semantics(pattern, instance, matches):
    expected = [] if matches else [("body", "does not match the required pattern")]
    assert errors_for(instance, {"pattern": pattern}) == expected


def test_each_pattern_is_compiled_once(monkeypatch):
    pattern = "^compiled-once-[a-z]+$"
    compiled_patterns = []
    real_compile = re.compile

    def counting_compile(source, flags=0):
        compiled_patterns.append(source)
        return real_compile(source, flags)

    monkeypatch.setattr(validation.re, "compile", counting_compile)
    validator = SchemaValidator(DOCUMENT)
    for instance in ["compiled-once-a", "compiled-once-b", "other"]:
        list(validator.iter_errors(instance, {"pattern": pattern}))
    assert compiled_patterns == [r"^compiled-once-[a-z]+\Z"]


def test_invalid_pattern_is_a_schema_error():
    with pytest.raises(SchemaError):
        errors_for("x", {"pattern": "([a-z]"})


# --- formats ---

@pytest.mark.parametrize("text", [
    "2023-01-01", "2024-02-29", "2000-02-29", "1900-02-28", "0001-01-01", "9999-12-31", "2023-12-31",
])
def test_real_calendar_dates_are_valid(text):
    assert errors_for(text, {"type": "string", "format": "date"}) == []


@pytest.mark.parametrize("text", [
    "2023-02-29",  # 2023 is not a leap year
    "1900-02-29",  # divisible by 100 and not by 400: not a leap year
    "2023-13-01",
    "2023-00-10",
    "2023-04-31",
    "2023-01-00",
    "0000-01-01",
    "2023-1-01",
    "2023-01-1",
    "23-01-01",
    "２０２３-01-01",  # full-width digits
    "٢٠٢٣-01-01",  # Arabic-Indic digits
    "2023-01-01\n",
    " 2023-01-01",
    "2023/01/01",
    "2023-01-01T00:00:00Z",
    "",
])
def test_malformed_or_impossible_dates_are_rejected(text):
    assert errors_for(text, {"format": "date"}) == [("body", "must be a valid date (YYYY-MM-DD)")]


@pytest.mark.parametrize("text", [
    "ada@example.com",
    "a.b+tag@mail.example.co.uk",
    "x@a-b.io",
    "!#$%&'*+/=?^_`{|}~-@example.org",
    "a" * 64 + "@example.com",
    "user@" + ".".join(["a" * 63] * 3) + ".com",
    email_of_length(254),
])
def test_plausible_email_addresses_are_valid(text):
    assert errors_for(text, {"format": "email"}) == []


@pytest.mark.parametrize("text", [
    "",
    "ada",
    "ada@",
    "@example.com",
    "ada@example",  # no dot in the domain
    "ada@@example.com",
    "ada@bob@example.com",
    "ada lovelace@example.com",
    "ada@exa mple.com",
    "a" * 65 + "@example.com",
    "ada@-example.com",
    "ada@example-.com",
    "ada@example..com",
    "ada@.example.com",
    "ada@example.com.",
    "ada@exa_mple.com",
    "ada@" + "a" * 64 + ".com",
    "ädä@example.com",
    "ada@exämple.com",
    "ada@example.com\n",
    email_of_length(255),
])
def test_malformed_email_addresses_are_rejected(text):
    assert errors_for(text, {"format": "email"}) == [("body", "must be a valid email address")]


@pytest.mark.parametrize("text", [
    "2026-11-24T10:15:30Z", "2026-11-24T10:15:30.123Z", "2026-11-24T10:15:30.123456789+05:30",
    "2026-11-24t10:15:30z",                       # RFC 3339 §5.6 NOTE: T and Z may be lower case
    "1998-12-31T23:59:60Z",                       # a leap second, at 23:59 UTC (§5.7)
    "1998-12-31T15:59:60.123-08:00",              # the same leap second, eight hours west
    "2024-02-29T00:00:00-23:59", "0001-01-01T00:00:00Z",
])
def test_rfc_3339_date_times_are_valid(text):
    assert errors_for(text, {"type": "string", "format": "date-time"}) == []


@pytest.mark.parametrize("text", [
    "2026-11-24T10:15:30",           # no offset
    "2026-11-24 10:15:30Z",          # a space where T belongs (RFC 3339 allows it only in prose)
    "2026-11-24T10:15Z",             # no seconds
    "2023-02-29T10:15:30Z",          # no such day
    "2026-11-24T24:00:00Z", "2026-11-24T10:60:00Z", "2026-11-24T10:15:61Z",
    "1998-12-31T22:59:60Z",          # a leap second that is not at 23:59 UTC
    "2026-11-24T10:15:30+24:00", "2026-11-24T10:15:30+05:60", "2026-11-24T10:15:30+0530",
    "2026-11-24T10:15:30.Z",         # a decimal point with no digits
    "２026-11-24T10:15:30Z",          # a full-width digit
    "2026-11-24T10:15:30Z\n", "",
])
def test_malformed_or_impossible_date_times_are_rejected(text):
    assert errors_for(text, {"format": "date-time"}) == [
        ("body", "must be a valid date-time (RFC 3339, e.g. 2026-11-24T10:15:30Z)")]


@pytest.mark.parametrize("instance", ["", "%PDF-", "\x00\xff", 5])
def test_binary_is_an_annotation_no_instance_fails(instance):
    # OpenAPI's generators read `format: binary` to type a body as bytes; it asserts nothing.
    assert errors_for(instance, {"format": "binary"}) == []


@pytest.mark.parametrize("instance", ["2023-01-01", 5])
def test_unknown_format_is_a_schema_error_whatever_the_instance(instance):
    with pytest.raises(SchemaError):
        errors_for(instance, {"format": "datetime"})


# --- numbers: minimum, maximum ---

@pytest.mark.parametrize("schema, instance, message", [
    ({"minimum": 0}, 0, None),
    ({"minimum": 0}, -1, "must be at least 0"),
    ({"minimum": 0.5}, 0.25, "must be at least 0.5"),
    ({"maximum": 100}, 100, None),
    ({"maximum": 100}, 100.5, "must be at most 100"),
    ({"minimum": 1, "maximum": 1}, 1.0, None),
])
def test_minimum_and_maximum_are_inclusive_bounds(schema, instance, message):
    assert errors_for(instance, schema) == ([] if message is None else [("body", message)])


# --- arrays: items, minItems, maxItems ---

def test_item_errors_carry_the_index_in_the_path():
    schema = {"properties": {"allergies": {"items": {"type": "string", "minLength": 1}}}}
    assert errors_for({"allergies": ["pollen", "nuts", 3, ""]}, schema) == [
        ("allergies[2]", "must be a string"),
        ("allergies[3]", "must be at least 1 character long"),
    ]


def test_paths_mix_indices_and_properties():
    cohort = [VALID_PATIENT, {**VALID_PATIENT, "address": {"city": 7}}]
    assert errors_for(cohort, {"$ref": "#/components/schemas/Cohort"}) == [
        ("body[1].address.city", "must be a string")
    ]


@pytest.mark.parametrize("schema, instance, message", [
    ({"minItems": 1}, ["a"], None),
    ({"minItems": 1}, [], "must have at least 1 item"),
    ({"minItems": 2}, [1], "must have at least 2 items"),
    ({"maxItems": 50}, list(range(50)), None),
    ({"maxItems": 50}, list(range(51)), "must have at most 50 items"),
])
def test_min_and_max_items_count_elements(schema, instance, message):
    assert errors_for(instance, schema) == ([] if message is None else [("body", message)])


# --- $ref ---

def test_ref_by_schema_name_validates_nested_refs():
    validator = SchemaValidator(DOCUMENT)
    validator.validate({**VALID_PATIENT, "address": {"city": "Paris"}}, "Patient")
    with pytest.raises(ValidationError) as raised:
        validator.validate({**VALID_PATIENT, "address": {"city": "London"}}, "Patient")
    assert raised.value.errors == [("address.city", "must be at most 5 characters long")]


def test_chain_of_refs_is_followed():
    assert errors_for("a", {"$ref": "#/components/schemas/TaggedTwice"}) == [
        ("body", "must be at least 2 characters long")
    ]


@pytest.mark.parametrize("ref, valid, invalid", [
    ("#/paths/~1patients/post/requestBody/content/application~1json/schema", VALID_PATIENT, {}),
    ("#/components/schemas/til~0de", True, 1),
    ("#/components/schemas/odd~01name", 7, "7"),  # RFC 6901 §4: "~01" is "~1", never "/"
    ("#/components/schemas/with%20space", None, ""),  # RFC 6901 §6: percent-encoded fragment
])
def test_ref_pointer_escapes_are_decoded(ref, valid, invalid):
    assert errors_for(valid, {"$ref": ref}) == []
    assert errors_for(invalid, {"$ref": ref}) != []


def test_ref_siblings_apply_alongside_the_referenced_schema():
    schema = {"$ref": "#/components/schemas/Tag", "maxLength": 3, "description": "a short tag"}
    assert errors_for("ab", schema) == []
    assert errors_for("a", schema) == [("body", "must be at least 2 characters long")]
    assert errors_for("abcd", schema) == [("body", "must be at most 3 characters long")]


@pytest.mark.parametrize("ref", [
    "#/components/schemas/Missing",
    "#/components/schemas/Patient/properties/nope",
    "#/components/schemas/Patient/required",  # resolves, but to a list, not a schema
    "#/components/schemas/Address/additionalProperties",  # resolves to false
    "https://example.com/schemas/Patient",
    "Patient",
    "#components/schemas/Patient",
])
def test_unresolvable_ref_is_a_schema_error(ref):
    with pytest.raises(SchemaError):
        errors_for({}, {"$ref": ref})


def test_unknown_schema_name_is_a_schema_error():
    with pytest.raises(SchemaError):
        SchemaValidator(DOCUMENT).validate({}, "Missing")


def test_follow_pointer_resolves_any_local_object_not_only_schemas():
    request_body = DOCUMENT["paths"]["/patients"]["post"]["requestBody"]
    assert validation.follow_pointer(DOCUMENT, "#/paths/~1patients/post/requestBody") is request_body
    assert validation.follow_pointer(DOCUMENT, "#/components/schemas/with%20space") == {"type": "null"}
    with pytest.raises(SchemaError):
        validation.follow_pointer(DOCUMENT, "#/paths/~1patients/get")


# --- the document is checked once, when the validator is built ---

def with_schemas(schemas: dict, paths: dict | None = None) -> dict:
    return {"paths": paths or {}, "components": {"schemas": {"Good": {"type": "string"}, **schemas}}}


@pytest.mark.parametrize("schemas", [
    {"Broken": {"type": "string", "maxLenght": 5}},
    {"Broken": {"properties": {"a": {"type": ["string", "null"], "nullable": True}}}},
    {"Broken": {"items": {"items": {"uniqueItems": True}}}},
    {"Broken": {"additionalProperties": {"type": "integer", "exclusiveMinimum": 0}}},
    {"Broken": {"properties": {"a": "string"}}},  # a sub-schema that is not an object
])
def test_an_unknown_keyword_in_the_document_stops_construction(schemas):
    with pytest.raises(SchemaError):
        SchemaValidator(with_schemas(schemas))


@pytest.mark.parametrize("broken", [
    {"type": "float"},
    {"type": "string", "format": "datetime"},
    {"type": "string", "pattern": "([a-z]"},
])
def test_an_unknown_type_or_format_or_a_bad_pattern_in_the_document_stops_construction(broken):
    with pytest.raises(SchemaError):
        SchemaValidator(with_schemas({"Broken": {"properties": {"field": broken}}}))


@pytest.mark.parametrize("ref", [
    "#/components/schemas/Nowhere",
    "#/components/schemas/Good/properties",
    "https://example.com/schemas/Good",
])
def test_an_unresolvable_ref_in_the_document_stops_construction(ref):
    with pytest.raises(SchemaError):
        SchemaValidator(with_schemas({"Broken": {"items": {"$ref": ref}}}))


def test_a_bad_schema_behind_a_ref_outside_components_stops_construction():
    paths = {"/tags": {"post": {"requestBody": {"content": {"application/json": {
        "schema": {"type": "string", "format": "tag"},
    }}}}}}
    ref = "#/paths/~1tags/post/requestBody/content/application~1json/schema"
    with pytest.raises(SchemaError):
        SchemaValidator(with_schemas({"Tagged": {"$ref": ref}}, paths))


def test_a_recursive_schema_is_checked_without_looping_and_validates_every_level():
    document = with_schemas({"Node": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "children": {"items": {"$ref": "#/components/schemas/Node"}}},
    }})
    validator = SchemaValidator(document)
    instance = {"children": [{"name": "a"}, {"children": [{"name": 1}]}]}
    assert list(validator.iter_errors(instance, "Node")) == [("children[1].children[0].name", "must be a string")]


def test_validating_by_name_does_not_check_the_schema_again(monkeypatch):
    validator = SchemaValidator(DOCUMENT)

    def check_during_a_request(schema):
        raise AssertionError("a named schema was checked again while validating")

    monkeypatch.setattr(validation, "_check_keywords", check_during_a_request)
    validator.validate({**VALID_PATIENT, "address": {"city": "Paris"}}, "Patient")
    with pytest.raises(ValidationError):
        validator.validate({**VALID_PATIENT, "allergies": [""]}, "Patient")


def test_an_ad_hoc_schema_is_checked_on_every_call_down_to_its_ref_targets():
    # Only components are walked at construction, so this path's bad schema passes it.
    paths = {"/tags": {"post": {"requestBody": {"content": {"application/json": {
        "schema": {"type": "string", "format": "tag"},
    }}}}}}
    validator = SchemaValidator(with_schemas({}, paths))
    ad_hoc = {"$ref": "#/paths/~1tags/post/requestBody/content/application~1json/schema"}
    for _ in range(2):  # the first failure must not leave the target trusted
        with pytest.raises(SchemaError):
            list(validator.iter_errors("x", ad_hoc))


# --- schema keywords ---

@pytest.mark.parametrize("schema, instance", [
    ({"type": "string", "maxLenght": 5}, "x"),  # a typo
    ({"type": "string", "nullable": True}, None),  # OpenAPI 3.0, gone in 3.1
    ({"type": "integer", "$comment": "x"}, "not even an integer"),
    ({"properties": {"a": {"minimum": 0, "exclusiveMinimum": 0}}}, {"a": 1}),
    ({"items": {"uniqueItems": True}}, [1]),
])
def test_unknown_keyword_is_a_schema_error(schema, instance):
    with pytest.raises(SchemaError):
        errors_for(instance, schema)


def test_annotation_keywords_are_ignored():
    schema = {
        "type": "string", "title": "Name", "description": "A name", "default": "x", "example": "y",
        "examples": ["z"], "readOnly": False, "writeOnly": False, "deprecated": False,
    }
    assert errors_for("anything", schema) == []


def test_schema_that_is_not_an_object_is_a_schema_error():
    with pytest.raises(SchemaError):
        errors_for({"a": 1}, {"properties": {"a": "string"}})


# --- collecting errors ---

def test_all_errors_are_collected_in_schema_order():
    instance = {
        "allergies": ["nuts", ""],
        "email": "not-an-address",
        "firstName": "",
        "address": {"city": "Amsterdam", "zip": "1011"},
        "gender": "f",
        "id": "65f0c0ffee",
    }
    with pytest.raises(ValidationError) as raised:
        SchemaValidator(DOCUMENT).validate(instance, "Patient")
    assert raised.value.errors == [
        ("dateOfBirth", "is required"),
        ("firstName", "must be at least 1 character long"),
        ("gender", "must be one of: male, female, other, unknown"),
        ("email", "must be a valid email address"),
        ("address.city", "must be at most 5 characters long"),
        ("address.zip", "unknown field"),
        ("allergies[1]", "must be at least 1 character long"),
        ("id", "unknown field"),
    ]


def test_root_errors_are_reported_at_body():
    assert errors_for("a string", {"$ref": "#/components/schemas/Patient"}) == [("body", "must be an object")]


def test_valid_instance_passes_validate():
    assert SchemaValidator(DOCUMENT).validate(VALID_PATIENT, "Patient") is None


def test_validation_error_text_lists_fields_and_messages():
    error = ValidationError([("firstName", "is required"), ("email", "must be a valid email address")])
    assert error.errors == [("firstName", "is required"), ("email", "must be a valid email address")]
    assert str(error) == "firstName: is required; email: must be a valid email address"


SECRET = "Jane-Q-Secret-4471"


@pytest.mark.parametrize("schema, instance", [
    ({"type": "integer"}, SECRET),
    ({"type": ["integer", "null"]}, SECRET),
    ({"enum": ["male", "female"]}, SECRET),
    ({"const": "Bearer"}, SECRET),
    ({"maxLength": 3}, SECRET),
    ({"minLength": 100}, SECRET),
    ({"pattern": "^[0-9]+$"}, SECRET),
    ({"format": "date"}, SECRET),
    ({"format": "email"}, SECRET),
    ({"maxItems": 0}, [SECRET]),
    ({"items": {"type": "integer"}}, [SECRET]),
    ({"properties": {"notes": {"maxLength": 1}}}, {"notes": SECRET}),
    ({"additionalProperties": False}, {"notes": SECRET}),
    ({"additionalProperties": {"maxLength": 1}}, {"notes": SECRET}),
])
def test_messages_never_contain_the_rejected_value(schema, instance):
    errors = errors_for(instance, schema)
    assert errors != []
    assert all(SECRET not in field and SECRET not in message for field, message in errors)
