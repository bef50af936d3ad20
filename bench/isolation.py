"""What a MongoDB-compatible server isolates: the facts the MongoDB store's design rests on.

    python tests/ferretdb.py -- python bench/isolation.py            # FerretDB over PostgreSQL
    FERRETDB_BACKEND=sqlite python tests/ferretdb.py -- python bench/isolation.py

storage/mongo/accounts.py and storage/mongo/versions.py avoid depending on an update's
isolation, because a compatible server need not give it. This checks, on the server
MEDITRACK_TEST_MONGODB_URI names, each thing they say about it:

- a filtered update used as a compare-and-set ({_id, version: N} → N + 1) from 16
  threads at once: how many "win" (MongoDB: exactly one);
- 16 threads each `$set` a different field of one document at once: how many fields
  survive (MongoDB: all 16);
- an insert under one `_id` from 16 threads: how many succeed (every server: one);
- a TTL index (`expireAfterSeconds`): accepted or refused;
- a multi-document transaction: accepted or refused;
- finding a document by `_id` near the start and the end of a 10,000-document
  collection (a scan would make the second slower).

It prints one line per fact, from 200 rounds of each race.
"""

import os
import statistics
import threading
import time

import pymongo
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

THREADS = 16
ROUNDS = 200


def race(work) -> list:
    """Run work(i) on THREADS threads released at once; their results."""
    start, results = threading.Barrier(THREADS), [None] * THREADS

    def run(i):
        start.wait(timeout=30)
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def compare_and_set(collection) -> list[int]:
    winners = []
    for round_number in range(ROUNDS):
        collection.insert_one({"_id": round_number, "version": 1})
        results = race(lambda i: collection.update_one({"_id": round_number, "version": 1},
                                                       {"$set": {"version": 2, "by": i}}).modified_count)
        winners.append(sum(results))
    return winners


def disjoint_sets(collection) -> list[int]:
    kept = []
    for round_number in range(ROUNDS):
        collection.insert_one({"_id": round_number})
        race(lambda i: collection.update_one({"_id": round_number}, {"$set": {f"field{i}": i}}))
        kept.append(len(collection.find_one({"_id": round_number})) - 1)
    return kept


def unique_inserts(collection) -> list[int]:
    def insert(round_number, i):
        try:
            collection.insert_one({"_id": f"{round_number}", "by": i})
            return 1
        except DuplicateKeyError:
            return 0
    return [sum(race(lambda i: insert(round_number, i))) for round_number in range(ROUNDS)]


def ttl_index(collection) -> str:
    try:
        collection.create_index("expiresAt", expireAfterSeconds=0)
        return "accepted"
    except OperationFailure as exc:
        return f"refused (code {exc.code}: {exc.details.get('errmsg', '')[:60]})"


def transaction(client, collection) -> str:
    try:
        with client.start_session() as session:
            with session.start_transaction():
                collection.insert_one({"_id": "in-transaction"}, session=session)
        return "accepted"
    except PyMongoError as exc:
        return f"refused ({type(exc).__name__}: {str(exc)[:60]})"


def lookup_ms(collection, document_id, times: int = 50) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        collection.find_one({"_id": document_id})
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def spread(counts: list[int]) -> str:
    return ", ".join(f"{value} in {counts.count(value)} rounds" for value in sorted(set(counts)))


def main() -> None:
    client = pymongo.MongoClient(os.environ["MEDITRACK_TEST_MONGODB_URI"], serverSelectionTimeoutMS=5000)
    database = client["isolation"]
    client.drop_database("isolation")
    try:
        print(f"compare-and-set by a filtered update, {THREADS} threads: winners "
              + spread(compare_and_set(database["cas"])))
        print(f"{THREADS} disjoint $set of one document: fields kept " + spread(disjoint_sets(database["sets"])))
        print(f"one _id inserted by {THREADS} threads: inserts that succeed " + spread(unique_inserts(database["ids"])))
        print("TTL index: " + ttl_index(database["ttl"]))
        print("multi-document transaction: " + transaction(client, database["tx"]))
        many = database["many"]
        many.insert_many([{"_id": number, "padding": "x" * 200} for number in range(10_000)])
        print(f"find by _id in 10,000 documents: the 10th {lookup_ms(many, 10):.2f} ms, "
              f"the 9,990th {lookup_ms(many, 9_990):.2f} ms (median of 50)")
    finally:
        client.drop_database("isolation")
        client.close()


if __name__ == "__main__":
    main()
