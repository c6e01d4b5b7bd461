"""The storable checks: one walk of a JSON value answers both "is there bad text" and "which"."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contact_sync.api.params import parse_json
from contact_sync.errors import ValidationFailed
from contact_sync.storable import has_unstorable, is_storable_text, unstorable_text

# Text that is often unstorable: NUL and lone surrogates among ordinary characters.
TEXT = st.text(alphabet=st.sampled_from(["a", "é", "\x00", "\ud800", "\udfff", " "]), max_size=4)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@given(JSON)
def test_unstorable_text_is_found_exactly_when_some_text_is_unstorable(value: Any) -> None:
    found = unstorable_text(value)
    assert has_unstorable(value) == (found is not None)
    assert found is None or not is_storable_text(found)


@pytest.mark.parametrize(
    ("raw", "details"),
    [
        (b'{"a": "x\\u0000"}', {"a": "Must not contain NUL characters"}),
        (b'{"a": "x\\ud800"}', {"a": "Must be valid Unicode text"}),
        (b'["fine", "x\\ud800"]', {"body": "Must be valid Unicode text"}),
    ],
)
def test_a_body_with_unstorable_text_says_where_and_why(
    raw: bytes, details: dict[str, str]
) -> None:
    with pytest.raises(ValidationFailed) as failed:
        parse_json(raw)
    assert failed.value.details == details
