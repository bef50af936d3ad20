"""Pre-fork workers: one parent binds the port, forks N processes that serve it, and keeps them.

One Python process runs Python on one core at a time (the GIL), so a second core needs a
second process. The design gunicorn's arbiter, uvicorn's `--workers` and nginx's worker
processes share, and the one here:

    parent: bind + listen ──fork──▶ worker 1: accept() on the same socket → serve
                          ──fork──▶ worker 2: accept() on the same socket → serve
            then supervise: wait for a signal or a child's death, act, repeat

- **One socket, many acceptors.** The listening socket is made before the fork, so every
  worker inherits it; the kernel hands each new connection to one worker that is
  waiting in accept(). Nothing is proxied: a worker talks to its client directly.
- **A worker that dies is replaced.** If workers keep dying young (within
  `YOUNG_DEATH` seconds of starting: a bad setting, the database down) the next one
  waits longer each time (0.5 s, 1 s, 2 s … 30 s), so a crash loop does not spin a core.
- **SIGTERM or SIGINT: drain.** Each worker gets SIGTERM, stops accepting and finishes
  the requests it has within the grace period (web/server.py's drain); one still
  running 5 s after that is killed. The parent exits 0 once all are gone.
- **A supervisor that dies** without stopping its workers (kill -9, the OOM killer)
  leaves no worker behind: each notices within `ORPHAN_CHECK` seconds that its parent
  has changed, and drains and exits as on SIGTERM.
- **SIGHUP: a graceful reload.** Workers are replaced one at a time: a new one is
  started and reports ready (it opened its store) before an old one is told to drain.
  The socket stays open in the parent throughout, so no connection is refused. The new
  workers are forks of the same parent: they get fresh processes (memory, connections),
  not new code or settings, which take a restart.

The parent itself never serves. What it made before forking, the workers share: the
socket, and what the caller made for them (meditrack.py: the rate-limit table). Each
worker opens its own store after the fork (a database connection must not be shared by
two processes). Signals reach the parent's loop through `signal.set_wakeup_fd`, a pipe
its `select` waits on, so a handler does nothing but note the signal.
"""

import logging
import os
import select
import signal
import socket
import threading
import time
from typing import Callable

log = logging.getLogger("meditrack.workers")

YOUNG_DEATH = 5.0       # a worker that dies sooner than this after starting died young
MAX_RESTART_DELAY = 30.0
READY_TIMEOUT = 30.0    # seconds a new worker may take to open its store on a reload
ORPHAN_CHECK = 0.25     # seconds between a worker's checks that its supervisor is alive


def supervised_signals() -> set[int]:
    """The signals the parent acts on. SIGHUP and SIGCHLD are POSIX only: this module is
    used only where os.fork exists (settings.py refuses `--workers` elsewhere, system.py)."""
    return {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}


