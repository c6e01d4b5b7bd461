"""The shipped JSON Schema refuses what the worker refuses, and accepts what it accepts.

The differential test generates events (valid ones, and near-valid mutations of
them: wrong types, out-of-range numbers and lengths, missing, extra and renamed
fields, both or neither of contact_id and phone, too many custom fields, values
nested too deep) and compares the verdict of ``jsonschema``'s 2020-12 validator,
formats checked, with that of the worker's ``parse_event`` at a fixed ``now``.

What the schema's description names as beyond JSON Schema is excluded from the
comparison by construction, not by filtering:
- occurred_at is always at least a day before ``NOW`` (the 10-minute future limit);
- generated text is short and custom fields few, so no map nears 64 KiB (asserted);
- text never holds a lone surrogate (Unicode category Cs is not drawn);
- schema_version and duration_seconds are never replaced by a float with a whole value
  (1.0), and generated floats stay within ±1e15 (never a whole number beyond 64 bits);
- date-times are RFC 3339 or wrong for both: never a form only the lenient worker reads
  (a space or lower-case t, no seconds, +0200).
``test_each_gap_the_description_names_is_real`` shows each excluded kind does differ.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema_specifications import REGISTRY

from contact_sync.calls import event_schema
from contact_sync.calls.events import (
    MAX_DURATION_SECONDS,
    MAX_EXTRACTOR_VERSION_LENGTH,
    MAX_ID_LENGTH,
    MAX_LEAD_STATUS_LENGTH,
    MAX_PHONE_LENGTH,
    MAX_SUMMARY_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TEXT_LENGTH,
    OUTCOMES,
    ExtractedContact,
    InvalidEvent,
    parse_event,
)
from contact_sync.contacts.model import MAX_CUSTOM_FIELDS_BYTES, MAX_TAGS
from contact_sync.storable import MAX_INTEGER, MIN_INTEGER
from tests.factories import call_event

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
SHIPPED_TEXT = (resources.files("contact_sync") / "schemas" / "call_completed.v1.json").read_text(
    encoding="utf-8"
)
SCHEMA = json.loads(SHIPPED_TEXT)
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_accepts(payload: Any) -> bool:
    return VALIDATOR.is_valid(payload)


def worker_refusal(payload: Any) -> str | None:
    """The worker's message when it refuses ``payload``, ``None`` when it accepts it."""
    try:
        parse_event(payload, now=NOW)
    except InvalidEvent as exc:
        return f"{exc.reason}: {exc.message}"
    return None


def valid(**overrides: Any) -> dict[str, Any]:
    event = call_event(
        "team_1",
        event_id="evt_1",
        call_id="call_1",
        contact_id="ct_1",
        occurred_at="2026-11-20T14:04:05Z",
    )
    event.update(overrides)
    return {key: value for key, value in event.items() if value is not ...}


def nested(depth: int) -> Any:
    """A value of ``depth`` container levels (alternating arrays and objects)."""
    value: Any = 0
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


# --- The schema is JSON Schema --------------------------------------------------------------

# Every keyword of the 2020-12 vocabularies, from the metaschemas that define them.
KEYWORDS = set().union(
    *(
        REGISTRY.contents(f"https://json-schema.org/draft/2020-12/meta/{vocabulary}")["properties"]
        for vocabulary in (
            "core",
            "applicator",
            "unevaluated",
            "validation",
            "meta-data",
            "format-annotation",
            "content",
        )
    )
)
SCHEMA_VALUED = {"items", "additionalProperties", "propertyNames", "if", "then", "else", "not"}
SCHEMA_MAPS = {"properties", "$defs", "patternProperties"}
SCHEMA_LISTS = {"anyOf", "allOf", "oneOf", "prefixItems"}
TYPE_OF_KEYWORD = {
    "minLength": "string",
    "maxLength": "string",
    "pattern": "string",
    "minimum": "number",
    "maximum": "number",
    "maxItems": "array",
    "items": "array",
    "maxProperties": "object",
    "properties": "object",
    "propertyNames": "object",
    "additionalProperties": "object",
    "required": "object",
}


