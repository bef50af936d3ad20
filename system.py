"""What the operating system under MediTrack offers, asked in one place.

MediTrack runs on Linux, macOS and Windows with CPython 3.11 to 3.13. Nearly all of it
uses only what every system has. The few things that only some systems have are asked
about here, each in one named check, and only the code that needs one asks it:

    check                  what it answers                          who asks
    cpu_count()            the cores this process may run on        settings (--workers auto),
                                                                    the SQLite store, bcrypt
    CAN_FORK               os.fork exists (Linux, macOS)            settings (--workers N)
    CAN_SYNC_DIRECTORY     a directory can be opened and fsynced    sync_directory
    FULL_FSYNC             macOS: fsync alone does not reach        the SQLite store (PRAGMA
                           the disk; this fcntl command does        fullfsync), sync_file
    REUSE_ADDRESS_IS_SAFE  SO_REUSEADDR only helps a restart        web/server.py
    STOP_SIGNALS           the signals that ask for a clean stop    meditrack.py
    process_exists(pid)    whether a process of this machine runs   handlers/bulk_jobs.py (a
                                                                    sibling worker's job)

The worker machinery (the package web/workers/: fork, POSIX signals, fcntl record
locks) is imported only when `--workers` asks for more than one process, which
settings.py allows only where CAN_FORK.

What a 201 promises on each system (a report's bytes, and the row that names them):

- Linux: fsync(2) returns once the data is on stable storage (the drive's cache
  flushed), for the file and, opened as a directory, for the rename into it.
- macOS: fsync(2) only hands the data to the drive, which may keep it in its volatile
  cache across a power cut; the fcntl command F_FULLFSYNC asks the drive to write it
  through (fsync(2) and fcntl(2) on macOS). So report files are synced with it, and
  SQLite is told to do the same (`PRAGMA fullfsync`).
- Windows: os.fsync is FlushFileBuffers, which writes the file through the drive's
  cache. A directory cannot be opened as a file there, so the rename that puts a
  finished upload in place is left to NTFS's journal, which nothing here flushes. If a
  power cut loses the rename but not the row, the next start finds the upload's
  complete bytes under their temporary name and moves them into place
  (storage/sqlite/reports.py's sweep).
"""

import os
import signal

try:
    import fcntl  # POSIX only
except ImportError:  # Windows
    fcntl = None


def cpu_count() -> int:
    """The cores this process may run on, which taskset and container limits can make
    fewer than the machine has; every core where the system cannot tell."""
    if hasattr(os, "process_cpu_count"):   # Python 3.13+: the affinity mask where there is one
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):   # Linux on Python 3.11 and 3.12
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1             # macOS and Windows on Python 3.11 and 3.12


CAN_FORK = hasattr(os, "fork")

# O_DIRECTORY exists where a directory can be opened to fsync it (POSIX), and only there.
CAN_SYNC_DIRECTORY = hasattr(os, "O_DIRECTORY")

FULL_FSYNC = getattr(fcntl, "F_FULLFSYNC", None)  # macOS only

# NOTE: on POSIX, SO_REUSEADDR lets a restarted server bind its port while the old
# connections linger in TIME_WAIT. On Windows it means something else: a second process
# may bind the very port a running server listens on, and take some of its connections.
# socket.create_server leaves it off there for that reason; so does web/server.py.
REUSE_ADDRESS_IS_SAFE = os.name == "posix"

# Ctrl-C (SIGINT) and SIGTERM everywhere. Windows delivers no SIGTERM from another
# process; what a service manager can send a console program there is Ctrl-Break
# (GenerateConsoleCtrlEvent), which Python raises as SIGBREAK, a name only Windows has.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, *([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else []))


def process_exists(pid: int) -> bool:
    """Whether a process with this id runs on this machine. Asked with signal 0, which
    checks and delivers nothing (kill(2)). Only a worker asks about another process,
    and workers exist only where CAN_FORK: elsewhere no other process can be ours
    (and on Windows, os.kill with 0 would send Ctrl-C instead of asking)."""
    if not CAN_FORK:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


def sync_file(descriptor: int) -> None:
    """Return once the bytes written to this open file are on the disk, as far as the
    system can promise (see the list above)."""
    if FULL_FSYNC is not None:
        try:
            fcntl.fcntl(descriptor, FULL_FSYNC)
            return
        except OSError:
            pass  # a file system that cannot (some network and FAT volumes): fsync as SQLite does then
    os.fsync(descriptor)


def sync_directory(path) -> None:
    """Make the entries of a directory durable, a rename into it above all, where the
    system lets a directory be synced (POSIX); elsewhere nothing to do (see above)."""
    if not CAN_SYNC_DIRECTORY:
        return
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sync_file(descriptor)
    finally:
        os.close(descriptor)
