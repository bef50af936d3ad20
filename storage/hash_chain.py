"""The audit trail's hash chain: how an event is linked to the one before it, and how
a chain is checked (storage/audit_writer.py links events as it commits them).

The hash chain makes tampering visible. Every event carries
`hash = SHA-256(previous event's hash ‖ canonical JSON of this event)`, the first
event's "previous hash" being `GENESIS`; changing, removing or inserting one event
breaks the hash of the next one. One chain per writer, i.e. per process: a single
global chain would need every process, on every machine, to agree on "the previous
event" before writing one — a lock across the cluster on every request. Instead each
process starts its own chain (its id is a fresh ObjectId) and the store keeps each
chain's head (last sequence number and hash), so deleting the newest events of a
chain is caught too. `verify_chains` walks them all (`python meditrack.py verify-audit`).

What the chain cannot do: someone who can rewrite the database can rewrite a whole
chain from the altered event onwards, recomputing every hash. Copying the chain heads
somewhere else (they are printed by verify-audit) is what catches that.
"""

import hashlib
import json

from storage.base import Store

GENESIS = "0" * 64                  # the "previous hash" of a chain's first event


# One encoder, made once: json.dumps with options builds a new one on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(event: dict) -> bytes:
    """The one byte string an event hashes to: keys sorted, no spaces, UTF-8.

    For events (strings, integers and nulls under ASCII keys) this is exactly the JSON
    Canonicalization Scheme of RFC 8785, so a hash can be recomputed in any language
    from the stored event (the API shows only some of its fields).
    """
    return _CANONICAL.encode(event).encode("utf-8")


# Fields events gained after some were stored: hashed only when they hold a value, so
# an event stored before a field existed (and read back with it as null) verifies as it was.
ADDED_FIELDS = ("sessionId",)


def chain_hash(previous_hash: str, event: dict) -> str:
    """SHA-256(previous hash ‖ canonical JSON of every field of the event but `hash`,
    and but an ADDED_FIELDS field that is null)."""
    event = {name: value for name, value in event.items()
             if name != "hash" and not (name in ADDED_FIELDS and value is None)}
    return hashlib.sha256(previous_hash.encode("ascii") + canonical_json(event)).hexdigest()


class ChainBroken(Exception):
    """verify_chains found an event that was altered, removed or inserted."""


def verify_chains(store: Store, heads: list[dict] | None = None) -> tuple[int, int]:
    """Walk every chain in the store (against `heads`, as read beforehand, or read now);
    (chains, events) if all hold, else ChainBroken naming the first event where one breaks."""
    heads = {head["chain"]: head for head in (store.audit_chains() if heads is None else heads)}
    total = 0
    for chain in sorted(store.audit_chain_ids() | set(heads)):
        head = heads.get(chain)
        if head is None:
            raise ChainBroken(f"chain {chain} has events but no head: they were inserted")
        expected, previous_hash, last = head["firstSequence"], head["previousHash"], None
        for event in store.audit_events(chain):
            if event["sequence"] < expected:
                continue  # older than the retention cut, being purged
            where = f"event {event['id']} (chain {chain}, sequence {event['sequence']})"
            if event["sequence"] != expected:
                raise ChainBroken(f"{where}: the event with sequence {expected} before it was removed")
            if chain_hash(previous_hash, event) != event["hash"]:
                raise ChainBroken(f"{where}: altered, or inserted in place of the real one")
            if event["sequence"] == head["lastSequence"] and event["hash"] != head["lastHash"]:
                # Every hash chains on, but not to the head: the chain was rewritten up to here.
                raise ChainBroken(f"{where}: does not match the chain's head; the chain was rewritten")
            previous_hash, expected, last = event["hash"], expected + 1, event
            total += 1
        if expected <= head["lastSequence"]:
            after = f"after event {last['id']}" if last else "from its start"
            raise ChainBroken(f"chain {chain}: events {after} up to sequence {head['lastSequence']} were removed")
    return len(heads), total
