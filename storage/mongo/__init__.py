"""The MongoDB store, used when `MONGODB_URI` is set: pymongo, report bytes in GridFS.

A reader of the embedded store never needs this package (pymongo is imported only
here). Read in this order: `store.py` (`MongoStore`: users, patients, reports),
`versions.py` (a patient's changes, claimed and then applied), `accounts.py`
(sessions, refresh tokens, failed logins, account erasure) and `audit_log.py` (the
audit trail's collections).
"""

from storage.mongo.store import MongoStore

__all__ = ["MongoStore"]
