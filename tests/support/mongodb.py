"""A MongoDB database of its own for each test that asks for one.

MEDITRACK_TEST_MONGODB_URI names a server (`make test-mongo` starts one); without it
the suite runs on SQLite alone. Each test's database gets a fresh random name, so
tests never see each other's data, and is dropped when the test ends.
"""

import os
import secrets
from urllib.parse import urlsplit, urlunsplit

MONGODB_URI = os.environ.get("MEDITRACK_TEST_MONGODB_URI")


def fresh_mongodb_uri() -> str:
    """MEDITRACK_TEST_MONGODB_URI with a new database name of its own as the path."""
    parts = urlsplit(MONGODB_URI)
    return urlunsplit(parts._replace(path=f"/meditrack_test_{secrets.token_hex(6)}"))


def drop_mongodb_database(uri: str) -> None:
    import pymongo
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        client.drop_database(client.get_default_database())
