"""A client for one bucket of an S3-compatible object store, on `http.client`.

Requests are path-style (`<endpoint>/<bucket>/<key>`, which every S3-compatible server
accepts), each signed with AWS Signature Version 4 (storage/s3/sigv4.py) and sent on a
connection of its own. What the report stores need, and nothing else:

    check()                 HEAD the bucket: does it exist, and do the credentials work?
    put(key, file, size, sha256)   one PUT with Content-Length and x-amz-content-sha256:
                            the server checks the bytes against the hash before it stores them
    open(key, start, length)       GET, with a Range when only part is wanted
    delete(key)             DELETE (deleting a key that is not there succeeds)
    keys(prefix)            ListObjectsV2, page by page: every key under a prefix

`https` endpoints are verified with the default SSL context (the system's CA
certificates, the host name checked); plain `http` is for a server on this machine
(settings.py refuses it for any other host). A server that cannot be reached, or that
answers 5xx, is `Unavailable` (a 503 for the client); a refusal that retrying cannot
fix is `ObjectStoreError`, whose message names the cause.
"""

import http.client
import ssl
import time
import xml.etree.ElementTree as ElementTree
from typing import BinaryIO, Iterator
from urllib.parse import urlsplit

from storage.errors import StoreError, Unavailable
from storage.s3 import sigv4

TIMEOUT = 10.0              # seconds a connect, or a wait for the next bytes, may take
BLOCK = 64 * 1024           # bytes sent per write of a PUT's body
S3_NAMESPACE = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class ObjectStoreError(StoreError):
    """The object store refused a request for a reason retrying will not cure (wrong
    credentials, no such bucket)."""


class ObjectGone(StoreError):
    """The key names no object (404 on GET)."""


class ObjectStore:
    def __init__(self, endpoint: str, bucket: str, *, region: str, access_key: str, secret_key: str,
                 clock=time.time):
        parts = urlsplit(endpoint)
        self.endpoint, self.bucket, self.region = endpoint, bucket, region
        self._secure = parts.scheme == "https"
        self._host = parts.netloc             # what the Host header carries, port included
        self._base_path = parts.path.rstrip("/")
        self._access_key, self._secret_key = access_key, secret_key
        self._clock = clock
        self._tls = ssl.create_default_context() if self._secure else None

    # -- one signed request ---------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._secure:
            return http.client.HTTPSConnection(self._host, timeout=TIMEOUT, context=self._tls, blocksize=BLOCK)
        return http.client.HTTPConnection(self._host, timeout=TIMEOUT, blocksize=BLOCK)

    def request(self, method: str, key: str = "", *, query: list[tuple[str, str]] = (), headers: dict = None,
                body: BinaryIO | None = None, payload_hash: str = sigv4.EMPTY_PAYLOAD):
        """Send one signed request; the open response (read it, then close it). Only
        connection failures are handled here: the caller judges the status."""
        path = f"{self._base_path}/{self.bucket}" + (f"/{key}" if key else "")
        signed = {"host": self._host, "x-amz-date": sigv4.amz_date(self._clock()),
                  "x-amz-content-sha256": payload_hash, **(headers or {})}
        signed["Authorization"] = sigv4.authorization(method, path, list(query), signed, payload_hash,
                                                      access_key=self._access_key, secret_key=self._secret_key,
                                                      region=self.region)
        target = sigv4.uri_encode(path, keep_slash=True)
        if query:
            target += "?" + sigv4.canonical_query(list(query))
        connection = self._connection()
        try:
            connection.request(method, target, body=body, headers=signed)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise Unavailable("the object store cannot be reached") from exc
        response.connection = connection  # closed with the response (see _finish)
        return response

    @staticmethod
    def _finish(response) -> bytes:
        try:
            return response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable("the object store broke off its answer") from exc
        finally:
            response.close()
            response.connection.close()

    def _expect(self, response, *statuses: int) -> bytes:
        body = self._finish(response)
        if response.status in statuses:
            return body
        if response.status >= 500 or response.status == 429:
            raise Unavailable(f"the object store answered {response.status}")
        raise ObjectStoreError(f"the object store refused the request: {response.status} {_error_code(body)}")

    # -- what the stores ask --------------------------------------------------------------
    def check(self) -> None:
        """Return if the bucket exists and these credentials may use it; else say which is wrong."""
        response = self.request("HEAD")
        self._finish(response)
        if response.status == 200:
            return
        if response.status in (401, 403):
            raise ObjectStoreError(f"the object store at {self.endpoint} refused the access key or secret key "
                                   f"(HTTP {response.status})")
        if response.status == 404:
            raise ObjectStoreError(f"the object store at {self.endpoint} has no bucket named {self.bucket!r}")
        if response.status >= 500:
            raise Unavailable(f"the object store answered {response.status}")
        raise ObjectStoreError(f"the object store at {self.endpoint} answered HTTP {response.status}")

    def put(self, key: str, file: BinaryIO, size: int, sha256: str) -> None:
        response = self.request("PUT", key, body=file, payload_hash=sha256,
                                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
        self._expect(response, 200)

    def open(self, key: str, start: int = 0, length: int | None = None) -> "ObjectBody":
        """The object's bytes from `start`, `length` of them (or to the end), as a source
        `ReportChunks` reads; `ObjectGone` if there is no such object."""
        headers = {}
        if start or length is not None:
            headers["Range"] = f"bytes={start}-" + ("" if length is None else str(start + length - 1))
        response = self.request("GET", key, headers=headers)
        if response.status in (200, 206):
            return ObjectBody(response)
        body = self._finish(response)
        if response.status == 404:
            raise ObjectGone(key)
        if response.status == 416:  # an empty object asked from 0: nothing to read
            return ObjectBody(None)
        if response.status >= 500:
            raise Unavailable(f"the object store answered {response.status}")
        raise ObjectStoreError(f"the object store refused the request: {response.status} {_error_code(body)}")

    def delete(self, key: str) -> None:
        self._expect(self.request("DELETE", key), 200, 204)

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key that starts with `prefix`, a page of up to 1,000 at a time (ListObjectsV2)."""
        token = None
        while True:
            query = [("list-type", "2"), ("prefix", prefix)] + ([("continuation-token", token)] if token else [])
            page = ElementTree.fromstring(self._expect(self.request("GET", query=query), 200))
            for entry in page.iter(f"{S3_NAMESPACE}Contents"):
                yield entry.findtext(f"{S3_NAMESPACE}Key")
            if page.findtext(f"{S3_NAMESPACE}IsTruncated") != "true":
                return
            token = page.findtext(f"{S3_NAMESPACE}NextContinuationToken")


class ObjectBody:
    """An object's bytes as they arrive: `read(n)` and `close()`, what ReportChunks needs
    (the Range header already skipped the bytes before the start, so it never seeks)."""

    def __init__(self, response):
        self._response = response

    def read(self, size: int) -> bytes:
        if self._response is None:
            return b""
        try:
            return self._response.read(size)
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable("the object store broke off the download") from exc

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response.connection.close()


def _error_code(body: bytes) -> str:
    """The <Code> of an S3 error document, if the body is one."""
    try:
        return ElementTree.fromstring(body).findtext("Code") or ""
    except ElementTree.ParseError:
        return ""
