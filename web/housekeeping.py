"""Housekeeping: tasks that run every so often by the clock, in a thread of their own.

Start-up tidies what a crash can leave (a report file no row names, an expired
session); a server that runs for months must tidy while it runs too, with or without
traffic, or what one crash left would stay for as long as it runs. So each task here
runs once per `interval` (an hour) by the clock the rest of the server uses, which a
test moves by hand:

    Housekeeping({"sweep": store.sweep}, interval=3600, clock=clock).start()

A thread wakes every `check_every` seconds of real time and runs what is due
(`run_due`). A task that fails is logged and tried again at its next turn: tidying
must never stop the server. The thread is a daemon and `stop()` ends it.
"""

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("meditrack.housekeeping")


class Housekeeping:
    def __init__(self, tasks: dict[str, Callable[[], None]], *, interval: float = 3600.0, clock=time.time,
                 check_every: float = 60.0):
        self.tasks = tasks
        self.interval = interval
        self.clock = clock
        self.check_every = check_every
        # Start-up has just done each task: the first turn is an interval away.
        self._next = {name: clock() + interval for name in tasks}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)

    def start(self) -> "Housekeeping":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def run_due(self) -> list[str]:
        """Run every task whose turn has come; the names of those that ran."""
        ran = []
        for name, task in self.tasks.items():
            if self.clock() < self._next[name]:
                continue
            self._next[name] = self.clock() + self.interval
            try:
                task()
            except Exception as exc:  # the store down, a file in use: next turn
                log.warning("housekeeping: %s failed (%s); tried again in %.0f s", name, type(exc).__name__,
                            self.interval)
            ran.append(name)
        return ran

    def _run(self) -> None:
        while not self._stopped.wait(self.check_every):
            self.run_due()
