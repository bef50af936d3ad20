"""Check JSON request bodies against the JSON Schema subset that OpenAPI 3.1 uses.

Follows JSON Schema 2020-12 (Core and Validation), limited to the keywords the API's
contract needs. Any other keyword is a `SchemaError`, and so is an unknown format, a
pattern that does not compile or a $ref that points nowhere. `SchemaValidator` checks
every schema of its document once, when it is built: a typo in openapi.json stops the
server at start-up, instead of silently allowing everything or failing a request.

A schema is a dict of keywords. Each keyword is checked by one small function, found
in the `_KEYWORDS` table, that yields `(field, message)` for every way the instance
breaks it; keywords holding sub-schemas (properties, items, $ref) call back into the
validator one level deeper. Errors come in the order of the schema's keywords, and
all of them are reported, so a client can fix a whole form in one round trip.

The formats and the ECMA-262 patterns it asserts are in `web/formats.py`.

Fields are paths: "body" is the whole document, property names are joined with "."
and array indices written "[i]", e.g. "address.city" or "allergies[2]".

`follow_pointer` resolves a local $ref (RFC 6901); it is public so that every reader
of the document follows references the same way.

NOTE: no message ever repeats the submitted value. Request bodies hold patient data,
and error responses end up in logs, browser consoles and bug reports.
"""

import json
import operator
import re
import urllib.parse
from typing import Callable, Iterator

from web.formats import ANNOTATIONS, FORMATS, compile_pattern

ROOT = "body"


class ValidationError(Exception):
    """The instance breaks its schema; `errors` lists every `(field, message)` found."""

    def __init__(self, errors: list[tuple[str, str]]):
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))
        self.errors = errors


class SchemaError(Exception):
    """The schema itself is wrong: a programming error in the contract, not a bad request."""


class SchemaValidator:
    """Validates instances against the schemas of one OpenAPI document.

    Building one checks every schema in components/schemas and every schema reachable
    from them, through nested keywords and $refs; a bad document raises `SchemaError`
    here, so validating a request only ever meets schemas already known to be sound.
    """

    def __init__(self, document: dict):
        self._document = document
        self._schemas = document.get("components", {}).get("schemas", {})
        if not isinstance(self._schemas, dict):
            raise SchemaError("components/schemas must be an object")
        # Every $ref's target, stored by _check and only read while validating.
        # NOTE: one validator serves every request thread, without a lock. The document's
        # $refs are all stored below, before any request; checking an ad-hoc schema (see
        # iter_errors) may store more, and two threads storing the same $ref store the
        # same object: a dict assignment is atomic, so the race is harmless.
        self._resolved_refs: dict[str, dict] = {}
        checked_refs: set[str] = set()
        for schema in self._schemas.values():
            self._check(schema, checked_refs)

    def validate(self, instance, schema: dict | str) -> None:
        """Raise `ValidationError` with every error; `schema` may name a components/schemas entry."""
        errors = list(self.iter_errors(instance, schema))
        if errors:
            raise ValidationError(errors)

    def iter_errors(self, instance, schema: dict | str) -> Iterator[tuple[str, str]]:
        """Every `(field, message)` the instance breaks, in the order of the schema's keywords.

        A name is looked up in components/schemas, checked when the validator was built,
        so a request pays for validation only. A schema given as a dict is checked on
        every call: handlers always pass a name, so only tests pay for that.
        """
        if isinstance(schema, str):
            schema = self._named_schema(schema)
        else:
            self._check(schema, set())
        yield from self._errors_at(instance, schema, ROOT)

    def _named_schema(self, name: str) -> dict:
        if name not in self._schemas:
            raise SchemaError(f"no schema named {name!r} in components/schemas")
        return self._schemas[name]

    def _check(self, schema, checked_refs: set[str]) -> None:
        """Refuse `schema` if it, a schema inside it or one behind its $refs is one this
        validator would misread or silently ignore part of."""
        _check_keywords(schema)
        for subschema in _subschemas(schema):
            self._check(subschema, checked_refs)
        if "$ref" in schema:
            ref = schema["$ref"]
            self._resolved_refs[ref] = target = follow_pointer(self._document, ref)
            # Each target is walked once: a recursive schema (a tree whose children
            # $ref the tree) must not send the walk round for ever.
            if ref not in checked_refs:
                checked_refs.add(ref)
                self._check(target, checked_refs)

    def _errors_at(self, instance, schema: dict, path: str) -> Iterator[tuple[str, str]]:
        # `schema` has passed _check: every keyword, type, format, pattern and $ref in
        # it is usable, so nothing below needs to doubt it.
        # `type` goes first, and alone when it fails: after "must be a string",
        # "must be at least 1 character long" would only be noise.
        if "type" in schema:
            type_names = _type_names(schema["type"])
            if not any(_TYPES[name][0](instance) for name in type_names):
                yield path, _type_message(type_names)
                return
        for keyword, value in schema.items():
            check = _KEYWORDS.get(keyword)
            if check is not None:
                yield from check(self, value, instance, schema, path)


