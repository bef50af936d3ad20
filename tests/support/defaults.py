"""`default_of`: a limit's default, read from the code that defines it.

A test about a limit should follow the code when the limit changes, not keep a copy
that silently drifts. Module constants are imported directly (`from web.http11 import
MAX_REQUEST_LINE`); a limit that is a parameter's default (`FailureBackoff(free_failures=5)`,
`Settings.max_json_bytes`) is read here from the signature that declares it.
"""

import inspect


def default_of(function, parameter: str):
    """The default value of `parameter` in `function`'s (or a class's, or a dataclass's)
    signature."""
    default = inspect.signature(function).parameters[parameter].default
    assert default is not inspect.Parameter.empty, f"{parameter} has no default"
    return default
