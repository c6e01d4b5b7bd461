"""The transport's reader of raw queue entries answers any bytes with a message, never a crash.

Whatever ``read_entry`` accepts, kombu makes a message of, the transport
records (``dumps``) and kombu restores; whatever it refuses has a reason, and
the message it becomes carries the entry's bytes exactly.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from kombu.transport import virtual
from kombu.utils.json import dumps, loads

from contact_sync.worker.transport import (
    MALFORMED_CONTENT_TYPE,
    Malformed,
    malformed_envelope,
    read_entry,
    redelivered_entry,
)
from tests.factories import task_envelope

QUEUE = "contact_sync.events"
# kombu's JSON reader turns {"__type__": ..., "__value__": ...} into Python objects.
type_markers = st.fixed_dictionaries(
    {
        "__type__": st.sampled_from(["decimal", "datetime", "date", "time", "uuid", "bytes", "x"]),
        "__value__": st.sampled_from(["sNaN", "NaN", "-0", "1e999999", "2026-11-20T15:04:05"])
        | st.text(max_size=20)
        | st.fixed_dictionaries({"hex": st.text(max_size=40)}),
    }
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | type_markers,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
VALID: dict[str, Any] = json.loads(task_envelope([{"event_id": "evt_fuzz"}]))
FIELDS = [
    ("body",),
    ("headers",),
    ("content-type",),
    ("content-encoding",),
    ("properties",),
    ("properties", "delivery_tag"),
    ("properties", "delivery_info"),
    ("properties", "body_encoding"),
    ("properties", "priority"),
    ("headers", "task"),
]


class _Channel:
    """What kombu's Message asks of its channel: the body codecs."""

    codecs = virtual.Channel.codecs
    decode_body = virtual.Channel.decode_body


def _check(raw: bytes) -> None:
    entry = read_entry(raw)
    if isinstance(entry, Malformed):
        assert entry.reason
        entry = malformed_envelope(raw, entry.reason, QUEUE)
        message = virtual.Message(entry, channel=_Channel())
        assert message.content_type == MALFORMED_CONTENT_TYPE
        assert message.body == raw
        assert "task" not in message.headers
        assert redelivered_entry(raw) == raw  # goes back from transit as it came
    else:
        message = virtual.Message(entry, channel=_Channel())
        assert isinstance(message.delivery_tag, str)
        assert isinstance(message.delivery_info, dict)
        assert isinstance(message.headers, dict)
        marked = read_entry(str(redelivered_entry(raw)).encode())
        assert not isinstance(marked, Malformed)
        assert marked["properties"]["delivery_info"]["redelivered"] is True
    record = loads(dumps([entry, "", QUEUE]))  # the unacked record kombu restores from
    assert record[0]["properties"]["delivery_tag"] == message.delivery_tag
    assert record[0]["properties"].get("priority") in (None, 0)  # restored to the 0 list


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_message_or_a_reasoned_verdict(raw: bytes) -> None:
    _check(raw)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_is_a_message_or_a_reasoned_verdict(value: Any) -> None:
    _check(json.dumps(value).encode())


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(FIELDS), json_values)
@example(("body",), "\ud800")  # a lone surrogate: kombu's base64 decoder cannot encode it
@example(("headers",), {"__type__": "datetime", "__value__": "never"})  # kombu's type marker
@example(("properties", "priority"), {"__type__": "decimal", "__value__": "sNaN"})
@example(("properties", "body_encoding"), {"__type__": "decimal", "__value__": "sNaN"})
def test_an_envelope_with_one_field_replaced_by_anything_never_crashes(
    path: tuple[str, ...], value: Any
) -> None:
    payload = json.loads(json.dumps(VALID))
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _check(json.dumps(payload).encode())


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELDS), st.binary(max_size=40))
def test_an_envelope_with_raw_bytes_spliced_into_a_field_never_crashes(
    path: tuple[str, ...], junk: bytes
) -> None:
    text = json.dumps(VALID).encode()
    name = f'"{path[-1]}": '.encode()
    at = text.index(name) + len(name)
    _check(text[:at] + junk + text[at:])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_as_a_base64_body_are_kept_exactly(body: bytes) -> None:
    payload = {**VALID, "body": base64.b64encode(body).decode()}
    entry = read_entry(json.dumps(payload).encode())
    assert not isinstance(entry, Malformed)
    assert virtual.Message(entry, channel=_Channel()).body == body
