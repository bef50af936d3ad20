"""docs/request-path.md against the code: its hops must be exactly the product functions
that the thread serving a second authenticated GET /patients/{id} enters, in the order it
first enters them, but for what the guide's rule leaves out (private helpers and
constructors). The trace is bench/trace.py's, the one `python bench/trace.py` prints."""

import re
from pathlib import Path

from bench.trace import trace_second_read

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "request-path.md"
HOP = re.compile(r"^(\d+)\. `([^`]+)` `([^`]+)` — ", re.MULTILINE)


def is_hop(qualified_name: str) -> bool:
    """The guide's rule: every function but private helpers (`_name`), constructors, and the
    lambdas and comprehensions inside a function."""
    name = qualified_name.rsplit(".", 1)[-1]
    return not (name.startswith("<") or name == "__init__" or (name.startswith("_") and not name.startswith("__")))


def guide_hops() -> list[tuple[str, str]]:
    found = HOP.findall(GUIDE.read_text(encoding="utf-8"))
    assert [int(number) for number, _, _ in found] == list(range(1, len(found) + 1)), "hops numbered 1, 2, 3 …"
    return [(path, name) for _, path, name in found]


def test_the_guide_lists_exactly_the_functions_the_serving_thread_enters_in_order():
    traced = [function for function in trace_second_read().functions if is_hop(function[1])]
    assert guide_hops() == traced


def test_the_trace_has_the_jwt_on_the_path():
    entered = {name for path, name in trace_second_read().functions if path == "web/jwt.py"}
    assert {"verify", "_check_signature", "_check_expiry"} <= entered
