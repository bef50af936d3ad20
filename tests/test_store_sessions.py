"""The Store contract for sessions and account erasure, on every store.

A session is alive until it is ended or it expires; `rotate_refresh` is a
compare-and-set, so of any number of racing refreshes with one token exactly one wins;
`erase_user` leaves nothing the user owned: no row, no file, no GridFS chunk.

The clock starts an hour ahead of real time: on a MongoDB with TTL indexes, the server
deletes documents whose expiry is past by its own clock, and a session a test thinks
alive must be alive for it too.
"""

import secrets
import threading
import time

import pytest

from storage.base import utc_timestamp
from storage.errors import NotFound
from tests.support.clock import FakeClock
from tests.support.mongodb import drop_mongodb_database
from tests.support.records import PATIENT, write_report
from tests.support.stores import open_test_store, user_row_exists

DAY = 24 * 3600.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time() + 3600)


@pytest.fixture
def user(store) -> dict:
    return store.create_user("alice", b"$2b$04$hash-of-alice")


def session_of(store, user, clock, refresh_hash=None, lifetime=DAY) -> dict:
    """A new session; its refresh token's hash is random unless given (as a real one is)."""
    password_hash = store.find_user(user["username"])["passwordHash"]
    return store.create_session(user["id"], refresh_hash or secrets.token_hex(32), clock() + lifetime,
                                password_hash=password_hash)


# --- a session's life ---------------------------------------------------------------------


def test_a_new_session_is_alive_and_names_its_user(store, user, clock):
    session = session_of(store, user, clock)
    assert set(session) == {"id", "userId", "createdAt", "lastUsedAt", "expiresAt"}
    assert session["expiresAt"] == utc_timestamp(clock() + DAY)
    assert session["userId"] == user["id"] and session["createdAt"] == utc_timestamp(clock())
    found = store.session_user(session["id"], user["id"])
    assert {key: found[key] for key in ("id", "username", "createdAt")} == user
    assert found["sessionLastUsedAt"] == session["lastUsedAt"]


def test_a_session_is_not_another_users(store, user, clock):
    other = store.create_user("bob", b"hash")
    session = session_of(store, user, clock)
    assert store.session_user(session["id"], other["id"]) is None


@pytest.mark.parametrize("session_id", ["0" * 24, "not-an-id"])
def test_an_unknown_session_has_no_user(store, user, session_id):
    assert store.session_user(session_id, user["id"]) is None


def test_an_ended_session_has_no_user_and_cannot_end_twice(store, user, clock):
    session = session_of(store, user, clock)
    assert store.end_session(session["id"]) is True
    assert store.session_user(session["id"], user["id"]) is None
    assert store.end_session(session["id"]) is False


def test_a_session_ends_when_its_refresh_token_expires(store, user, clock):
    session = session_of(store, user, clock, lifetime=60)
    clock.advance(59)
    assert store.session_user(session["id"], user["id"]) is not None
    clock.advance(1)
    assert store.session_user(session["id"], user["id"]) is None
    assert store.list_sessions(user["id"]) == []


def test_end_session_for_a_user_ends_only_that_users_session(store, user, clock):
    other = store.create_user("bob", b"hash")
    session = session_of(store, user, clock)
    assert store.end_session(session["id"], other["id"]) is False
    assert store.session_user(session["id"], user["id"]) is not None
    assert store.end_session(session["id"], user["id"]) is True


def test_touch_moves_last_used(store, user, clock):
    session = session_of(store, user, clock)
    clock.advance(90)
    store.touch_session(session["id"])
    assert store.session_user(session["id"], user["id"])["sessionLastUsedAt"] == utc_timestamp(clock())


def test_list_sessions_gives_the_live_ones_newest_first(store, user, clock):
    first = session_of(store, user, clock)
    clock.advance(1)
    second = session_of(store, user, clock)
    clock.advance(1)
    ended = session_of(store, user, clock)
    store.end_session(ended["id"])
    session_of(store, store.create_user("bob", b"hash"), clock)
    assert [session["id"] for session in store.list_sessions(user["id"])] == [second["id"], first["id"]]
    assert store.list_sessions(user["id"])[0] == second


def test_end_sessions_ends_all_but_the_one_kept(store, user, clock):
    kept, *others = [session_of(store, user, clock) for _ in range(3)]
    store.end_sessions(user["id"], keep=kept["id"])
    assert [session["id"] for session in store.list_sessions(user["id"])] == [kept["id"]]
    store.end_sessions(user["id"])
    assert store.list_sessions(user["id"]) == []


# --- refresh: a compare-and-set ------------------------------------------------------------


