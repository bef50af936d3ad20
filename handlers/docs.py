"""The API describes itself: GET /openapi.json serves the contract, GET /docs a reference page.

`openapi.json` is the single source of truth: the validator reads its schemas, and
`render_reference(spec)` turns it into one self-contained HTML5 page, so the prose a
reader sees can never drift from the rules the server enforces. The page has an inline
stylesheet, a table of contents (a side column on a wide screen, on top on a phone)
and, for every operation, its parameters, request body, responses, response headers
and examples, the `curl` command for it, and a "Try it" form (the operations and their
commands are read from the contract by handlers/operations.py). One small script of ours
(handlers/docs_assets/try_it.js) sends those forms with `fetch` and shows the answer;
the page loads nothing else.

Rendering is pure (a dict in, a string out) and happens once at start-up, when
`Documents.load` reads the file; the two handlers here only hand those bytes out.
"""

import base64
import hashlib
import html
import json
import re
from pathlib import Path
from typing import NamedTuple

from handlers.operations import Endpoint, curl_command, endpoints_by_tag, example_of, resolve
from web.messages import JSON_TYPE, Request, Response

HTML_TYPE = "text/html; charset=utf-8"

TRY_IT_SCRIPT = (Path(__file__).resolve().parent / "docs_assets" / "try_it.js").read_text(encoding="utf-8")


def content_security_policy(script: str) -> str:
    """The page's CSP (W3C CSP Level 3): its inline style, the one script whose SHA-256
    it names, requests to this server only, and no framing by another page (the page
    holds a token and has forms that delete).

    NOTE: naming the script by its hash, not allowing 'unsafe-inline' scripts, means
    that markup slipped into the document could still neither run nor load anything.
    """
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
            "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


DOCS_CONTENT_SECURITY_POLICY = content_security_policy(TRY_IT_SCRIPT)

# (lower bound, upper bound, unit) for the JSON-Schema keywords that limit a size or value.
RANGE_KEYWORDS = (("minLength", "maxLength", "characters"), ("minItems", "maxItems", "items"),
                  ("minimum", "maximum", ""))

# One column on a phone; from 64rem on, the contents in a side column that stays in
# view. Long paths and ids may break anywhere, and wide tables and examples scroll in
# their own box: nothing makes the page wider than the screen.
STYLE = """
* { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, sans-serif; margin: 0; padding: 1rem; overflow-wrap: anywhere; }
main { max-width: 60rem; min-width: 0; }
nav ul { list-style: none; padding-left: 0.8rem; margin: 0.2rem 0; }
nav > ul { padding-left: 0; }
nav li { margin: 0.15rem 0; }
@media (min-width: 64rem) {
  body { display: grid; grid-template-columns: 19rem minmax(0, 1fr); gap: 2rem; padding: 1rem 2rem; }
  nav { position: sticky; top: 0; max-height: 100vh; overflow-y: auto; padding: 1rem 0; font-size: 0.9rem; }
}
h2 { border-bottom: 2px solid #d0d7de; margin-top: 2.5rem; }
section.operation { border: 1px solid #d0d7de; border-radius: 6px; padding: 0 1rem 1rem; margin: 1.5rem 0; }
.method { display: inline-block; min-width: 4.5rem; text-align: center; color: #fff; border-radius: 4px;
          font: bold 0.85rem monospace; padding: 0.1rem 0.4rem; background: #57606a; }
.get { background: #0969da; } .post { background: #1a7f37; }
.put { background: #9a6700; } .patch { background: #8250df; } .delete { background: #cf222e; }
code { background: #f6f8fa; padding: 0 0.2rem; border-radius: 3px; }
pre, output { display: block; background: #f6f8fa; padding: 0.5rem; border-radius: 4px; overflow-x: auto;
              white-space: pre-wrap; font: 0.85rem/1.4 monospace; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 0.3rem 0.5rem; border-bottom: 1px solid #d0d7de; }
td.status { white-space: nowrap; overflow-wrap: normal; }
.muted { color: #57606a; }
form label { display: block; margin: 0.3rem 0; }
form input, form textarea { width: 100%; max-width: 40rem; font: 0.9rem monospace; padding: 0.2rem; }
form textarea { min-height: 8rem; }
details.try, #authorize { background: #fff8c5; border-radius: 6px; padding: 0.5rem 1rem; margin-top: 1rem; }
"""


