"""Helpers the test modules share, each module about one thing.

- `problems`: `assert_problem`, the one check of an RFC 9457 problem+json response.
- `raw_http`: a minimal HTTP/1.1 client over a raw socket (`RawConnection`), for what
  `requests` would hide: where a response ends, whether a connection stays open.
- `api`: `ApiClient`, a `requests` session bound to one server, and `TEST_SECRET`.
- `records`: `PATIENT` and `write_report`, sample data for the API and the stores.
- `uploads`: sample PDF, PNG and JPEG files, and multipart bodies built by hand.
- `clock`: `FakeClock`, time that moves only when a test says so.
- `mongodb`: a MongoDB database of its own for each test that asks for one.
- `defaults`: `default_of`, a limit's default read from the code that defines it.

Fixtures (a live server, logged-in clients) stay in `tests/conftest.py`; these are
plain functions and classes that a test module imports by name.
"""