def test_rotate_replaces_the_hash_once(store, user, clock):
    session = session_of(store, user, clock, refresh_hash="1" * 64)
    rotated = store.rotate_refresh(session["id"], "1" * 64, "2" * 64)
    assert rotated["id"] == session["id"] and rotated["userId"] == user["id"]
    # The old hash is retired: presenting it again matches nothing.
    assert store.rotate_refresh(session["id"], "1" * 64, "3" * 64) is None
    assert store.rotate_refresh(session["id"], "2" * 64, "3" * 64) is not None


def test_a_hash_the_session_never_had_does_not_rotate(store, user, clock):
    session = session_of(store, user, clock, refresh_hash="1" * 64)
    other = session_of(store, user, clock, refresh_hash="9" * 64)
    assert store.rotate_refresh(session["id"], "9" * 64, "2" * 64) is None  # another session's token
    assert store.rotate_refresh(other["id"], "9" * 64, "2" * 64) is not None


def test_rotation_does_not_extend_the_sessions_life(store, user, clock):
    session = session_of(store, user, clock, refresh_hash="1" * 64, lifetime=60)
    clock.advance(50)
    assert store.rotate_refresh(session["id"], "1" * 64, "2" * 64)["expiresAt"] == session["expiresAt"]
    clock.advance(10)
    assert store.session_user(session["id"], user["id"]) is None
    assert store.rotate_refresh(session["id"], "2" * 64, "3" * 64) is None


@pytest.mark.parametrize("state", ["ended", "expired"])
def test_rotate_of_a_dead_session_changes_nothing(store, user, clock, state):
    session = session_of(store, user, clock, refresh_hash="1" * 64, lifetime=60)
    if state == "ended":
        store.end_session(session["id"])
    else:
        clock.advance(60)
    assert store.rotate_refresh(session["id"], "1" * 64, "2" * 64) is None