class Supervisor:
    """Keeps `workers` processes running `serve(listener, ready)` on one listening socket.

    `serve` runs in each child: it must call `ready()` once it can serve, and return (its
    exit status) after SIGTERM, having drained within `grace` seconds."""

    def __init__(self, listener: socket.socket, serve: Callable[[socket.socket, Callable[[], None]], int], *,
                 workers: int, grace: float, clock=time.monotonic):
        self.listener = listener
        # NOTE: non-blocking, and this matters. Every idle worker waits in select() on
        # the one socket, and a new connection wakes them all; one accept() gets it. On
        # a blocking socket the others would then block in accept() until the next
        # connection, deaf to a shutdown: such a worker never drains, and is killed
        # after the grace period. Non-blocking, their accept() fails with EAGAIN and
        # they go back to select(). The flag belongs to the socket all workers share.
        listener.setblocking(False)
        self.serve = serve
        self.signals = supervised_signals()
        self.size = workers
        self.grace = grace
        self.clock = clock
        self.children: dict[int, float] = {}  # pid → when it started
        self.young_deaths = 0                 # in a row
        self.told_to_stop: set[int] = set()   # workers sent SIGTERM by us
        self.wakeup: tuple[int, int] = (-1, -1)  # the pipe the signal handlers write to (run)

    # -- the children -----------------------------------------------------------------
    def spawn(self) -> tuple[int, int]:
        """Fork one worker; its pid and the read end of the pipe it reports ready on."""
        ready_read, ready_write = os.pipe()
        supervisor = os.getpid()
        # NOTE: the supervised signals wait (blocked) while the child is made. Until it
        # has its own handlers, one sent to it would run the parent's and write to the
        # parent's wakeup pipe: a SIGTERM meant for one new worker would stop them all.
        signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)
            raise
        if pid == 0:  # the child: serve, then leave without running the parent's cleanup
            status = 1
            try:
                os.close(ready_read)
                signal.set_wakeup_fd(-1)
                for fd in self.wakeup:
                    if fd >= 0:
                        os.close(fd)
                for number in self.signals:
                    signal.signal(number, signal.SIG_DFL)  # serve() installs its own for SIGTERM, SIGINT
                # A hang-up of the terminal, or SIGHUP sent to the whole process group,
                # is the parent's to act on (a reload), never a worker's death.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)
                threading.Thread(target=_stop_when_orphaned, args=(supervisor,), daemon=True,
                                 name="supervisor-watch").start()
                status = self.serve(self.listener, lambda: _report_ready(ready_write))
            except BaseException:  # noqa: BLE001 — whatever happened, the child must not return into the parent's loop
                log.exception("worker %d failed", os.getpid())
            finally:
                os._exit(status)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)
        os.close(ready_write)
        self.children[pid] = self.clock()
        log.info("worker %d started", pid)
        return pid, ready_read

    def reap(self) -> list[int]:
        """Collect the children that have exited; their pids."""
        gone = []
        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            started = self.children.pop(pid, None)
            if started is None:
                continue
            gone.append(pid)
            lived = self.clock() - started
            if pid in self.told_to_stop:  # a reload or a shutdown: not a death to back off from
                self.told_to_stop.discard(pid)
            else:
                self.young_deaths = self.young_deaths + 1 if lived < YOUNG_DEATH else 0
            log.info("worker %d exited (%s) after %.1f s", pid, _describe(status), lived)
        return gone

    def restart_delay(self) -> float:
        return 0.0 if self.young_deaths == 0 else min(MAX_RESTART_DELAY, 0.5 * 2 ** (self.young_deaths - 1))

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> int:
        """Supervise until SIGTERM or SIGINT has drained every worker; the exit status."""
        self.wakeup = wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(wakeup_write, False)
        signal.set_wakeup_fd(wakeup_write)
        for number in self.signals:
            signal.signal(number, lambda signum, frame: None)  # the wakeup fd carries the number
        for _ in range(self.size):
            os.close(self.spawn()[1])
        next_spawn = None
        while True:
            ready, _, _ = select.select([wakeup_read], [], [], 0.5)
            received = set(os.read(wakeup_read, 512)) if ready else set()
            if received & {signal.SIGTERM, signal.SIGINT}:
                return self.stop_all()
            self.reap()
            if signal.SIGHUP in received:
                self.reload()
            missing = self.size - len(self.children)
            if missing > 0:
                now = self.clock()
                next_spawn = next_spawn or now + self.restart_delay()
                if now >= next_spawn:
                    os.close(self.spawn()[1])
                    next_spawn = None

    def reload(self) -> None:
        """Replace every worker, one at a time, each only once its successor is ready."""
        log.info("reloading %d workers", len(self.children))
        for old in list(self.children):
            new, ready = self.spawn()
            waited = _wait_ready(ready, READY_TIMEOUT)
            os.close(ready)
            if not waited:
                log.error("worker %d did not become ready: killed; keeping worker %d", new, old)
                os.kill(new, signal.SIGKILL)  # it serves no one yet; reap() collects it
                continue
            self._stop(old)

    def _stop(self, pid: int) -> None:
        self.told_to_stop.add(pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = self.clock() + self.grace + 5
        while pid in self.children and self.clock() < deadline:
            self.reap()
            time.sleep(0.05)
        if pid in self.children:
            os.kill(pid, signal.SIGKILL)

    def stop_all(self) -> int:
        """SIGTERM to every worker; those still there after the grace period are killed."""
        log.info("stopping %d workers", len(self.children))
        for pid in self.children:
            os.kill(pid, signal.SIGTERM)
        deadline = self.clock() + self.grace + 5  # their drain, and a moment to exit
        while self.children and self.clock() < deadline:
            self.reap()
            time.sleep(0.05)
        for pid in list(self.children):
            log.error("worker %d did not stop in time: killed", pid)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.children.pop(pid)
        self.listener.close()
        return 0


def _stop_when_orphaned(supervisor: int) -> None:
    """In a worker: drain and exit, as on SIGTERM, once the supervisor is gone.

    NOTE: a supervisor that dies without stopping its workers (kill -9, the OOM killer,
    a service manager's final SIGKILL) would leave them serving the socket unsupervised,
    and a restart on the same port would fail. A child whose parent has died is handed
    to another process, so its parent's pid changes: asked every ORPHAN_CHECK seconds."""
    while os.getppid() == supervisor:
        time.sleep(ORPHAN_CHECK)
    log.warning("worker %d: the supervisor %d is gone; stopping", os.getpid(), supervisor)
    os.kill(os.getpid(), signal.SIGTERM)


def _report_ready(fd: int) -> None:
    log.info("worker %d ready", os.getpid())
    try:
        os.write(fd, b"r")
    except BrokenPipeError:
        pass  # the parent was not waiting for it (only a reload does)
    finally:
        os.close(fd)


def _wait_ready(fd: int, timeout: float) -> bool:
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready) and os.read(fd, 1) == b"r"


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"status {os.waitstatus_to_exitcode(status)}"