def text(value) -> str:
    """Escape anything taken from the spec: the page must stay inert whatever the document holds."""
    return html.escape(str(value))


def prose(value) -> str:
    """Escape a description, then show its `backticked` spans as code (safe: already escaped)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text(value))


def type_html(schema: dict, spec: dict | None = None) -> str:
    """A schema's type in a few words; a $ref becomes a link to that schema's section,
    with "| null" when the schema it names allows null (Address does)."""
    if "$ref" in schema:
        name = text(schema["$ref"].rsplit("/", 1)[-1])
        target_types = resolve(spec, schema).get("type", ()) if spec is not None else ()
        nullable = " | null" if "null" in target_types else ""
        return f'<a href="#schema-{name}">{name}</a>{nullable}'
    types = schema.get("type", "any")
    names = [types] if isinstance(types, str) else types
    return " | ".join("array of " + type_html(schema.get("items", {}), spec) if name == "array" else text(name)
                      for name in names)


def range_phrase(low, high, unit: str) -> str:
    """"1–100 characters", "at least 1", "at most 50 items": one bound or both."""
    if low is None:
        bounds = f"at most {high}"
    elif high is None:
        bounds = f"at least {low}"
    else:
        bounds = f"{low}–{high}"
    return f"{bounds} {unit}".strip()


def rules_html(schema: dict) -> list[str]:
    """The constraints a schema puts on a value, each as a short phrase."""
    rules = [text(range_phrase(schema.get(low_key), schema.get(high_key), unit))
             for low_key, high_key, unit in RANGE_KEYWORDS if low_key in schema or high_key in schema]
    if "format" in schema:
        rules.append("format " + text(schema["format"]))
    if "pattern" in schema:
        rules.append(f"pattern <code>{text(schema['pattern'])}</code>")
    # json.dumps so that a null choice reads as null and a string as "text".
    if "enum" in schema:
        rules.append("one of " + text(", ".join(json.dumps(choice) for choice in schema["enum"])))
    if "const" in schema:
        rules.append("always " + text(json.dumps(schema["const"])))
    if "default" in schema:
        rules.append("default " + text(json.dumps(schema["default"])))
    if schema.get("readOnly"):
        rules.append("read-only")
    item_rules = rules_html(schema["items"]) if "items" in schema else []
    if item_rules:
        rules.append("each " + ", ".join(item_rules))
    return rules


def schema_line_html(schema: dict, spec: dict | None = None) -> str:
    """One line for a value: its type, its constraints, then its description."""
    line = f"<em>{type_html(schema, spec)}</em>"
    rules = rules_html(schema)
    if rules:
        line += " — " + "; ".join(rules)
    if "description" in schema:
        line += f'. <span class="muted">{prose(schema["description"])}</span>'
    return line


def field_list_html(spec: dict, schema: dict) -> str:
    """An object schema as a list of its fields; any other schema as a single line."""
    schema = resolve(spec, schema)
    if "properties" not in schema:
        return f"<p>{schema_line_html(schema, spec)}</p>"
    required = set(schema.get("required", ()))
    items = []
    for name, field in schema["properties"].items():
        need = "required" if name in required else "optional"
        # An object written inline (not a $ref to a named schema) has no section of its own.
        inner = field.get("items", field)
        nested = field_list_html(spec, inner) if "properties" in inner else ""
        items.append(f"<li><code>{text(name)}</code> ({need}) {schema_line_html(field, spec)}{nested}</li>")
    closed = '<p class="muted">No other fields.</p>' if schema.get("additionalProperties") is False else ""
    return "<ul>" + "".join(items) + "</ul>" + closed


def parameters_html(spec: dict, parameters: list[dict]) -> str:
    rows = "".join(
        f"<tr><td><code>{text(p['name'])}</code></td><td>{text(p['in'])}</td>"
        f"<td>{'required' if p.get('required') else 'optional'}</td>"
        f"<td>{prose(p.get('description', ''))}<br>{schema_line_html(p.get('schema', {}), spec)}</td></tr>"
        for p in (resolve(spec, parameter) for parameter in parameters))
    return (f'<h4>Parameters</h4><div class="scroll"><table><tr><th>name</th><th>in</th><th></th><th>value</th></tr>'
            f"{rows}</table></div>")


def example_html(value) -> str:
    if value is None:
        return ""
    shown = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    return f"<details><summary>Example</summary><pre>{text(shown)}</pre></details>"


def request_body_html(spec: dict, body: dict) -> str:
    body = resolve(spec, body)
    parts = [f"<h4>Request body</h4><p>{prose(body.get('description', ''))}</p>"]
    for media_type, media in body.get("content", {}).items():
        parts.append(f"<p><code>{text(media_type)}</code></p>")
        if "schema" in media:
            parts.append(field_list_html(spec, media["schema"]))
        parts.append(example_html(example_of(spec, media)))
    return "".join(parts)


def responses_html(spec: dict, responses: dict) -> str:
    rows = []
    for status, reference in responses.items():
        # OpenAPI 3.1 §4.8.23: a reference's own description wins over its target's, so
        # one shared 400 can say what this operation refuses.
        response = {**resolve(spec, reference), **({"description": reference["description"]}
                                                   if "description" in reference else {})}
        content = response.get("content", {})
        bodies = ", ".join(f"<code>{text(media_type)}</code> {type_html(media['schema'], spec) if 'schema' in media else ''}"
                           for media_type, media in content.items())
        examples = "".join(example_html(example_of(spec, media)) for media in content.values())
        headers = "".join(f"<li><code>{text(name)}</code> {prose(resolve(spec, header).get('description', ''))}</li>"
                          for name, header in response.get("headers", {}).items())
        rows.append(f"<tr><td class=\"status\"><strong>{text(status)}</strong></td><td>{prose(response.get('description', ''))}"
                    f"{examples}</td><td>{bodies}</td><td>{'<ul>' + headers + '</ul>' if headers else ''}</td></tr>")
    return ('<h4>Responses</h4><div class="scroll"><table><tr><th>status</th><th>meaning</th><th>body</th>'
            "<th>headers</th></tr>" + "".join(rows) + "</table></div>")


def curl_html(spec: dict, endpoint: Endpoint) -> str:
    return f"<h4>From a shell</h4><pre>{text(curl_command(spec, endpoint))}</pre>"


SHELL_HTML = """<p>Every operation shows a <code>curl</code> command in the style of the README's tour.
First set <code>API=http://127.0.0.1:8000</code>, then log in and keep
<code>AUTH="Authorization: Bearer &lt;accessToken&gt;"</code>, and keep the ids you are given in
<code>PATIENT</code>, <code>REPORT</code> and <code>SESSION</code>; the commands use those.</p>"""


def generated_clients_html(spec: dict) -> str:
    """What a client generated from this document needs to be told: where the server
    is, how a 304 arrives, and which fields have defaults (listed from the document)."""
    defaults = [f"<li><code>{text(name)}</code>: <code>{text(json.dumps(value))}</code></li>"
                for name, value in defaults_of(spec)]
    return f"""<h2 id="generated-clients">Generated clients</h2>