def _subschemas(schema: Any) -> list[dict[str, Any]]:
    if isinstance(schema, bool):  # true and false are schemas too: no keywords
        return []
    found = [schema]
    for key, value in schema.items():
        if key in SCHEMA_VALUED:
            found += _subschemas(value)
        elif key in SCHEMA_MAPS:
            for item in value.values():
                found += _subschemas(item)
        elif key in SCHEMA_LISTS:
            for item in value:
                found += _subschemas(item)
    return found


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)


def test_every_keyword_is_a_2020_12_keyword_applied_to_the_type_it_checks() -> None:
    for schema in _subschemas(SCHEMA):
        unknown = set(schema) - KEYWORDS
        assert not unknown, f"{sorted(unknown)} are ignored by JSON Schema validators: {schema}"
        types = schema.get("type")
        declared = {types} if isinstance(types, str) else set(types or ())
        if "integer" in declared:
            declared.add("number")
        for keyword, kind in TYPE_OF_KEYWORD.items():
            if keyword in schema and declared:
                assert kind in declared, f"{keyword} on a {sorted(declared)} never applies"


def test_the_shipped_file_is_what_the_generator_writes() -> None:
    assert event_schema.render() == SHIPPED_TEXT
    assert event_schema.main(["--check"]) == 0


def test_the_description_names_what_json_schema_cannot_express() -> None:
    description = SCHEMA["description"]
    for gap in (
        "minutes ahead",
        "64 KiB",
        "lone surrogate",
        "1.0",
        "64 bits",
        "phonenumbers",
        "IANA time zone",
        "RFC 3339",
        "started_at",
    ):
        assert gap in description, gap


# --- What the old schema let through --------------------------------------------------------


def test_a_confidence_of_5_is_refused_by_the_schema_as_by_the_worker() -> None:
    event = valid(extraction={"custom_fields": {"budget": {"value": 50000, "confidence": 5}}})
    assert worker_refusal(event) is not None
    assert not schema_accepts(event)


@pytest.mark.parametrize(
    "overrides",
    [{"contact_id": ...}, {"contact_id": None}, {"contact_id": None, "phone": None}],
    ids=["absent", "null", "both_null"],
)
def test_an_event_with_neither_contact_id_nor_phone_is_refused_by_the_schema_as_by_the_worker(
    overrides: dict[str, Any],
) -> None:
    event = valid(**overrides)
    assert worker_refusal(event) is not None
    assert not schema_accepts(event)


@pytest.mark.parametrize(
    "overrides",
    [
        {"contact_id": ..., "phone": "+12025551234"},
        {"contact_id": None, "phone": "(202) 555-1234"},
        {"phone": "+12025551234"},
        {"phone": None},
    ],
    ids=["phone", "phone_and_null_contact_id", "both", "contact_id_and_null_phone"],
)
def test_either_contact_id_or_phone_is_enough_for_both(overrides: dict[str, Any]) -> None:
    event = valid(**overrides)
    assert worker_refusal(event) is None
    assert schema_accepts(event)


# --- The gaps are real ----------------------------------------------------------------------

GAPS = {
    "occurred_at_in_the_future": valid(occurred_at="2026-11-20T15:30:00Z"),
    "custom_fields_over_64_KiB": valid(
        extraction={"custom_fields": {f"f{n}": "x" * 1000 for n in range(70)}}
    ),
    "unknown_contact_fields_over_64_KiB": valid(
        extraction={"contact": {f"f{n}": "x" * 1000 for n in range(70)}}
    ),
    "a_lone_surrogate": valid(call_id="call_\ud800"),
    "schema_version_written_1.0": valid(schema_version=1.0),
    "duration_written_95.0": valid(duration_seconds=95.0),
    "a_whole_float_beyond_64_bits": valid(extraction={"custom_fields": {"big": 1e20}}),
    "a_space_for_the_T": valid(occurred_at="2026-11-20 14:04:05Z"),
    "no_seconds": valid(occurred_at="2026-11-20T14:04Z"),
    "an_offset_without_colon": valid(occurred_at="2026-11-20T14:04:05+0200"),
    "started_at_after_occurred_at": valid(started_at="2026-11-20T14:04:06Z"),
}


