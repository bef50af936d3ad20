"""The API's operations as the contract lists them, for the pages and tools made from it:
local `$ref`s followed, every operation with its parameters grouped by tag, a media
type's example, and each operation as the `curl` command a reader would type.

Pure functions of the parsed `openapi.json`; handlers/docs.py renders them into /docs.
"""

import json
from typing import NamedTuple

from web.validation import follow_pointer

# OpenAPI 3.1 §4.8.9: the keys of a Path Item that name operations (the rest, such as
# "parameters", apply to all of them).
OPERATION_KEYS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def resolve(spec: dict, node: dict) -> dict:
    """Follow local "$ref" pointers such as "#/components/schemas/Patient" (RFC 6901)."""
    while "$ref" in node:
        node = follow_pointer(spec, node["$ref"])
    return node


def example_of(spec: dict, media: dict):
    """A media type's example: its own, the first of its named ones, or its schema's."""
    if "example" in media:
        return media["example"]
    if media.get("examples"):
        return resolve(spec, next(iter(media["examples"].values()))).get("value")
    return resolve(spec, media.get("schema", {})).get("example")


class Endpoint(NamedTuple):
    path: str
    method: str
    operation: dict
    parameters: list[dict]

    @property
    def anchor(self) -> str:
        return "op-" + self.operation.get("operationId", f"{self.method}-{self.path}")


def endpoints_by_tag(spec: dict) -> dict[str, list[Endpoint]]:
    """Every operation in document order, grouped by its first tag (listed tags first)."""
    groups = {tag["name"]: [] for tag in spec.get("tags", [])}
    for path, path_item in spec.get("paths", {}).items():
        for method, operation in path_item.items():
            if method in OPERATION_KEYS:
                # OpenAPI 3.1 §4.8.9: parameters on the Path Item apply to every operation under it.
                parameters = path_item.get("parameters", []) + operation.get("parameters", [])
                tag = operation.get("tags", ["other"])[0]
                groups.setdefault(tag, []).append(Endpoint(path, method, operation, parameters))
    return groups


def shell_quoted(value: str) -> str:
    """`value` as one word for a POSIX shell: in single quotes, each ' written as '\\''."""
    return "'" + value.replace("'", "'\\''") + "'"


def path_variable(name: str) -> str | None:
    """The shell variable the README's tour keeps an id in: patientId → PATIENT."""
    return name[:-2].upper() if name.endswith("Id") else None


def curl_command(spec: dict, endpoint: Endpoint) -> str:
    """The operation as one curl command in the README's style: `$API` for the server,
    `$AUTH` for the bearer header, ids from `$PATIENT`, `$REPORT`, `$SESSION`, the
    spec's example as the body. Optional parameters are left out, as a first call would."""
    operation = endpoint.operation
    path = endpoint.path.replace("$", "\\$")  # "$everything" is the path's, not a variable
    query, headers, body = [], [], []
    for parameter in (resolve(spec, parameter) for parameter in endpoint.parameters):
        if not parameter.get("required"):
            continue
        example = parameter.get("example", parameter.get("schema", {}).get("example", ""))
        if parameter["in"] == "path":
            variable = path_variable(parameter["name"])
            path = path.replace("{" + parameter["name"] + "}", f"${variable}" if variable else str(example))
        elif parameter["in"] == "query":
            query.append(f"{parameter['name']}={example}")
        elif parameter["in"] == "header":
            headers.append(shell_quoted(f"{parameter['name']}: {example}"))
    for media_type, media in resolve(spec, operation.get("requestBody", {})).get("content", {}).items():
        if media_type == "multipart/form-data":
            schema = resolve(spec, media.get("schema", {}))
            for name, field in schema.get("properties", {}).items():
                if field.get("contentMediaType") == "application/octet-stream":
                    body.append(f"-F {name}=@scan.pdf")
                elif name in schema.get("required", ()):
                    body.append("-F " + shell_quoted(f"{name}={field.get('example', '')}"))
        else:
            headers.append(shell_quoted(f"Content-Type: {media_type}"))
            example = example_of(spec, media)
            if example is not None:
                body.append("-d " + shell_quoted(json.dumps(example, ensure_ascii=False)))
        break  # one body type per operation here
    words = ["curl", "-s"]
    successes = [resolve(spec, response) for status, response in operation.get("responses", {}).items()
                 if status.startswith("2")]
    media_types = [media_type for response in successes for media_type in response.get("content", {})]
    if media_types and not any("json" in media_type or media_type.startswith("text/") for media_type in media_types):
        words += ["-o", "report"]  # bytes, not text: into a file
    # curl sends a body with POST unasked; any other method is named.
    if endpoint.method != "get" and not (endpoint.method == "post" and body):
        words += ["-X", endpoint.method.upper()]
    url = "$API" + path + ("?" + "&".join(query) if query else "")
    words.append(f'"{url}"' if "?" in url or "$" in path else url)
    if operation.get("security"):
        words += ["-H", '"$AUTH"']
    words += [word for header in headers for word in ("-H", header)]
    first = " ".join(words)
    if not body:
        return first
    if len(first) + len(" ".join(body)) < 100:
        return " ".join([first, *body])
    return first + " \\\n     " + " ".join(body)
