"""The audit trail beneath HTTP: the hash chain, the batching writer, and the store's
append-only audit methods, on both stores.

The chain's promise is checked the way an auditor would: events are altered, removed
and inserted directly in the database, and `verify_chains` must name the first event
where the chain breaks. The writer's promises: events arrive in batches, each once, in
order; a store that refuses them delays them but loses none; a full queue is reported
(dropped, backlog) instead of growing without bound.
"""

import hashlib
import json
import threading
from pathlib import Path

import pytest

from storage.audit_writer import AuditQuarantine, AuditWriter
from storage.base import PUBLIC_FIELDS
from storage.hash_chain import GENESIS, ChainBroken, canonical_json, chain_hash, verify_chains
from storage.errors import Unavailable
from storage.ids import new_id
from tests.support.stores import START, renumber_audit_chain, rewrite_audit_event, tamper_with_audit

DAY = 86_400
VIEWER, OTHER, STRANGER = new_id(), new_id(), new_id()
PATIENT_OF_VIEWER = new_id()


def event(number: int = 0, **fields) -> dict:
    """An event as the request pipeline hands it to the writer."""
    return {"action": "read", "outcome": 200, "userId": VIEWER, "clientAddress": "192.0.2.1",
            "requestId": f"request-{number}", "resourceType": "Patient", "resourceId": PATIENT_OF_VIEWER,
            "patientId": PATIENT_OF_VIEWER, "ownerId": VIEWER, **fields}


def write(store, events: list[dict], clock) -> AuditWriter:
    """Record events through a writer and close it (which commits them all)."""
    writer = AuditWriter(store, quarantine=scratch_quarantine(), clock=clock, flush_interval=0.002)
    for each in events:
        writer.record(each)
    assert writer.close()
    return writer


SCRATCH: list[Path] = []  # this test's temporary directory (the autouse fixture below)


@pytest.fixture(autouse=True)
def scratch_directory(tmp_path):
    SCRATCH[:] = [tmp_path]


def scratch_quarantine() -> AuditQuarantine:
    """A quarantine in the test's temporary directory."""
    return AuditQuarantine(SCRATCH[0] / "audit-quarantine.ndjson")


def stored_events(store) -> list[dict]:
    return [each for chain in sorted(store.audit_chain_ids()) for each in store.audit_events(chain)]


# -- the hash ----------------------------------------------------------------------------

def test_canonical_json_sorts_keys_and_has_no_spaces_rfc_8785():
    assert canonical_json({"b": 1, "a": None, "c": "é"}) == '{"a":null,"b":1,"c":"é"}'.encode("utf-8")


def test_an_events_hash_is_sha256_of_the_previous_hash_and_its_canonical_json():
    content = {"id": "1", "outcome": 200, "sequence": 1}
    expected = hashlib.sha256(GENESIS.encode() + b'{"id":"1","outcome":200,"sequence":1}').hexdigest()
    assert chain_hash(GENESIS, content) == expected
    assert chain_hash(GENESIS, {**content, "hash": "ignored: an event's own hash is not hashed"}) == expected
    assert chain_hash(expected, content) != expected  # the previous hash is part of it


def test_a_session_id_is_hashed_when_it_has_one_and_an_event_from_before_it_verifies_as_it_was():
    before = {"id": "1", "outcome": 200, "userId": None, "sequence": 1}  # stored before events named sessions
    expected = hashlib.sha256(GENESIS.encode() + b'{"id":"1","outcome":200,"sequence":1,"userId":null}').hexdigest()
    assert chain_hash(GENESIS, {**before, "sessionId": None}) == chain_hash(GENESIS, before) == expected
    named = chain_hash(GENESIS, {**before, "sessionId": "a" * 24})
    assert named != expected and named != chain_hash(GENESIS, {**before, "sessionId": "b" * 24})


def test_an_event_stored_without_a_session_id_reads_back_null_and_verifies(store, clock):
    writer = write(store, [event(1), event(2, sessionId="c" * 24)], clock)
    events = list(store.audit_events(writer.chain))
    assert [each["sessionId"] for each in events] == [None, "c" * 24]
    assert verify_chains(store) == (1, 2)
    assert [each["sessionId"] for each in store.list_audit(VIEWER, limit=5)] == ["c" * 24, None]


# -- the writer and the store ------------------------------------------------------------

