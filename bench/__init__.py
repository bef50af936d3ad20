"""`make bench`: the benchmark (`run.py`), its instruments (`measure.py`) and the ceiling server."""
