"""A login back-off's failure log in this process's memory (handlers/backoff.py's
`FailureLog`), for the back-off's unit tests: the store keeps the real one."""

import threading


class MemoryFailureLog:
    def __init__(self):
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()  # the back-off is used by many threads at once

    def record_login_failure(self, key: str, at: float, expires_at: float) -> None:
        with self._lock:
            self._failures.setdefault(key, []).append(at)

    def login_failures(self, key: str, limit: int) -> list[float]:
        with self._lock:
            return self._failures.get(key, [])[::-1][:limit]

    def forget_login_failures(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