@pytest.mark.parametrize(
    "started_at", ["2026-11-20T14:04:05Z", "2026-11-20T16:04:05+02:00", "2026-11-20T14:04:04.9Z"]
)
def test_a_start_at_or_before_the_end_is_accepted_by_both(started_at: str) -> None:
    event = valid(started_at=started_at, direction="inbound")
    assert worker_refusal(event) is None
    assert schema_accepts(event)


@pytest.mark.parametrize("name", sorted(GAPS))
def test_each_gap_the_description_names_is_real(name: str) -> None:
    """If one of these starts to agree, the description (and the exclusions above) are stale."""
    event = GAPS[name]
    assert schema_accepts(event) != (worker_refusal(event) is None)


# --- The differential test ------------------------------------------------------------------

CHARACTERS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
texts = st.text(CHARACTERS, max_size=12)
ids = st.text(CHARACTERS, min_size=1, max_size=20)
slugs = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,15}", fullmatch=True)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(MIN_INTEGER, MAX_INTEGER)
    | st.floats(min_value=-1e15, max_value=1e15, allow_nan=False)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
custom_values = json_values | st.fixed_dictionaries(
    {"value": json_values},
    optional={
        "confidence": st.none() | st.floats(0, 1) | st.integers(0, 1),
        "evidence": st.none() | texts,
    },
)
KNOWN_CONTACT_FIELDS = sorted(ExtractedContact.model_fields)
contacts = st.builds(
    lambda known, unknown: {**unknown, **known},
    st.fixed_dictionaries({}, optional={name: st.none() | texts for name in KNOWN_CONTACT_FIELDS}),
    st.dictionaries(texts, json_values, max_size=2),
)
extractions = st.fixed_dictionaries(
    {},
    optional={
        "extractor_version": st.none() | texts,
        "custom_fields": st.dictionaries(slugs, custom_values, max_size=6),
        "contact": st.none() | contacts,
        "lead_status": st.none() | st.sampled_from(["qualified", "Contacted", "nonsense"]),
        "do_not_call": st.none() | st.booleans(),
        "tags": st.none() | st.lists(texts, max_size=4),
        "summary": st.none() | texts,
    },
)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    """An RFC 3339 date-time at least a day before ``NOW`` in any offset."""
    moment = draw(st.datetimes(datetime(1900, 1, 1), datetime(2026, 11, 18)))
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    digits = draw(st.integers(0, 9))
    if digits:
        text += "." + f"{moment.microsecond:06d}000"[:digits]
    offset = draw(st.integers(-14 * 60, 14 * 60))
    if offset == 0 and draw(st.booleans()):
        return text + "Z"
    sign = "-" if offset < 0 else "+"
    return text + f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    event = call_event(
        draw(ids),
        event_id=draw(ids),
        call_id=draw(ids),
        occurred_at=draw(rfc3339()),
        outcome=draw(st.sampled_from(OUTCOMES)),
    )
    who = draw(st.sampled_from(["contact_id", "phone", "both", "contact_id+null", "phone+null"]))
    if who in ("contact_id", "both", "contact_id+null"):
        event["contact_id"] = draw(ids)
    if who in ("phone", "both", "phone+null"):
        event["phone"] = draw(st.sampled_from(["+12025551234", "(202) 555-1234", "not a number"]))
    if who == "contact_id+null":
        event["phone"] = None
    if who == "phone+null":
        event["contact_id"] = None
    for key, values in (
        ("campaign_id", st.none() | ids),
        ("duration_seconds", st.none() | st.integers(0, MAX_DURATION_SECONDS)),
        ("extraction", st.none() | extractions),
        ("direction", st.sampled_from([None, "outbound", "inbound"])),
        # The event's own end, or an instant before any drawn end: never after occurred_at.
        ("started_at", st.sampled_from([None, event["occurred_at"], "1899-12-30T00:00:00Z"])),
    ):
        if draw(st.integers(0, 3)) >= (1 if key == "extraction" else 2):  # 3/4 and 1/2
            event[key] = draw(values)
    return event


