"""Schemathesis hooks for `make conformance` (loaded through SCHEMATHESIS_HOOKS).

What they do, and why each is needed:

- **Auth**: every generated request gets a bearer token of a fresh session of the run's
  user (`MediTrackAuth`). The run also calls logout, "end all sessions", the password
  change and the account erasure with whatever the generator draws; a token shared by
  the whole run would die with the first of those that succeeds. If the user is gone
  (erased) or its password changed, a new user is registered.
- **Valid data where JSON Schema cannot say what valid is**: a `dateOfBirth` must not be
  in the future, and a password is at most 72 bytes in UTF-8 (maxLength counts
  characters). Both rules are in the spec's descriptions; here no generated body breaks
  them, so positive_data_acceptance judges only what the schema can state. (Invalid
  bodies lose nothing by it: breaking these two rules is the project's own tests' job.)
- **A FHIR search's cursor and dates**: a `cursor` is the server's to write (it comes
  from a next link, and with `_sort` it encodes the last entry's place), and a date
  that matches FHIR's pattern may still not exist (2021-02-29). A valid search (or
  bulk export's `_since`) drops such a cursor or date; an invalid one keeps what it drew.
- **An upload's file** must be a PDF, PNG or JPEG, which the server decides from its
  first bytes: the drawn bytes are given a PDF's signature, so uploads succeed and
  the stateful phase reaches downloads and deletes.
"""

import os
import re
import secrets
import threading
import time
from datetime import date

import requests
import schemathesis
from schemathesis.transport.serialization import Binary

BASE_URL = os.environ["MEDITRACK_CONFORMANCE_URL"]
PASSWORD = "conformance run password"  # never the spec's example, which the examples phase sends
PASSWORD_FIELDS = ("password", "currentPassword", "newPassword")
PDF_SIGNATURE = "%PDF-"


class Account:
    """The run's user: its name, registered on first use and again if it was erased."""
    username: str | None = None
    lock = threading.Lock()  # Schemathesis's workers: one user for all of them

    @classmethod
    def login(cls) -> str:
        with cls.lock:
            return cls._login()

    @classmethod
    def _login(cls) -> str:
        for _ in range(5):
            if cls.username is not None:
                response = requests.post(f"{BASE_URL}/auth/login", timeout=30,
                                         json={"username": cls.username, "password": PASSWORD})
                if response.status_code == 200:
                    return response.json()["accessToken"]
                if response.status_code == 429:
                    # The run's wrong passwords (DELETE /auth/me, PUT /auth/password) lock
                    # the username for a second or two (handlers/backoff.py): wait it out.
                    time.sleep(min(float(response.headers.get("Retry-After", "1")), 10.0))
                    continue
            cls.username = f"conformance-{secrets.token_hex(4)}"  # erased, or its password changed
            requests.post(f"{BASE_URL}/auth/register", timeout=30,
                          json={"username": cls.username, "password": PASSWORD}).raise_for_status()
        raise RuntimeError("cannot log in the conformance user")


@schemathesis.auth(refresh_interval=None)  # no caching: a fresh session for every request
class MediTrackAuth:
    def get(self, case, context):
        return Account.login()

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.hook
def filter_body(context, body):
    """Keep valid bodies within the two rules the schema can only describe."""
    if not isinstance(body, dict):
        return True
    birth = body.get("dateOfBirth")
    if isinstance(birth, str) and birth > date.today().isoformat():
        return False
    return not any(isinstance(body.get(name), str) and len(body[name].encode("utf-8")) > 72
                   for name in PASSWORD_FIELDS)


def dates_exist(text: str) -> bool:
    """Whether every YYYY-MM-DD in a date search value is a day of the calendar."""
    for year, month, day in re.findall(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", text):
        try:
            date(int(year), int(month), int(day))
        except ValueError:
            return False
    return True


def keep_fhir_search_valid(case) -> None:
    """Drop from a valid Patient search or export what only the server can make valid."""
    if case.operation.path not in ("/fhir/Patient", "/fhir/$export", "/fhir/Patient/$export") or not case.query:
        return
    if case.operation.path == "/fhir/Patient":
        case.query.pop("cursor", None)
    for name in ("birthdate", "_lastUpdated", "_since"):
        if isinstance(case.query.get(name), str) and not dates_exist(case.query[name]):
            del case.query[name]


@schemathesis.hook
def before_call(context, case, kwargs):
    """An upload's file gets a PDF's first bytes, so the server takes it; a FHIR search
    loses a cursor it did not get from the server, and a date that does not exist.
    (A request hook, not a generation one: it also reaches the examples and the
    schema's boundary values, which the coverage phase builds without the generation
    hooks.)"""
    if case.meta is not None and case.meta.generation.mode == "positive":
        keep_fhir_search_valid(case)
    body = case.body
    if not (case.operation.path.endswith("/reports") and case.method.upper() == "POST"
            and isinstance(body, dict) and "file" in body and case.meta is not None
            and case.meta.generation.mode == "positive"):
        return  # a request meant to be invalid stays as it was drawn
    drawn = body["file"]
    text = drawn.data.decode("latin-1") if isinstance(drawn, Binary) else drawn
    if isinstance(text, str) and not text.startswith(PDF_SIGNATURE):
        # A plain string, as the schema types the part: Schemathesis checks what a hook
        # changed against the schema again, and cannot read a Binary there.
        body["file"] = PDF_SIGNATURE + text
