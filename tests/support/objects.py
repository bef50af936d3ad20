"""An S3 bucket of its own for each server or store a test starts, when the run has an object store.

MEDITRACK_TEST_S3_ENDPOINT, _ACCESS_KEY and _SECRET_KEY name a server (`make test-s3`
starts versitygw: tests/s3server.py); without them report bytes stay in the store's
own place (files, GridFS). Each bucket gets a fresh random name, so one test's sweep
never sees another's objects.
"""

import os
import secrets

from storage.s3.client import ObjectStore

S3_ENDPOINT = os.environ.get("MEDITRACK_TEST_S3_ENDPOINT")
S3_ACCESS_KEY = os.environ.get("MEDITRACK_TEST_S3_ACCESS_KEY")
S3_SECRET_KEY = os.environ.get("MEDITRACK_TEST_S3_SECRET_KEY")


def fresh_bucket(endpoint: str | None = None, **keys) -> ObjectStore:
    """A new empty bucket on the run's object store (or `endpoint`), as a client of it."""
    objects = ObjectStore(endpoint or S3_ENDPOINT, f"meditrack-test-{secrets.token_hex(6)}", region="us-east-1",
                          access_key=keys.get("access_key", S3_ACCESS_KEY),
                          secret_key=keys.get("secret_key", S3_SECRET_KEY))
    response = objects.request("PUT")  # CreateBucket: a PUT on the bucket's path
    response.read()
    response.close()
    assert response.status == 200, f"CreateBucket answered {response.status}"
    return objects


def object_store_settings() -> dict:
    """The Settings fields that put a server's report bytes in a fresh bucket; none
    when the run has no object store."""
    if not S3_ENDPOINT:
        return {}
    objects = fresh_bucket()
    return {"s3_endpoint": S3_ENDPOINT, "s3_bucket": objects.bucket, "s3_access_key": S3_ACCESS_KEY,
            "s3_secret_key": S3_SECRET_KEY}


def object_store_environment() -> dict:
    """The same, as a `python meditrack.py` process reads it."""
    settings = object_store_settings()
    return {f"MEDITRACK_{name.upper()}": value for name, value in settings.items()}
