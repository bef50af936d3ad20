"""`open_test_store`: a fresh store of either kind, for tests that talk to the Store
interface directly (the store contract, sessions and erasure). The `store` fixture in
tests/conftest.py opens one on a FakeClock that starts at `START`. `user_row_exists`
looks beneath the interface, where a test must see what the interface hides."""

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


def user_row_exists(store: Store, user_id: str) -> bool:
    """Whether the user's row is there at all, erasing or not: find_user and get_user
    hide a user being erased, so an erasure stopped after its first step would pass them."""
    if store.name == "sqlite":
        with store._connection() as db:
            return db.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is not None
    from bson import ObjectId
    return store._users.count_documents({"_id": ObjectId(user_id)}) > 0
