"""Download links for report files, which a browser can open as `<img src>` or `<a href>`.

A browser sends no bearer token with a plain GET, so a page could show a report only
by fetching it with script. `POST /patients/{p}/reports/{r}/link` instead hands out a
URL that carries its own proof, good for that one report, for a few minutes
(MEDITRACK_LINK_TTL, at most 300 s), and only while the session that asked for it lives:

    GET /patients/{p}/reports/{r}/link?token=<session id>.<user id>.<expires>.<password tag>.<signature>

    password tag = base64url(HMAC-SHA256(link key, the user's bcrypt hash))[:16]
    signature    = base64url(HMAC-SHA256(link key, "<p>.<r>.<session id>.<user id>.<expires>.<password tag>"))

The link key is an HMAC of the JWT key with a label of its own, so a link's signature
can never pass for a token's, nor the other way round. The path's patient and report
are signed, so a token moved onto another report's path fails its signature.

A GET checks, in this order, and answers the first failure:

    the token's shape                    403
    the signature (tampered, or another report's)   403
    the expiry (now ≥ expires)          410  (RFC 9110 §15.5.11, Gone: it was valid and is
                                               no more; only a link we signed can say so)
    the session: alive, and the user's   403  (logout, logout everywhere, an erasure)
    the password tag: still the user's   403  (a password change: it keeps the session
                                               that made it, but takes every link back)

then serves the download exactly as `GET /patients/{p}/reports/{r}` does (Range,
If-None-Match, the ETag), as the link's user: if the patient has changed hands or the
report is gone, the answer is that route's 403 or 404. A refusal's body is the same
for every link: it says nothing about the file. The audit event of a GET names the
link's user and its session (the event's sessionId).
"""

import base64
import binascii
import dataclasses
import hashlib
import hmac
import re
from functools import cached_property

from handlers import reports
from handlers.auth import Accounts
from handlers.inputs import base_url, path_id
from handlers.patients import PatientRecords
from storage.base import utc_timestamp
from storage.errors import NotFound
from web.messages import Request, Response, json_response
from web.problems import Forbidden, Gone

KEY_LABEL = b"meditrack report download link"
TOKEN = re.compile(r"([0-9a-f]{24})\.([0-9a-f]{24})\.([0-9]{1,12})\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{43})")
REFUSED = "this link is not valid, or no longer works; ask for a new one"


class ReportLinks:
    """Signs and checks download links with a key made from the accounts' JWT key."""

    def __init__(self, records: PatientRecords, accounts: Accounts, *, ttl: int, public_url: str | None):
        self.records = records
        self.accounts = accounts
        self.ttl = ttl
        self.public_url = public_url

    @cached_property
    def _key(self) -> bytes:
        """The link key, derived once, at the first link (the route table is built before
        the accounts need to exist, so not in __init__)."""
        return hmac.new(self.accounts.jwt_key, KEY_LABEL, hashlib.sha256).digest()

    def _mac(self, message: bytes) -> str:
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def password_tag(self, username: str) -> str | None:
        """A tag of the user's current password hash (not the hash): None if the user is gone."""
        user = self.records.store.find_user(username)
        return None if user is None else self._mac(user["passwordHash"])[:16]

    def token(self, patient_id: str, report_id: str, user: dict, expires: int) -> str:
        fields = f"{user['sessionId']}.{user['id']}.{expires}.{self.password_tag(user['username'])}"
        return f"{fields}.{self._mac(f'{patient_id}.{report_id}.{fields}'.encode('ascii'))}"

    def user_of(self, patient_id: str, report_id: str, token: str | None) -> dict:
        """The user a valid, live link acts for, with its "sessionId"; else Forbidden or Gone."""
        found = TOKEN.fullmatch(token or "")
        if found is None:
            raise Forbidden(REFUSED)
        session_id, user_id, expires, tag, signature = found.groups()
        expected = self._mac(f"{patient_id}.{report_id}.{session_id}.{user_id}.{expires}.{tag}".encode("ascii"))
        # NOTE: compare_digest takes as long wherever the first wrong byte is, so timing
        # cannot tell a forger how much of a signature was right. The signature is checked
        # before the store is asked anything: a forged link costs us one HMAC, no query.
        if not hmac.compare_digest(_unpadded_bytes(signature), _unpadded_bytes(expected)):
            raise Forbidden(REFUSED)
        if self.records.clock() >= int(expires):
            raise Gone("this link has expired; ask for a new one")
        user = self.records.store.session_user(session_id, user_id)
        if user is None or not hmac.compare_digest(tag, self.password_tag(user["username"]) or ""):
            raise Forbidden(REFUSED)  # the session ended, the user is gone, or the password changed
        return {"id": user["id"], "username": user["username"], "createdAt": user["createdAt"],
                "sessionId": session_id}


def _unpadded_bytes(text: str) -> bytes:
    """The signature's bytes, for a comparison in constant time."""
    try:
        return base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError):
        return b""


def create_link(links: ReportLinks, request: Request) -> Response:
    """POST /patients/{patientId}/reports/{reportId}/link: 201 {"url", "expiresAt"}."""
    patient = links.records.owned_patient(request)
    report = reports.report_of(patient, path_id(request, "reportId"))
    if report is None:
        raise NotFound("this patient has no report with this id")
    request.facts["resourceId"] = report["id"]  # for the audit event
    expires = int(links.records.clock()) + links.ttl
    token = links.token(patient["id"], report["id"], request.user, expires)
    url = f"{base_url(request, links.public_url)}/patients/{patient['id']}/reports/{report['id']}/link?token={token}"
    return json_response({"url": url, "expiresAt": utc_timestamp(expires)}, 201)


def open_link(links: ReportLinks, request: Request) -> Response:
    """GET /patients/{patientId}/reports/{reportId}/link?token=…: the report, with no Authorization."""
    patient_id, report_id = path_id(request, "patientId"), path_id(request, "reportId")
    tokens = request.query.get("token", [])
    user = links.user_of(patient_id, report_id, tokens[0] if len(tokens) == 1 else None)
    request.facts["userId"], request.facts["sessionId"] = user["id"], user["sessionId"]  # for the audit event
    return reports.download_report(links.records, dataclasses.replace(request, user=user))
