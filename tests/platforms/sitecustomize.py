"""A simulated macOS or Windows for tests/test_platforms.py: before MediTrack starts,
take away what CPython lacks on that system.

Python runs `sitecustomize` at start-up when it is on the path, so a child process
started with this directory on PYTHONPATH and MEDITRACK_SIMULATE=macos (or windows)
has, from its first line of code, a Python whose `os`, `signal`, `select`, `socket`,
`time` and `fcntl` look as the Python documentation's "Availability" notes say they do
on that system. Without MEDITRACK_SIMULATE it changes nothing (the test imports it to
list what it removes).

What a shim cannot show is said in docs/platforms.md: the file system's own rules
(Windows refuses to remove or replace a file that is open), `os.name`, `sys.platform`
and path syntax, which the standard library reads at import to choose its own code
(pathlib, subprocess), and the behaviour of the calls that remain.
"""

import os
import sys

# (module, name, the documentation that says the system lacks it)
MACOS = [
    ("os", "sched_getaffinity", "os, Interface to the scheduler: only on some Unix platforms (Linux)"),
    ("os", "sched_setaffinity", "os, Interface to the scheduler: only on some Unix platforms (Linux)"),
    ("os", "fdatasync", "os.fdatasync: not available on macOS"),
    ("os", "pipe2", "os.pipe2: Unix, where pipe2(2) exists (macOS has none)"),
    ("os", "memfd_create", "os.memfd_create: Availability: Linux"),
    ("os", "eventfd", "os.eventfd: Availability: Linux"),
    ("os", "posix_fallocate", "os.posix_fallocate: not on macOS (no posix_fallocate(3))"),
    ("os", "getxattr", "os, Linux extended attributes: Availability: Linux"),
    ("select", "epoll", "select.epoll: Availability: Linux"),
]

# Left in place although Windows lacks them: the standard library's own POSIX code reads
# them at import (subprocess: os.WNOHANG), since sys.platform still says Linux.
WINDOWS = [
    ("os", "fork", "os, Process Management: fork(): Availability: POSIX"),
    ("os", "forkpty", "os, Process Management: forkpty(): Availability: Unix"),
    ("os", "register_at_fork", "os, Process Management: register_at_fork(): Availability: Unix"),
    ("os", "wait", "os, Process Management: wait(): Availability: Unix"),
    ("os", "WIFSIGNALED", "os, Process Management: WIFSIGNALED(): Availability: Unix"),
    ("os", "WTERMSIG", "os, Process Management: WTERMSIG(): Availability: Unix"),
    ("os", "killpg", "os, Process Management: killpg(): Availability: Unix"),
    ("os", "setsid", "os, Process Parameters: setsid(): Availability: Unix"),
    ("os", "getuid", "os, Process Parameters: getuid(): Availability: Unix"),
    ("os", "geteuid", "os, Process Parameters: geteuid(): Availability: Unix"),
    ("os", "getgid", "os, Process Parameters: getgid(): Availability: Unix"),
    ("os", "sched_getaffinity", "os, Interface to the scheduler: only on some Unix platforms (Linux)"),
    ("os", "sched_setaffinity", "os, Interface to the scheduler: only on some Unix platforms (Linux)"),
    ("os", "O_DIRECTORY", "os, open() flag constants: O_DIRECTORY is among those only on Unix"),
    ("os", "O_NOFOLLOW", "os, open() flag constants: O_NOFOLLOW is among those only on Unix"),
    ("os", "O_NONBLOCK", "os, open() flag constants: O_NONBLOCK is among those only on Unix"),
    ("os", "fdatasync", "os.fdatasync: Availability: Unix"),
    ("os", "pipe2", "os.pipe2: Availability: Unix"),
    ("os", "statvfs", "os.statvfs: Availability: Unix"),
    ("os", "sync", "os.sync: Availability: Unix"),
    ("os", "getloadavg", "os.getloadavg: Availability: Unix"),
    ("signal", "SIGHUP", "signal, Module contents: SIGHUP: Availability: Unix"),
    ("signal", "SIGCHLD", "signal, Module contents: SIGCHLD: Availability: Unix"),
    ("signal", "SIGKILL", "signal, Module contents: SIGKILL: Availability: Unix"),
    ("signal", "SIGQUIT", "signal, Module contents: SIGQUIT: Availability: Unix"),
    ("signal", "SIGALRM", "signal, Module contents: SIGALRM: Availability: Unix"),
    ("signal", "SIGUSR1", "signal, Module contents: SIGUSR1: Availability: Unix"),
    ("signal", "SIGPIPE", "signal, Module contents: SIGPIPE: Availability: Unix"),
    ("signal", "pthread_sigmask", "signal.pthread_sigmask: Availability: Unix"),
    ("signal", "pthread_kill", "signal.pthread_kill: Availability: Unix"),
    ("signal", "sigwait", "signal.sigwait: Availability: Unix"),
    ("signal", "siginterrupt", "signal.siginterrupt: Availability: Unix"),
    ("signal", "setitimer", "signal.setitimer: Availability: Unix"),
    ("signal", "alarm", "signal.alarm: Availability: Unix"),
    ("select", "poll", "select.poll: not supported by all operating systems (not Windows)"),
    ("select", "epoll", "select.epoll: Availability: Linux"),
    ("socket", "AF_UNIX", "socket, Socket families: AF_UNIX: Availability: Unix"),
    ("socket", "SO_REUSEPORT", "socket, Constants: SO_REUSEPORT: not on Windows"),
    ("time", "clock_gettime", "time.clock_gettime: Availability: Unix"),
    ("time", "CLOCK_MONOTONIC", "time, Clock ID Constants: CLOCK_MONOTONIC: Availability: Unix"),
]