def test_sixteen_racing_rotations_of_one_token_have_exactly_one_winner(store, user, clock):
    session = session_of(store, user, clock, refresh_hash="1" * 64)
    start, results = threading.Barrier(16), []

    def rotate(index):
        start.wait()
        results.append(store.rotate_refresh(session["id"], "1" * 64, f"{index:064d}"))

    threads = [threading.Thread(target=rotate, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 16
    assert sum(result is not None for result in results) == 1


# --- passwords and erasure ----------------------------------------------------------------


def test_set_password_replaces_the_hash(store, user):
    store.set_password(user["id"], b"$2b$04$new-hash")
    assert store.find_user("alice")["passwordHash"] == b"$2b$04$new-hash"


def owned_everything(store, user, clock, patients=3):
    """Patients with two reports each, and two sessions: what an erasure must remove."""
    for _ in range(patients):
        patient = store.create_patient(user["id"], dict(PATIENT))
        write_report(store, patient["id"])
        write_report(store, patient["id"], b"%PDF-1.7 another")
    session_of(store, user, clock)
    session_of(store, user, clock)


def test_erasure_leaves_nothing_the_user_owned_and_keeps_everyone_else(store, user, clock):
    other = store.create_user("bob", b"hash")
    owned_everything(store, other, clock, patients=1)
    kept_reports = store.stored_report_ids()
    owned_everything(store, user, clock)
    assert len(store.stored_report_ids()) == len(kept_reports) + 6
    store.erase_user(user["id"])
    assert not user_row_exists(store, user["id"])
    assert store.list_patients(user["id"], limit=100) == []
    assert store.list_sessions(user["id"]) == []
    assert store.stored_report_ids() == kept_reports  # no file, GridFS file or chunk left
    assert len(store.list_patients(other["id"], limit=100)) == 1 and len(store.list_sessions(other["id"])) == 2


def test_an_erased_username_can_be_registered_again(store, user):
    store.erase_user(user["id"])
    assert store.create_user("Alice", b"hash")["id"] != user["id"]


def test_an_erasure_interrupted_after_its_first_step_is_finished_when_the_store_opens(
        store_kind, tmp_path, clock, monkeypatch):
    store = open_test_store(store_kind, tmp_path, clock)
    user = store.create_user("alice", b"hash")
    owned_everything(store, user, clock)
    session = session_of(store, user, clock)

    def crash(*args):
        raise SystemExit("the process died here")

    # The crash comes after step 1 (account unusable, sessions gone), before the data goes.
    monkeypatch.setattr(store.accounts, "_finish_erasure", crash)
    with pytest.raises(SystemExit):
        store.erase_user(user["id"])
    assert store.find_user("alice") is None and user_row_exists(store, user["id"])  # marked, not gone
    assert store.session_user(session["id"], user["id"]) is None
    assert len(store.list_patients(user["id"], limit=100)) == 3  # half-way: data still there
    with pytest.raises(NotFound):
        store.create_patient(user["id"], dict(PATIENT))  # nothing new for an account being erased
    password_hash = b"hash"
    assert store.create_session(user["id"], secrets.token_hex(32), clock() + DAY, password_hash=password_hash) is None
    monkeypatch.undo()
    reopened = open_test_store(store_kind, tmp_path, clock) if store_kind == "sqlite" else \
        type(store)(store.uri, clock=clock)
    try:
        assert reopened.list_patients(user["id"], limit=100) == []
        assert reopened.stored_report_ids() == set()
        assert not user_row_exists(reopened, user["id"])
    finally:
        reopened.close()
        store.close()
        if store_kind == "mongodb":
            drop_mongodb_database(store.uri)


def test_no_session_starts_for_a_password_that_has_changed_since_it_was_checked(store, user, clock):
    old_hash = store.find_user("alice")["passwordHash"]
    store.set_password(user["id"], b"$2b$04$a-new-hash")
    # A login that checked the old password must not slip in after the change.
    assert store.create_session(user["id"], secrets.token_hex(32), clock() + DAY, password_hash=old_hash) is None
    assert store.list_sessions(user["id"]) == []
    assert session_of(store, user, clock) is not None


def test_a_session_knows_every_refresh_token_it_issued_and_no_other(store, user, clock):
    session = session_of(store, user, clock, refresh_hash="1" * 64)
    store.rotate_refresh(session["id"], "1" * 64, "2" * 64)
    assert store.refresh_token_issuer(session["id"], "1" * 64) == user["id"]   # spent, but ours: reuse
    assert store.refresh_token_issuer(session["id"], "2" * 64) == user["id"]   # current
    assert store.refresh_token_issuer(session["id"], "3" * 64) is None      # never ours: forged
    other = session_of(store, user, clock, refresh_hash="4" * 64)
    assert store.refresh_token_issuer(session["id"], "4" * 64) is None  # another session's
    assert store.refresh_token_issuer("not-an-id", "1" * 64) is None
    assert store.refresh_token_issuer(other["id"], "4" * 64) == user["id"]


def stored_session_count(store) -> int:
    """How many sessions the database holds, live or not: the one place here that looks
    beneath the interface, because a purge is invisible through it by design."""
    if store.name == "sqlite":
        with store.database.read() as db:
            return db.execute("SELECT count(*) FROM sessions").fetchone()[0]
    return store.database.sessions.count_documents({})


def test_expired_sessions_are_purged_so_the_table_does_not_grow(store, user, clock):
    for _ in range(3):
        session_of(store, user, clock, lifetime=60)
    clock.advance(2 * 3600)  # past their expiry, and past the purge interval
    session_of(store, user, clock)
    assert stored_session_count(store) == 1


# --- the failed-login log (handlers/backoff.py) ----------------------------------------------

def test_login_failures_come_back_newest_first_and_at_most_limit(store, clock):
    times = [clock() + offset for offset in (0.0, 1.5, 3.25, 7.0)]
    for at in times:
        store.record_login_failure("key-a", at, at + DAY)
    store.record_login_failure("key-b", clock(), clock() + DAY)
    assert store.login_failures("key-a", 10) == times[::-1]
    assert store.login_failures("key-a", 2) == [times[3], times[2]]
    assert store.login_failures("key-b", 10) == [clock()]
    assert store.login_failures("key-c", 10) == []


def test_forgetting_a_keys_failures_leaves_the_others(store, clock):
    store.record_login_failure("key-a", clock(), clock() + DAY)
    store.record_login_failure("key-b", clock(), clock() + DAY)
    store.forget_login_failures("key-a")
    assert store.login_failures("key-a", 10) == []
    assert store.login_failures("key-b", 10) == [clock()]


def test_an_expired_login_failure_is_not_returned(store, clock):
    store.record_login_failure("key-a", clock(), clock() + 60)
    store.record_login_failure("key-a", clock() + 1, clock() + 3600)
    clock.advance(61)
    assert store.login_failures("key-a", 10) == [clock() - 60]


def test_login_failures_logged_on_many_threads_are_all_kept(store, clock):
    # The log is insert-only, so racing failures (two workers at once) cannot lose one.
    threads, per_thread = 8, 10
    start = threading.Barrier(threads)

    def fail_many(number):
        start.wait(timeout=10)
        for index in range(per_thread):
            store.record_login_failure("key-a", clock() + number + index / 100, clock() + DAY)

    workers = [threading.Thread(target=fail_many, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert len(store.login_failures("key-a", 1000)) == threads * per_thread