def test_events_are_stored_once_each_in_order_with_an_intact_chain(store, clock):
    writer = write(store, [event(number) for number in range(250)], clock)
    events = stored_events(store)
    assert [each["requestId"] for each in events] == [f"request-{number}" for number in range(250)]
    assert [each["sequence"] for each in events] == list(range(1, 251))
    assert {each["chain"] for each in events} == {writer.chain}
    assert verify_chains(store) == (1, 250)
    assert writer.backlog == 0 and writer.dropped == 0


def test_events_from_many_threads_are_all_stored(store, clock):
    writer = AuditWriter(store, quarantine=scratch_quarantine(), clock=clock, flush_interval=0.002)
    threads = [threading.Thread(target=lambda n=n: [writer.record(event(n * 100 + i)) for i in range(100)])
               for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.close()
    assert sorted(each["requestId"] for each in stored_events(store)) == sorted(
        f"request-{n}" for n in range(800))
    assert verify_chains(store) == (1, 800)


def test_each_process_keeps_its_own_chain(store, clock):
    first = write(store, [event(1), event(2)], clock)
    second = write(store, [event(3)], clock)
    assert first.chain != second.chain
    assert verify_chains(store) == (2, 3)


def test_flush_commits_what_was_recorded_before_it(store, clock):
    # flush_interval=10: it would wait 5 s for company
    writer = AuditWriter(store, quarantine=scratch_quarantine(), clock=clock, flush_interval=10.0)
    writer.record(event(1))
    assert writer.flush(timeout=5)
    assert [each["requestId"] for each in stored_events(store)] == ["request-1"]
    writer.close()


def test_appending_a_batch_again_stores_nothing_twice(store, clock):
    writer = write(store, [event(1), event(2)], clock)
    batch = stored_events(store)
    store.append_audit(writer.chain, batch)  # a retry after an unclear failure
    assert stored_events(store) == batch
    assert verify_chains(store) == (1, 2)


class RefusingStore:
    """A store whose audit appends fail until `accept` is set: an outage, as the writer sees it."""

    def __init__(self, store):
        self.store = store
        self.accept = threading.Event()
        self.refused = 0

    def append_audit(self, chain, events):
        if not self.accept.is_set():
            self.refused += 1
            raise Unavailable("down")
        self.store.append_audit(chain, events)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_store_that_refuses_events_delays_them_and_loses_none(store, clock):
    refusing = RefusingStore(store)
    writer = AuditWriter(refusing, quarantine=scratch_quarantine(), clock=clock, flush_interval=0.002,
                         max_backlog=50)
    for number in range(30):
        writer.record(event(number))
    assert not writer.flush(timeout=0.2)  # nothing can be committed yet
    assert refusing.refused >= 1 and writer.backlog == 30 and not writer.full
    for number in range(30, 60):
        writer.record(event(number))
    assert writer.full and writer.dropped == 10  # the queue is bounded: 50 kept, 10 refused
    refusing.accept.set()
    assert writer.close()
    assert sorted(each["requestId"] for each in stored_events(store)) == sorted(
        f"request-{number}" for number in range(50))
    assert verify_chains(store) == (1, 50)


class UnreachableOwners:
    """A store whose patient look-ups fail (MongoDB down) until `answer` is set; it
    notes which threads asked."""

    def __init__(self, store):
        self.store = store
        self.answer = threading.Event()
        self.asked_from: set[str] = set()

    def patient_owner(self, patient_id):
        self.asked_from.add(threading.current_thread().name)
        if not self.answer.is_set():
            raise Unavailable("down")
        return self.store.patient_owner(patient_id)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_the_writer_finds_each_owner_the_request_did_not_know_and_waits_while_the_store_cannot_say(store, clock):
    owner = store.create_user("owner", b"h")["id"]
    patient = store.create_patient(owner, {"firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1815-12-10",
                                           "gender": "female", "email": None, "phone": None, "address": None,
                                           "bloodType": None, "allergies": [], "notes": None})
    missing = new_id()
    unreachable = UnreachableOwners(store)
    writer = AuditWriter(unreachable, quarantine=scratch_quarantine(), clock=clock, flush_interval=0.002)
    asked = event(1, userId=STRANGER, outcome=401, patientId=patient["id"], resourceId=patient["id"])
    del asked["ownerId"]                     # refused before any handler read the patient
    nobody = {**event(2, patientId=missing, resourceId=missing, outcome=404)}
    del nobody["ownerId"]                    # no such patient: no owner to find
    writer.record(asked)
    writer.record(nobody)
    writer.record(event(3))                  # the request knew its owner: nothing to look up
    assert not writer.flush(timeout=0.2)     # the store cannot say whose: nothing is stored without it
    assert stored_events(store) == [] and writer.backlog == 3
    unreachable.answer.set()
    assert writer.close()
    owners = {each["requestId"]: each["ownerId"] for each in stored_events(store)}
    assert owners == {"request-1": owner, "request-2": None, "request-3": VIEWER}
    assert unreachable.asked_from == {"audit-writer"}  # never a request's thread
    assert verify_chains(store) == (1, 3)


class PickyStore:
    """A store that refuses, for good, any batch holding an event of one request id (as
    a store refuses a value it cannot hold), and goes down once on the way if told to."""

    def __init__(self, store, poison: str, outage_after: int | None = None):
        self.store, self.poison, self.outage_after = store, poison, outage_after
        self.appends = 0

    def append_audit(self, chain, events):
        self.appends += 1
        if self.outage_after is not None and self.appends == self.outage_after:
            raise Unavailable("down for a moment")
        if any(event["requestId"] == self.poison for event in events):
            raise ValueError("the store cannot hold this event")
        self.store.append_audit(chain, events)

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.mark.parametrize("outage_after", [None, 5])
def test_an_event_the_store_refuses_for_good_is_quarantined_and_the_rest_commits(store, clock, outage_after):
    picky = PickyStore(store, poison="request-3", outage_after=outage_after)
    quarantine = scratch_quarantine()
    writer = AuditWriter(picky, quarantine=quarantine, clock=clock, flush_interval=0.002)
    for number in range(6):
        writer.record(event(number))
    assert writer.close(timeout=30)            # never blocked for good
    assert [each["requestId"] for each in stored_events(store)] == [f"request-{n}" for n in (0, 1, 2, 4, 5)]
    assert verify_chains(store) == (1, 5)      # the chain goes on without it
    assert writer.quarantined == quarantine.count() == 1
    kept = json.loads(quarantine.path.read_text(encoding="utf-8"))
    assert kept["requestId"] == "request-3" and "hash" not in kept and kept["ownerId"] == VIEWER


def test_events_past_the_retention_period_are_purged_and_the_chain_still_verifies(store, clock):
    writer = AuditWriter(store, quarantine=scratch_quarantine(), clock=clock, flush_interval=0.002,
                         retention_days=30)
    for number in range(5):
        writer.record(event(number))
    writer.flush()
    clock.advance(31 * DAY)
    for number in range(5, 8):
        writer.record(event(number))
    writer.close()
    store.purge_audit(_iso(clock() - 30 * DAY))
    assert [each["requestId"] for each in stored_events(store)] == ["request-5", "request-6", "request-7"]
    assert verify_chains(store) == (1, 3)


def _iso(seconds: float) -> str:
    from storage.base import utc_timestamp
    return utc_timestamp(seconds)


# -- tampering ---------------------------------------------------------------------------

@pytest.fixture
def chain_of_five(store, clock) -> list[dict]:
    write(store, [event(number) for number in range(5)], clock)
    return stored_events(store)


def test_verify_passes_on_an_untouched_store(store, chain_of_five):
    assert verify_chains(store) == (1, 5)


def test_an_edited_event_is_named(store, chain_of_five):
    tamper_with_audit(store, "edit", chain_of_five[2])
    with pytest.raises(ChainBroken, match=f"event {chain_of_five[2]['id']} .*altered"):
        verify_chains(store)


def test_a_removed_event_is_named_by_the_one_after_it(store, chain_of_five):
    tamper_with_audit(store, "delete", chain_of_five[2])
    with pytest.raises(ChainBroken, match=f"event {chain_of_five[3]['id']} .*sequence 3 before it was removed"):
        verify_chains(store)


def test_removing_the_newest_events_is_caught_by_the_chains_head(store, chain_of_five):
    tamper_with_audit(store, "delete", chain_of_five[4])
    with pytest.raises(ChainBroken, match=f"after event {chain_of_five[3]['id']} up to sequence 5 were removed"):
        verify_chains(store)


def test_an_event_inserted_in_the_middle_is_named(store, chain_of_five):
    renumber_audit_chain(store, chain_of_five[0]["chain"], 3)
    forged = {**chain_of_five[1], "id": new_id(), "sequence": 3, "requestId": "forged"}
    forged["hash"] = chain_hash(chain_of_five[1]["hash"], forged)  # even with a hash that fits before it
    tamper_with_audit(store, "insert", forged)
    # The forged event chains on from event 2; the real event 3, now numbered 4, does not chain on from it.
    with pytest.raises(ChainBroken, match=f"event {chain_of_five[2]['id']} .*altered, or inserted"):
        verify_chains(store)


def test_a_chain_rewritten_from_an_edit_on_with_every_hash_recomputed_is_caught_by_its_head(store, chain_of_five):
    previous_hash = chain_of_five[1]["hash"]
    for original in chain_of_five[2:]:
        rewritten = {**original, "outcome": 200 if original is not chain_of_five[2] else 204}
        rewritten["hash"] = previous_hash = chain_hash(previous_hash, rewritten)
        rewrite_audit_event(store, rewritten)
    forged = {**chain_of_five[4], "id": new_id(), "sequence": 6}
    forged["hash"] = chain_hash(previous_hash, forged)
    tamper_with_audit(store, "insert", forged)
    with pytest.raises(ChainBroken, match=f"event {chain_of_five[4]['id']} .*does not match the chain's head"):
        verify_chains(store)


def test_an_event_inserted_in_a_chain_of_its_own_is_caught(store, chain_of_five):
    forged = {**chain_of_five[0], "id": new_id(), "chain": new_id(), "sequence": 1}
    forged["hash"] = chain_hash(GENESIS, forged)
    tamper_with_audit(store, "insert", forged)
    with pytest.raises(ChainBroken, match="no head: they were inserted"):
        verify_chains(store)


# -- who may read which event ------------------------------------------------------------

def test_a_user_sees_their_own_events_and_those_on_their_patients_newest_first(store, clock):
    theirs = new_id()
    write(store, [event(1),                                                  # the viewer, on their patient
                  event(2, userId=OTHER, outcome=403),                       # another user, refused on it
                  event(3, userId=OTHER, patientId=theirs, resourceId=theirs, ownerId=OTHER),
                  event(4, userId=None, action="login-failed", resourceType="Session", resourceId=None,
                        patientId=None, ownerId=None),
                  event(5, action="search", resourceId=None, patientId=None, ownerId=None)], clock)
    seen = store.list_audit(VIEWER, limit=10)
    assert [each["requestId"] for each in seen] == ["request-5", "request-2", "request-1"]
    assert all(set(each) == set(PUBLIC_FIELDS) for each in seen)
    assert [each["requestId"] for each in store.list_audit(OTHER, limit=10)] == ["request-3", "request-2"]
    assert store.list_audit(STRANGER, limit=10) == []


def test_the_audit_filters_and_pages(store, clock):
    write(store, [event(number, action="read" if number % 2 else "update") for number in range(7)], clock)
    first = store.list_audit(VIEWER, limit=2, action="update")
    assert [each["requestId"] for each in first] == ["request-6", "request-4"]
    rest = store.list_audit(VIEWER, limit=10, action="update", before=first[-1]["id"])
    assert [each["requestId"] for each in rest] == ["request-2", "request-0"]
    assert len(store.list_audit(VIEWER, limit=10, patient_id=PATIENT_OF_VIEWER)) == 7
    assert store.list_audit(VIEWER, limit=10, patient_id=new_id()) == []


def test_a_purge_by_a_process_with_an_older_cut_off_moves_nothing_back(store, clock):
    writer = write(store, [event(number) for number in range(3)], clock)
    clock.advance(10 * DAY)
    write(store, [event(number) for number in range(3, 6)], clock)  # a second chain, newer
    store.purge_audit(_iso(clock() + 1))       # one process purges everything up to now
    store.purge_audit(_iso(clock() - 5 * DAY))  # another, behind it, purges again
    assert stored_events(store) == []
    assert {head["chain"]: head["firstSequence"] for head in store.audit_chains()}[writer.chain] == 4
    assert verify_chains(store) == (2, 0)


def test_events_start_at_the_clock_of_the_request(store, clock):
    write(store, [event(1)], clock)
    (stored,) = stored_events(store)
    assert stored["recorded"] == _iso(START)
    assert int(stored["id"][:8], 16) == int(START)