def _strings_at(*limits: int) -> list[str]:
    return [c * n for n in limits for c in ("x", "é")]


HOSTILE_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    2,
    -1,
    0.5,
    1.5,
    -0.5,
    1.0000001,
    MAX_DURATION_SECONDS,
    MAX_DURATION_SECONDS + 1,
    MAX_INTEGER,
    MAX_INTEGER + 1,
    MIN_INTEGER,
    MIN_INTEGER - 1,
    "",
    "x",
    "a\x00b",
    "call.completed",
    "completed",
    "Completed",
    "+12025551234",
    *_strings_at(40, 41, 64, 65, 100, 101, MAX_ID_LENGTH, MAX_ID_LENGTH + 1, 2000, 2001),
    "x" * 10_000,
    "x" * 10_001,
    [],
    ["x"],
    ["x"] * 50,
    ["x"] * 51,
    ["x" * 64, "y" * 65],
    {},
    {"value": 1},
    {"value": 1, "confidence": 2},
    {"value": 1, "confidence": -0.1},
    {"value": 1, "confidence": True},
    {"value": 1, "evidence": 5},
    {"value": 1, "other": 2},
    {"confidence": 0.5},
    {"k\x00": 1},
    nested(20),
    nested(21),
    [MAX_INTEGER + 1],
    {"custom_fields": {}},
]
HOSTILE_DATE_TIMES = [
    "2026-11-20T14:04:05",
    "2026-11-20",
    "2026-13-20T14:04:05Z",
    "2026-02-30T14:04:05Z",
    "2026-11-20T24:00:00Z",
    "2016-12-31T23:59:60Z",
    "2026-11-20T14:04:05+24:00",
    "2026-11-20T14:04:05+02",
    "2026-11-20T14:04:05.Z",
    "2026-11-20T14:04:05Z\n",
    "0000-01-01T00:00:00Z",
    "20261120T140405Z",
    "yesterday",
    1_763_650_000,
]
HOSTILE_KEYS = [
    "",
    "a b",
    "-a",
    "_a",
    "é",
    "k\n",
    "k\x00",
    "x" * 64,
    "x" * 65,
    "value",
    "confidence",
    "phone",
    "contact_id",
    "email",
    "timezone",
    "custom_fields",
]


def _lengths(limit: int) -> list[Any]:
    """A text field's boundary: at its limit, one over (ASCII and not), empty, NUL, not text."""
    return [
        "x" * limit,
        "é" * limit,
        "x" * (limit + 1),
        "é" * (limit + 1),
        "",
        "a\x00b",
        None,
        5,
        ["x"],
    ]


def _wrapped(**fields: Any) -> dict[str, Any]:
    return {"value": 1, **fields}