# --- types: JSON Schema 2020-12 validation §6.1.1 ---


def _is_number(value) -> bool:
    # NOTE: bool is a subclass of int in Python, but true and false are not JSON numbers.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value) -> bool:
    return _is_number(value) and (isinstance(value, int) or value.is_integer())


# Each type name with its check and the noun a message uses. "integer" is any number
# with a zero fractional part (§6.1.1), so 1.0 is one.
_TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "string": (lambda value: isinstance(value, str), "a string"),
    "integer": (_is_integer, "an integer"),
    "number": (_is_number, "a number"),
    "boolean": (lambda value: isinstance(value, bool), "a boolean"),
    "object": (lambda value: isinstance(value, dict), "an object"),
    "array": (lambda value: isinstance(value, list), "an array"),
    "null": (lambda value: value is None, "null"),
}


def _type_names(type_value) -> list[str]:
    # Validation §6.1.1: the value of "type" is one name or an array of them.
    return type_value if isinstance(type_value, list) else [type_value]


def _type_message(type_names: list[str]) -> str:
    nouns = [_TYPES[name][1] for name in type_names]
    if len(nouns) == 1:
        return f"must be {nouns[0]}"
    return f"must be {', '.join(nouns[:-1])} or {nouns[-1]}"


# --- keywords: each is (validator, keyword value, instance, schema, path) -> errors ---
# Each skips instances of types it does not apply to (validation §6: minLength on a
# number asserts nothing).


def _ref(validator, ref, instance, schema, path):
    # JSON Schema 2020-12 core §8.2.3.1: $ref is an applicator like any other, so its
    # sibling keywords apply too (draft-07 and OpenAPI 3.0 ignored them).
    yield from validator._errors_at(instance, validator._resolved_refs[ref], path)


def _required(validator, names, instance, schema, path):
    if isinstance(instance, dict):
        for name in names:
            if name not in instance:
                # Reported at the missing field itself, where a form would show it.
                yield _child_path(path, name), "is required"


def _properties(validator, properties, instance, schema, path):
    if isinstance(instance, dict):
        for name, subschema in properties.items():
            if name in instance:
                yield from validator._errors_at(instance[name], subschema, _child_path(path, name))


def _additional_properties(validator, additional, instance, schema, path):
    if not isinstance(instance, dict):
        return
    declared = schema.get("properties", {})
    for name in (name for name in instance if name not in declared):
        if additional is False:
            yield _child_path(path, name), "unknown field"
        elif additional is not True:
            yield from validator._errors_at(instance[name], additional, _child_path(path, name))


def _enum(validator, options, instance, schema, path):
    if not any(_json_equal(instance, option) for option in options):
        yield path, f"must be one of: {', '.join(map(_describe, options))}"


def _const(validator, expected, instance, schema, path):
    if not _json_equal(instance, expected):
        yield path, f"must be {_describe(expected)}"


def _pattern(validator, pattern, instance, schema, path):
    # Validation §6.3.3: patterns are not implicitly anchored, so this is a search;
    # a schema that means the whole string says so with ^ and $.
    if isinstance(instance, str) and not compile_pattern(pattern).search(instance):
        yield path, "does not match the required pattern"


def _format(validator, format_name, instance, schema, path):
    # 2020-12 treats format as an annotation unless a validator opts in to asserting
    # it (validation §7.2); we opt in, since a malformed date is a bad request. `binary`
    # stays an annotation: it tells generators a body is bytes, and no string fails it.
    if format_name in ANNOTATIONS:
        return
    is_valid, message = FORMATS[format_name]
    if isinstance(instance, str) and not is_valid(instance):
        yield path, message


def _items(validator, item_schema, instance, schema, path):
    if isinstance(instance, list):
        for index, item in enumerate(instance):
            yield from validator._errors_at(item, item_schema, f"{path}[{index}]")


def _limit(type_name: str, measure: Callable, is_beyond: Callable, message: str):
    """The check for a limit keyword: `measure(instance)` must not be beyond the limit."""
    applies_to = _TYPES[type_name][0]

    def check_limit(validator, limit, instance, schema, path):
        if applies_to(instance) and is_beyond(measure(instance), limit):
            yield path, message.format(limit=limit, s="" if limit == 1 else "s")

    return check_limit


