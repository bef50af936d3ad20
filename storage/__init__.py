"""Storage: one `Store` interface (`base.py`), two implementations, chosen once at start-up.

`open_store` picks MongoDB when a URI is configured and the embedded SQLite store
otherwise. pymongo is imported only on the MongoDB path, so the default mode needs
nothing beyond the standard library.
"""

import time
from pathlib import Path

from storage.base import Store


def open_store(data_dir: Path, mongodb_uri: str | None = None, *, clock=time.time, objects=None) -> Store:
    """`objects`: an ObjectStore (storage/s3/client.py) for report bytes, or None for the
    store's own place (files beside the SQLite database, or GridFS)."""
    if mongodb_uri:
        from storage.mongo import MongoStore
        return MongoStore(mongodb_uri, clock=clock, objects=objects)
    from storage.sqlite import SQLiteStore
    return SQLiteStore(data_dir, clock=clock, objects=objects)
