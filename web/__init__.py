"""The hand-written mechanisms of a web API, one per module, none importing the
application (`handlers/`) or the stores (`storage/`).

In the order a request meets them: `server` (the socket loop) and `http11` (the
HTTP/1.1 codec, with `grammar` for header syntax and `connections` for the open
connections), `dispatch` (the pipeline), `router`, `ratelimit`, `jwt`, `jsonbody`,
`multipart`, `validation` with `formats`, `conditional`, `mergepatch`, `cors`,
`messages` (the request and response values) and `problems` (errors as problem+json).
The sub-package `workers` is the machinery of `--workers`, used only when more than
one process serves.
"""
