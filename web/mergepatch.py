"""JSON Merge Patch (RFC 7396): a partial update written as the parts that change.

    stored  {"firstName": "Ada", "phone": "555", "address": {"city": "London", "line": "1 St"}}
    patch   {"phone": null, "address": {"city": "Paris"}}
    result  {"firstName": "Ada", "address": {"city": "Paris", "line": "1 St"}}

A member set to null is removed; an object is merged member by member; anything else
(a string, a number, a list) replaces what was there. The patch can say nothing
else: it cannot set a member to null, or change one element of a list. What a
patch does to a record is just this function; whether the result is a valid record
is the caller's question, asked of the result exactly as of a full PUT body.
"""


def merge_patch(target, patch):
    """RFC 7396 §2's MergePatch(Target, Patch), without changing either argument."""
    if not isinstance(patch, dict):
        return patch  # a patch that is not an object replaces the whole target
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result
