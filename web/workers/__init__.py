"""`--workers N`: several processes serving one port, and what they share.

A reader of the single-process server never needs to open this package: `meditrack.py`
imports it only when more than one worker is asked for, which settings.py allows only
where `os.fork` exists (system.py).

- `prefork.py`: the parent binds the port, forks the workers and supervises them
  (replaces the dead, drains on SIGTERM, reloads on SIGHUP);
- `sharedlimit.py`: the per-client rate limit, in memory every worker sees.
"""