# Modules Windows does not have at all: importing one raises ImportError.
WINDOWS_MISSING_MODULES = [
    ("fcntl", "fcntl: Availability: Unix"),
    ("resource", "resource: Availability: Unix"),
    ("pwd", "pwd: Availability: Unix"),
    ("grp", "grp: Availability: Unix"),
    ("termios", "termios: Availability: Unix"),
    ("pty", "pty: Availability: Unix"),
    ("syslog", "syslog: Availability: Unix"),
]

# What macOS has and Linux lacks, added so the code that uses it runs: F_FULLFSYNC,
# answered here by fsync (macOS's fcntl(2) makes the drive write its cache through).
MACOS_ADDED = [("fcntl", "F_FULLFSYNC", "fcntl(2) on macOS: F_FULLFSYNC; Python exposes it where the C library "
                                         "defines it")]
F_FULLFSYNC = 51  # its value in macOS's <sys/fcntl.h>


def _remove(table) -> None:
    # MEDITRACK_SIMULATE_KEEP=os.getuid,...: names to leave for a tool that, believing
    # sys.platform, needs them (pytest's tmp_path calls os.getuid unless on win32).
    kept = set(filter(None, os.environ.get("MEDITRACK_SIMULATE_KEEP", "").split(",")))
    for module_name, name, _ in table:
        if f"{module_name}.{name}" in kept:
            continue
        module = __import__(module_name)
        if hasattr(module, name):
            delattr(module, name)
    if not hasattr(os, "sched_getaffinity") and hasattr(os, "process_cpu_count"):
        # Python 3.13's os.py chose, at import, a process_cpu_count that calls
        # sched_getaffinity; where that is missing it makes it cpu_count instead.
        os.process_cpu_count = os.cpu_count


def _refuse_directories(real_open=os.open):
    """Windows cannot open a directory as a file (CreateFile needs a flag os.open does not pass)."""
    def open_like_windows(path, flags, mode=0o777, *, dir_fd=None):
        if dir_fd is None and os.path.isdir(path):
            raise PermissionError(13, "Permission denied (simulated Windows: a directory cannot be opened)", path)
        return real_open(path, flags, mode, dir_fd=dir_fd)
    os.open = open_like_windows


def _windows() -> None:
    _remove(WINDOWS)
    for module_name, _ in WINDOWS_MISSING_MODULES:
        sys.modules[module_name] = None  # `import fcntl` now raises ImportError, as on Windows
    _refuse_directories()
    # Windows' default text encoding is the ANSI code page, not UTF-8: a file opened in
    # text mode without an encoding would read differently there. Python says so with
    # an EncodingWarning (PYTHONWARNDEFAULTENCODING=1, set by the test), made an error here.
    import warnings
    warnings.simplefilter("error", EncodingWarning)


def _macos() -> None:
    _remove(MACOS)
    import fcntl
    real_fcntl = fcntl.fcntl
    count = os.environ.get("MEDITRACK_SIMULATED_FULLFSYNC_LOG")

    def fcntl_like_macos(fd, command, arg=0):
        if command != F_FULLFSYNC:
            return real_fcntl(fd, command, arg)
        os.fsync(fd)
        if count:
            with open(count, "a", encoding="ascii") as log:
                log.write("F_FULLFSYNC\n")
        return 0

    fcntl.F_FULLFSYNC = F_FULLFSYNC
    fcntl.fcntl = fcntl_like_macos


SIMULATIONS = {"macos": _macos, "windows": _windows}

if os.environ.get("MEDITRACK_SIMULATE"):
    SIMULATIONS[os.environ["MEDITRACK_SIMULATE"]]()
