"""HTTP handlers, one module per resource: plain functions from a Request to a Response.

A handler's first parameters are the services it uses (`Accounts`, `PatientRecords`,
`Documents`, the store); `meditrack.py` binds them when it builds the route table, so
what a handler depends on is in its signature.

The web layer (`web/`) knows nothing of the store, so the application tells it which
of the store's errors deserve which status: `ERROR_STATUSES`, handed to the dispatcher.
"""

from storage import errors as store_errors

ERROR_STATUSES = {
    store_errors.NotFound: 404,      # no such record (or it vanished mid-request)
    store_errors.Conflict: 409,      # a unique key is taken, e.g. a username
    store_errors.VersionMismatch: 412,  # If-Match named a version that is no longer current
    store_errors.Unavailable: 503,   # the database cannot be reached or cannot answer
}
