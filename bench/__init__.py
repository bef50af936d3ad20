"""`make bench`: the benchmark (`run.py`), its instruments (`measure.py`) and the ceiling server;
`make soak`: sustained load (`soak.py`). Both start MediTrack as a process (`processes.py`),
as the process and fault tests do; nothing here imports from `tests/`."""
