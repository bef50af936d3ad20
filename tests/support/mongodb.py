"""A MongoDB database of its own for each test that asks for one.

MEDITRACK_TEST_MONGODB_URI names a server (`make test-mongo` starts one); without it
the suite runs on SQLite alone. Each test's database gets a fresh random name, so
tests never see each other's data, and is dropped when the test ends.
"""

import os
import secrets
from urllib.parse import urlsplit, urlunsplit

from tests.support.tcp import CLOSE_WAIT, tcp_sockets

MONGODB_URI = os.environ.get("MEDITRACK_TEST_MONGODB_URI")


def fresh_mongodb_uri() -> str:
    """MEDITRACK_TEST_MONGODB_URI with a new database name of its own as the path."""
    parts = urlsplit(MONGODB_URI)
    return urlunsplit(parts._replace(path=f"/meditrack_test_{secrets.token_hex(6)}"))


def drop_mongodb_database(uri: str) -> None:
    import pymongo
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        client.drop_database(client.get_default_database())


def connections_of_gone_clients(uri: str) -> int:
    """How many of the server's connections have lost their client (a killed process)
    and are still open on the server's side.

    NOTE: a server runs each connection's commands in order and closes the connection
    only once it reads its end, that is after the command it was running is done. So
    while the server holds such a connection, a command of the killed process may still
    be writing (a FerretDB insert can land after the kill -9). Read from Linux's socket
    table: a socket in CLOSE_WAIT on the server's port (RFC 9293 §3.3.2). It sees only a
    server on this machine, as the tests' FerretDB is.
    """
    port = urlsplit(uri).port or 27017
    return sum(1 for sock in tcp_sockets() if sock.local_port == port and sock.state == CLOSE_WAIT)
