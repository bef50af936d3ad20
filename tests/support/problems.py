"""`assert_problem`: the one check that a response is an RFC 9457 problem with a status.

Every error MediTrack answers is problem+json (web/problems.py): a `type`, a `title`,
the `status` again and a `detail` for people. Tests meet that response in three
shapes, and this one function checks them all alike:

- a `requests.Response` (from `ApiClient`),
- a `RawResponse` read off a socket (`tests/support/raw_http.py`),
- a `web.messages.Response` returned by a dispatcher without any network.
"""

import json

import requests

from web.problems import PROBLEM_TYPE


def _status_content_type_and_body(response) -> tuple[int, str | None, bytes]:
    if isinstance(response, requests.Response):
        return response.status_code, response.headers.get("Content-Type"), response.content
    # RawResponse and web.messages.Response both keep their header fields as
    # (name, value) pairs: names compared without case (RFC 9110 §5.1).
    content_types = [value for name, value in response.headers if name.lower() == "content-type"]
    assert len(content_types) <= 1, f"Content-Type appears {len(content_types)} times"
    return response.status, (content_types[0] if content_types else None), response.body


def assert_problem(response, status: int) -> dict:
    """Assert that `response` is an RFC 9457 problem+json response with `status`, and
    return its body (a dict) for the test to check further."""
    actual_status, content_type, body = _status_content_type_and_body(response)
    assert actual_status == status, (actual_status, body)
    assert content_type == PROBLEM_TYPE, content_type
    problem = json.loads(body)
    assert {"type", "title", "status", "detail"} <= problem.keys(), problem
    assert problem["status"] == status, problem
    # RFC 9457 §4.2.1: MediTrack's problems have no type of their own; "about:blank"
    # says the status and its title are all there is to know.
    assert problem["type"] == "about:blank", problem
    assert isinstance(problem["title"], str) and problem["title"], problem
    assert isinstance(problem["detail"], str) and problem["detail"], problem
    return problem