<p>A client generated from <a href="/openapi.json">/openapi.json</a> works unedited, given three things.</p>
<ul><li><strong>The server's URL.</strong> The document has no <code>servers</code> entry: OpenAPI then means
the URL it was loaded from, which is right for a server that runs on any host and port. Give it to the
tool: openapi-generator's Python client <code>Configuration(host="http://127.0.0.1:8000")</code>; its
TypeScript clients <code>new Configuration({{basePath: "http://127.0.0.1:8000"}})</code>; openapi-fetch
(with openapi-typescript's types) <code>createClient({{baseUrl: "http://127.0.0.1:8000"}})</code>; a
Postman collection from openapi-to-postmanv2: the collection variable <code>baseUrl</code>; Schemathesis:
load the document from the server (<code>schemathesis run http://127.0.0.1:8000/openapi.json</code>).</li>
<li><strong>A 304 is an answer, not an error.</strong> Reads with <code>If-None-Match</code> answer 304 Not
Modified (no body) when the copy you have is current. Generated clients raise for every status outside
2xx, this one included: openapi-generator's Python client raises <code>ApiException</code> with
<code>status == 304</code> and the <code>ETag</code> in <code>headers</code>, even from the
<code>*_with_http_info</code> call. Catch it and keep using the copy you have; or call the
<code>*_without_preload_content</code> variant, which returns the raw response whatever its status.</li>
<li><strong>Fields with a default</strong> may be left out of a request, and the server fills them in. The
document marks them with <code>default</code> and leaves them out of <code>required</code>; some tools
(openapi-typescript, whose <code>defaultNonNullable</code> is on by default) type them as always present
anyway. Fields and parameters with a default:<ul>{"".join(defaults)}</ul></li>
<li><strong>Bytes are bytes.</strong> Reports, the export and bulk-export files are described with
<code>format: binary</code> beside <code>contentMediaType</code>, so generators return them as bytes and
send an upload's <code>file</code> as a file part.</li></ul>"""


def defaults_of(spec: dict) -> list[tuple[str, object]]:
    """(Schema.field or parameter, default) for every default the document declares."""
    components = spec.get("components", {})
    found = [(f"{schema_name}.{field}", definition["default"])
             for schema_name, schema in components.get("schemas", {}).items()
             for field, definition in schema.get("properties", {}).items() if "default" in definition]
    found += [(f"{parameter['name']} ({parameter['in']})", parameter["schema"]["default"])
              for parameter in components.get("parameters", {}).values() if "default" in parameter.get("schema", {})]
    return found


def try_it_html(spec: dict, endpoint: Endpoint) -> str:
    """A form the page's script sends (handlers/docs_assets/try_it.js): a field per
    parameter, the body pre-filled with the spec's example, a file picker for an upload."""
    operation = endpoint.operation
    fields = []
    for parameter in (resolve(spec, parameter) for parameter in endpoint.parameters):
        # A required parameter starts with the spec's example; an optional one only shows
        # it (a pre-filled If-Match or Range would change what Send does).
        example = parameter.get("example", parameter.get("schema", {}).get("example", ""))
        shown = f'value="{text(example)}"' if parameter.get("required") else f'placeholder="{text(example)}"'
        fields.append(f'<label>{text(parameter["name"])} ({text(parameter["in"])})'
                      f'<input name="{text(parameter["name"])}" data-in="{text(parameter["in"])}" {shown}></label>')
    body_type = ""
    for media_type, media in resolve(spec, operation.get("requestBody", {})).get("content", {}).items():
        body_type = media_type
        if media_type == "multipart/form-data":
            for name, field in resolve(spec, media.get("schema", {})).get("properties", {}).items():
                kind = "file" if field.get("contentMediaType") == "application/octet-stream" else "text"
                fields.append(f'<label>{text(name)} (form part)<input type="{kind}" name="{text(name)}" data-part></label>')
        else:
            example = example_of(spec, media)
            shown = "" if example is None else json.dumps(example, indent=2, ensure_ascii=False)
            fields.append(f'<label>body ({text(media_type)})<textarea name="body">{text(shown)}</textarea></label>')
        break  # one body type per operation here
    needs_token = "true" if operation.get("security") else "false"
    return (f'<details class="try"><summary>Try it</summary>'
            f'<form class="try" data-method="{text(endpoint.method.upper())}" data-path="{text(endpoint.path)}" '
            f'data-auth="{needs_token}" data-body-type="{text(body_type)}">{"".join(fields)}'
            f'<button type="submit">Send</button><output></output></form></details>')


AUTHORIZE_HTML = """<form id="authorize"><strong>Authorize</strong> — log in, or paste an access token; every
"Try it" form then sends it. <span id="auth-state" class="muted"></span>
<label>username<input name="username" autocomplete="username"></label>
<label>password<input name="password" type="password" autocomplete="current-password"></label>
<label>or a token<input id="auth-token" name="token"></label>
<button type="submit">Authorize</button></form>"""


def endpoint_html(spec: dict, endpoint: Endpoint) -> str:
    method, operation = endpoint.method, endpoint.operation
    schemes = [name for requirement in operation.get("security", []) for name in requirement]
    auth = f"Needs a token: {text(', '.join(schemes))}." if schemes else "No token needed."
    parts = [f'<section class="operation" id="{text(endpoint.anchor)}">',
             f'<h3><span class="method {text(method)}">{text(method.upper())}</span> <code>{text(endpoint.path)}</code></h3>',
             f"<p><strong>{text(operation.get('summary', ''))}</strong> {prose(operation.get('description', ''))}</p>",
             f'<p class="muted">{auth}</p>']
    if endpoint.parameters:
        parts.append(parameters_html(spec, endpoint.parameters))
    if "requestBody" in operation:
        parts.append(request_body_html(spec, operation["requestBody"]))
    parts.append(responses_html(spec, operation.get("responses", {})))
    parts.append(curl_html(spec, endpoint))
    parts.append(try_it_html(spec, endpoint))
    return "".join(parts) + "</section>"


def render_reference(spec: dict) -> str:
    """The whole reference page for an OpenAPI document, as an HTML5 string."""
    info = spec.get("info", {})
    title = text(f"{info.get('title', 'API')} {info.get('version', '')}".strip())
    tag_descriptions = {tag["name"]: tag.get("description", "") for tag in spec.get("tags", [])}
    toc, body = ['<li><a href="#generated-clients">generated clients</a></li>'], []
    for tag, endpoints in endpoints_by_tag(spec).items():
        links = "".join(f'<li><a href="#{text(e.anchor)}">{text(e.method.upper())} {text(e.path)}</a>'
                        f" — {text(e.operation.get('summary', ''))}</li>" for e in endpoints)
        toc.append(f'<li><a href="#tag-{text(tag)}">{text(tag)}</a><ul>{links}</ul></li>')
        body.append(f'<h2 id="tag-{text(tag)}">{text(tag)}</h2><p>{prose(tag_descriptions.get(tag, ""))}</p>')
        body.extend(endpoint_html(spec, endpoint) for endpoint in endpoints)
    schemas = spec.get("components", {}).get("schemas", {})
    toc.append('<li><a href="#schemas">schemas</a></li>')
    body.append('<h2 id="schemas">Schemas</h2>')
    body.extend(f'<h3 id="schema-{text(name)}">{text(name)}</h3><p>{prose(schema.get("description", ""))}</p>'
                + field_list_html(spec, schema) for name, schema in schemas.items())
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title} reference</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        f"<nav><h2>Contents</h2><ul>{''.join(toc)}</ul></nav>", "<main>",
        f"<h1>{title}</h1>", f"<p>{prose(info.get('description', ''))}</p>",
        '<p>Machine-readable contract: <a href="/openapi.json">/openapi.json</a>.</p>', SHELL_HTML, AUTHORIZE_HTML,
        generated_clients_html(spec), *body, "</main>", f"<script>{TRY_IT_SCRIPT}</script>", "</body>", "</html>", ""])


class Documents(NamedTuple):
    """The contract as served: the file's exact bytes, its parsed form (the validator
    reads its schemas), and the reference page rendered from it."""
    spec: dict
    openapi_json: bytes
    reference_html: bytes

    @classmethod
    def load(cls, path: Path) -> "Documents":
        raw = path.read_bytes()
        spec = json.loads(raw)
        return cls(spec, raw, render_reference(spec).encode("utf-8"))


def get_openapi(documents: Documents, request: Request) -> Response:
    """GET /openapi.json: the contract, byte for byte as loaded at start-up."""
    return Response(200, documents.openapi_json, [("Content-Type", JSON_TYPE)])


def get_docs(documents: Documents, request: Request) -> Response:
    """GET /docs: the reference page rendered once at start-up from the same document."""
    return Response(200, documents.reference_html,
                    [("Content-Type", HTML_TYPE), ("Content-Security-Policy", DOCS_CONTENT_SECURITY_POLICY)])