# Each field the worker checks, with the values on both sides of its rule.
BOUNDARIES: list[tuple[tuple[str, ...], list[Any]]] = [
    *[
        ((name,), _lengths(MAX_ID_LENGTH))
        for name in ("event_id", "team_id", "call_id", "contact_id", "campaign_id")
    ],
    (("phone",), _lengths(MAX_PHONE_LENGTH)),
    (("schema_version",), [0, 1, 2, -1, True, "1", None, 1.5, [1]]),
    (("type",), ["call.completed", "call.Completed", "", None, 1]),
    (("outcome",), [*OUTCOMES, "Completed", "hung_up", "", None, 0]),
    (("duration_seconds",), [-1, 0, MAX_DURATION_SECONDS, MAX_DURATION_SECONDS + 1, None, 2.5]),
    (("duration_seconds",), [True, "5", MAX_INTEGER + 1, {}]),
    (("occurred_at",), HOSTILE_DATE_TIMES),
    (("direction",), ["outbound", "inbound", None, "Outbound", "both", "", 1, True]),
    # Valid starts here are before any occurred_at drawn (their order is a gap, tested apart).
    (("started_at",), [*HOSTILE_DATE_TIMES, None, "1899-12-30T00:00:00Z", "1899-12-30T23:00-01"]),
    (("extraction",), [None, [], "x", {}, 0]),
    (("extraction", "extractor_version"), _lengths(MAX_EXTRACTOR_VERSION_LENGTH)),
    (("extraction", "custom_fields"), [None, [], {}, "x", {"a": 1}]),
    (("extraction", "lead_status"), _lengths(MAX_LEAD_STATUS_LENGTH)),
    (("extraction", "do_not_call"), [True, False, None, "yes", 1, 0]),
    (("extraction", "tags"), [[], None, ["x"] * MAX_TAGS, ["x"] * (MAX_TAGS + 1), "x"]),
    (("extraction", "tags"), [["x" * MAX_TAG_LENGTH], ["é" * (MAX_TAG_LENGTH + 1)], [1], [None]]),
    (("extraction", "summary"), _lengths(MAX_SUMMARY_LENGTH)),
    (("extraction", "contact"), [None, {}, [], "x", {"value": 1}]),
    *[
        (("extraction", "contact", name), [*_lengths(MAX_TEXT_LENGTH), {}, True])
        for name in KNOWN_CONTACT_FIELDS
    ],
    *[
        (("extraction", "contact", name), [1, None, nested(3)])
        for name in ("x" * 64, "é" * 64, "x" * 65, "é" * 65, "", "k\x00")
    ],
    (
        ("extraction", "contact", "heard"),
        [nested(20), nested(21), MAX_INTEGER, MAX_INTEGER + 1, MIN_INTEGER - 1, [MAX_INTEGER + 1]],
    ),
    (("extraction", "contact", "heard"), ["a\x00", {"k\x00": 1}, {"k": [MIN_INTEGER]}, 1e15]),
    *[(("extraction", "custom_fields", key), [1, None]) for key in HOSTILE_KEYS],
    (("extraction", "custom_fields", "x" * 63), [1]),
    (
        ("extraction", "custom_fields", "budget"),
        [
            *[_wrapped(confidence=c) for c in (-0.1, 0, 0.0, 1, 1.0, 1.01, 5, True, "0.5", None)],
            *[_wrapped(evidence=e) for e in ("x" * 2000, "é" * 2001, 5, None, "a\x00")],
            _wrapped(other=2),
            _wrapped(confidence=0.5, evidence="x", other=None),
            {"confidence": 0.5},
            {"value": MAX_INTEGER + 1},
            {"value": {"k\x00": 1}},
            {"value": nested(20)},
            {"value": nested(21)},
        ],
    ),
    (
        ("extraction", "custom_fields", "budget"),
        [nested(20), nested(21), MAX_INTEGER + 1, MIN_INTEGER, [MIN_INTEGER - 1], "a\x00"],
    ),
]


