"""The small grammar HTTP header fields share: tokens, quoted strings, parameters.

RFC 9110 §5.6 defines a handful of building blocks that many fields reuse. A method
and a field name are *tokens*; a media type with its parameters
(`multipart/form-data; boundary="a b"`) and a Content-Disposition
(`form-data; name="file"; filename="scan.pdf"`) are a token followed by
`; name=value` pairs, where each value is a token or a *quoted string*.

The HTTP/1.1 codec (`web/http11.py`), the multipart parser (`web/multipart.py`) and
the handlers that read a Content-Type all parse these with the functions below, so
there is one reading of the grammar, not three that could disagree.
"""

import re

# RFC 9110 §5.6.2: token = 1*tchar
TOKEN_PATTERN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
TOKEN = re.compile(TOKEN_PATTERN)
TOKEN_BYTES = re.compile(TOKEN_PATTERN.encode("ascii"))  # for the request head, still bytes
# RFC 9110 §5.6.4: quoted-string, where a backslash escapes the next character
QUOTED_STRING_PATTERN = r'"(?:[^"\\]|\\.)*"'
# RFC 9110 §5.6.6: parameters = *( OWS ";" OWS [ name "=" ( token / quoted-string ) ] )
_PARAMETER = re.compile(rf"[ \t]*;[ \t]*(?:({TOKEN_PATTERN})=({TOKEN_PATTERN}|{QUOTED_STRING_PATTERN}))?[ \t]*")
# Inside a quoted string, the escapes we honour (see `_unquote`).
_ESCAPED = re.compile(r'\\(["\\])')


class MalformedParameters(ValueError):
    """A header value does not follow `value *( ";" name "=" value )`."""


def parse_parameters(value: str) -> tuple[str, dict[str, str]]:
    """Split 'Type; a=1; B="x y"' into ('type', {'a': '1', 'b': 'x y'}).

    The leading value and parameter names are case-insensitive, so they come back
    lowered (RFC 9110 §5.6.6, §8.3.1; RFC 6266 §4.1). Raises `MalformedParameters`.
    """
    main_value = value.partition(";")[0]
    parameters: dict[str, str] = {}
    position = len(main_value)
    while position < len(value):
        match = _PARAMETER.match(value, position)
        if match is None:
            raise MalformedParameters("a header has malformed parameters")
        name, raw_value = match.groups()
        if name is not None:
            # NOTE: a repeated parameter is refused, not resolved: if we took the last
            # `name=` and a proxy or scanner the first, the two would disagree about
            # the same header.
            if name.lower() in parameters:
                raise MalformedParameters("a header repeats a parameter")
            parameters[name.lower()] = _unquote(raw_value)
        position = match.end()
    return main_value.strip(" \t").lower(), parameters


def _unquote(raw_value: str) -> str:
    if not raw_value.startswith('"'):
        return raw_value
    # RFC 9110 §5.6.4 lets "\x" stand for any "x", but browsers never escape a
    # backslash (the HTML standard percent-encodes only CR, LF and '"'), so a Windows
    # path in a filename would lose its separators. Only \" and \\ are escapes.
    return _ESCAPED.sub(r"\1", raw_value[1:-1])
