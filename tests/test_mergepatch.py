"""web/mergepatch.py against RFC 7396 Appendix A: every example, as the RFC lists it."""

import copy

import pytest

from web.mergepatch import merge_patch

APPENDIX_A = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize("original, patch, result", APPENDIX_A, ids=[str(i + 1) for i in range(len(APPENDIX_A))])
def test_rfc_7396_appendix_a(original, patch, result):
    assert merge_patch(original, patch) == result


@pytest.mark.parametrize("original, patch, result", APPENDIX_A, ids=[str(i + 1) for i in range(len(APPENDIX_A))])
def test_neither_argument_is_changed(original, patch, result):
    original_before, patch_before = copy.deepcopy(original), copy.deepcopy(patch)
    merge_patch(original, patch)
    assert (original, patch) == (original_before, patch_before)