def _put(event: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``value`` at ``path``, making the objects on the way when they are missing."""
    parent = event
    for step in path[:-1]:
        if not isinstance(parent.get(step), dict):
            parent[step] = {}
        parent = parent[step]
    parent[path[-1]] = copy.deepcopy(value)


def _locations(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every key and list item below ``value``."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found += [(*at, key), *_locations(item, (*at, key))]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += [(*at, index), *_locations(item, (*at, index))]
    return found


def _containers(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every object, the event itself included."""
    found = [at] if isinstance(value, dict) else []
    for path in _locations(value, at):
        if isinstance(_get(value, path[len(at) :]), dict):
            found.append(path)
    return found


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one to three near-valid mutations."""
    event = copy.deepcopy(draw(valid_events()))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                ["boundary"] * 6
                + ["replace", "delete", "rename", "insert", "who", "many_fields", "date", "deep"]
            )
        )
        if kind == "boundary":
            path, values = draw(st.sampled_from(BOUNDARIES))
            _put(event, path, draw(st.sampled_from(values)))
        elif kind in ("replace", "delete", "rename"):
            locations = _locations(event)
            path = draw(st.sampled_from(locations))
            parent = _get(event, path[:-1])
            if kind == "replace":
                parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(HOSTILE_VALUES)))
            elif kind == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.sampled_from(HOSTILE_KEYS))] = parent.pop(path[-1])
        elif kind == "insert":
            parent = _get(event, draw(st.sampled_from(_containers(event))))
            key = draw(st.sampled_from(HOSTILE_KEYS) | slugs)
            parent[key] = copy.deepcopy(draw(st.sampled_from(HOSTILE_VALUES)))
        elif kind == "who":
            for key in ("contact_id", "phone"):
                choice = draw(st.sampled_from(["absent", "null", "empty", "keep"]))
                if choice == "absent":
                    event.pop(key, None)
                elif choice != "keep":
                    event[key] = None if choice == "null" else ""
        elif kind == "many_fields":
            count = draw(st.sampled_from([199, 200, 201, 260]))
            extraction = event.get("extraction")
            extraction = extraction if isinstance(extraction, dict) else {}
            extraction["custom_fields"] = {f"field_{n}": n for n in range(count)}
            event["extraction"] = extraction
        elif kind == "date":
            event["occurred_at"] = draw(st.sampled_from(HOSTILE_DATE_TIMES))
        else:
            extraction = event.get("extraction")
            extraction = extraction if isinstance(extraction, dict) else {}
            where = draw(st.sampled_from(["custom_fields", "contact", "wrapped"]))
            value = nested(draw(st.integers(18, 23)))
            if where == "contact":
                extraction["contact"] = {"heard": value}
            else:
                wrapped = {"value": value, "confidence": 0.9}
                extraction["custom_fields"] = {"deep": wrapped if where == "wrapped" else value}
            event["extraction"] = extraction
    return event


def _custom_maps_bytes(event: Any) -> int:
    """The encoded size of the event's custom fields or unknown contact fields, the larger."""
    extraction = event.get("extraction") if isinstance(event, dict) else None
    if not isinstance(extraction, dict):
        return 0
    sizes = [0]
    for key in ("custom_fields", "contact"):
        part = extraction.get(key)
        if isinstance(part, dict):
            sizes.append(len(json.dumps(part)))  # ASCII-escaped, with spaces: an upper bound
    return max(sizes)


def _compare(event: dict[str, Any]) -> bool:
    assert _custom_maps_bytes(event) < MAX_CUSTOM_FIELDS_BYTES  # the exclusion holds
    refusal = worker_refusal(event)
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in VALIDATOR.iter_errors(event)]
    assert (not errors) == (refusal is None), (
        f"schema says {errors or 'valid'}; worker says {refusal or 'valid'}"
    )
    return refusal is None


@pytest.mark.parametrize(
    ("path", "values"), BOUNDARIES, ids=["/".join(path)[:40] for path, _ in BOUNDARIES]
)
def test_the_schema_and_the_worker_agree_on_each_boundary_of_each_field(
    path: tuple[str, ...], values: list[Any]
) -> None:
    for value in values:
        event = valid(extraction={"custom_fields": {"a": 1}, "contact": {"job_title": "CTO"}})
        _put(event, path, value)
        _compare(event)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_events())
def test_every_generated_valid_event_is_accepted_by_both(event: dict[str, Any]) -> None:
    assert _compare(event)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_events())
def test_the_schema_and_the_worker_agree_on_near_valid_events(event: dict[str, Any]) -> None:
    _compare(event)


def test_the_mutations_produce_both_verdicts_in_fair_numbers() -> None:
    """Guards the generator itself: a differential test that only sees refusals proves little."""
    verdicts: list[bool] = []

    @settings(max_examples=300, deadline=None, database=None)
    @given(mutated_events())
    def collect(event: dict[str, Any]) -> None:
        verdicts.append(worker_refusal(event) is None)

    collect()
    accepted = sum(verdicts)
    assert 0.1 * len(verdicts) < accepted < 0.9 * len(verdicts), (accepted, len(verdicts))
