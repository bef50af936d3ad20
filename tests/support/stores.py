"""`open_test_store`: a fresh store of either kind, for tests that talk to the Store
interface directly (the store contract, sessions and erasure). The `store` fixture in
tests/conftest.py opens one on a FakeClock that starts at `START`."""

from storage.base import Store
from tests.support.mongodb import fresh_mongodb_uri

START = 1_700_000_000.0  # 2023-11-14T22:13:20Z: where a store's FakeClock starts


def open_test_store(kind: str, tmp_path, clock) -> Store:
    if kind == "sqlite":
        from storage.sqlite import SQLiteStore
        return SQLiteStore(tmp_path / "data", clock=clock)
    if kind == "mongodb":
        from storage.mongo import MongoStore
        return MongoStore(fresh_mongodb_uri(), clock=clock)
    raise ValueError(f"no test set-up for store {kind!r}")
