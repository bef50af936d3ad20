"""The hand-written mechanisms of a web API, one per module: router, JWT, multipart, rate limit, validation, problems."""