_KEYWORDS: dict[str, Callable[..., Iterator[tuple[str, str]]]] = {
    "$ref": _ref,
    "required": _required,
    "properties": _properties,
    "additionalProperties": _additional_properties,
    "enum": _enum,
    "const": _const,
    # Validation §6.3.1-2: lengths count code points, which is what len() counts on a
    # Python str (a JSON surrogate pair is decoded to one character).
    "minLength": _limit("string", len, operator.lt, "must be at least {limit} character{s} long"),
    "maxLength": _limit("string", len, operator.gt, "must be at most {limit} character{s} long"),
    "pattern": _pattern,
    "format": _format,
    "minimum": _limit("number", lambda number: number, operator.lt, "must be at least {limit}"),
    "maximum": _limit("number", lambda number: number, operator.gt, "must be at most {limit}"),
    "items": _items,
    "minItems": _limit("array", len, operator.lt, "must have at least {limit} item{s}"),
    "maxItems": _limit("array", len, operator.gt, "must have at most {limit} item{s}"),
}

# Validation §9 and OpenAPI 3.1 §4.8.24: these only describe, they assert nothing; nor
# does contentMediaType (validation §8.4), which says what a string's bytes are, such as
# an uploaded file's.
_ANNOTATIONS = {
    "description", "example", "examples", "title", "default", "readOnly", "writeOnly", "deprecated",
    "contentMediaType",
}


def _check_keywords(schema) -> None:
    """Refuse a schema node this validator would otherwise misread or silently ignore."""
    if not isinstance(schema, dict):
        raise SchemaError(f"a schema must be an object, not {type(schema).__name__}")
    unknown = schema.keys() - _KEYWORDS.keys() - _ANNOTATIONS - {"type"}
    if unknown:
        raise SchemaError(f"unsupported schema keyword(s): {', '.join(sorted(unknown))}")
    if "type" in schema:
        names = _type_names(schema["type"])
        if not names or not all(isinstance(name, str) and name in _TYPES for name in names):
            raise SchemaError(f"unknown type {schema['type']!r}")
    if "format" in schema and schema["format"] not in FORMATS and schema["format"] not in ANNOTATIONS:
        raise SchemaError(f"unknown format {schema['format']!r}")
    if "pattern" in schema:
        try:
            compile_pattern(schema["pattern"])
        except re.error as error:
            raise SchemaError(f"invalid pattern {schema['pattern']!r}: {error}") from None
    if not isinstance(schema.get("properties", {}), dict):
        raise SchemaError("properties must be an object of schemas")


def _subschemas(schema: dict) -> Iterator:
    """The schemas written inside a schema node: what properties, items and
    additionalProperties hold ($ref points elsewhere, and is followed apart)."""
    yield from schema.get("properties", {}).values()
    if "items" in schema:
        yield schema["items"]
    # additionalProperties is true, false or a schema, as _additional_properties reads
    # it; isinstance, not `in (True, False)`, which 1 and 0 would pass.
    additional = schema.get("additionalProperties", True)
    if not isinstance(additional, bool):
        yield additional


def _json_equal(left, right) -> bool:
    """Equality as JSON sees it (JSON Schema 2020-12 core §4.2.2), for enum and const."""
    # NOTE: Python says True == 1 and False == 0; JSON says a boolean equals only a
    # boolean. Numbers compare by value, so 1.0 equals 1, as the spec requires.
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if _is_number(left) and _is_number(right):
        return left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_json_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(left[key], right[key]) for key in left)
    return type(left) is type(right) and left == right


# --- $ref: JSON Pointer, RFC 6901 ---


def follow_pointer(document: dict, ref: str) -> dict:
    """The object a local $ref such as "#/components/schemas/Patient" points to.

    `ref` is a URI fragment holding a JSON Pointer. Raises `SchemaError` unless it is
    local ("#/..."), every step names a member, and the last one names an object.
    """
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise SchemaError(f"only local $refs (#/...) are supported, got {ref!r}")
    # RFC 6901 §6: in a URI fragment the pointer is percent-encoded.
    pointer = urllib.parse.unquote(ref[1:])
    target = document
    for token in pointer.split("/")[1:]:
        # RFC 6901 §4: "~1" before "~0", so that "~01" becomes "~1" and not "/".
        token = token.replace("~1", "/").replace("~0", "~")
        # What a $ref names in OpenAPI (schemas, parameters, responses) sits in objects,
        # so only objects are walked; an array index names nothing here.
        if not isinstance(target, dict) or token not in target:
            raise SchemaError(f"cannot resolve $ref {ref!r}")
        target = target[token]
    if not isinstance(target, dict):
        raise SchemaError(f"$ref {ref!r} does not point to an object")
    return target


# --- paths and messages ---


def _child_path(path: str, name: str) -> str:
    return name if path == ROOT else f"{path}.{name}"


def _describe(schema_value) -> str:
    """A value from the schema (never from the instance), as a message shows it."""
    return schema_value if isinstance(schema_value, str) else json.dumps(schema_value)
