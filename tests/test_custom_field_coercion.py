"""The pure half of typed custom fields (docs/design.md §13): definitions, coercion, patterns.

- Every input form the design lists converts to the canonical value; what does not
  convert raises ``InvalidValue`` and nothing else, whatever JSON it is given.
- Coercion is idempotent: a canonical value comes back unchanged.
- Patterns that could backtrack for minutes are refused; the worst accepted one runs in
  milliseconds on the longest text value.
- Definitions are bounded: options, aliases, labels, pattern length, hostile numbers.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contact_sync.errors import ValidationFailed
from contact_sync.fields.coerce import InvalidValue, coerce, coerce_fields
from contact_sync.fields.definitions import (
    MAX_OPTIONS,
    FieldDefinition,
    TypeChange,
    apply_patch,
    definition_from_stored,
    parse_definition,
    spec_json,
)
from contact_sync.fields.patterns import UnsafePattern, check_pattern, compiled
from contact_sync.fields.schema import extraction_schema

OPTIONS = [
    {"value": "solar", "label": "Solar", "aliases": ["pv", "solar panels"]},
    {"value": "wind", "label": "Wind turbine"},
    {"value": "heat_pump", "label": "Heat pump", "aliases": ["hp"]},
]
BODIES: dict[str, dict[str, Any]] = {
    "text": {"type": "text", "pattern": "^[A-Z]{2}-[0-9]{4,6}$"},
    "free_text": {"type": "text"},
    "number": {"type": "number", "min": 0, "max": 10_000_000},
    "integer": {"type": "integer", "min": -5, "max": 1_000_000},
    "boolean": {"type": "boolean"},
    "date": {"type": "date"},
    "datetime": {"type": "datetime"},
    "select": {"type": "select", "options": OPTIONS},
    "multi_select": {"type": "multi_select", "options": OPTIONS},
    "email": {"type": "email"},
    "phone": {"type": "phone"},
    "url": {"type": "url"},
}
DEFS = {key: parse_definition({"key": key, "label": key.title(), **b}) for key, b in BODIES.items()}

CONVERTS = [
    ("number", 7000, 7000),
    ("number", "7,000", 7000),
    ("number", "$7,000", 7000),
    ("number", "7k", 7000),
    ("number", "7.5K", 7500),
    ("number", "$7.5k", 7500),
    ("number", "1.2M", 1_200_000),
    ("number", " 42 ", 42),
    ("number", "12.25", 12.25),
    ("number", 7.0, 7),
    ("integer", "7k", 7000),
    ("integer", 12.0, 12),
    ("boolean", "YES", True),
    ("boolean", "no", False),
    ("boolean", "Y", True),
    ("boolean", "n", False),
    ("boolean", "1", True),
    ("boolean", "0", False),
    ("boolean", "True", True),
    ("boolean", False, False),
    ("date", "2026-12-24", "2026-12-24"),
    ("date", "2026-12-24T18:30:00-05:00", "2026-12-24"),
    ("datetime", "2026-12-24T18:30:00-05:00", "2026-12-24T23:30:00+00:00"),
    ("datetime", "2026-12-24T18:30:00Z", "2026-12-24T18:30:00+00:00"),
    ("select", "solar", "solar"),
    ("select", "Solar panels", "solar"),
    ("select", "  SOLAR   PANELS ", "solar"),
    ("select", "PV", "solar"),
    ("select", "wind turbine", "wind"),
    ("multi_select", "hp, wind, PV, solar", ["solar", "wind", "heat_pump"]),
    ("multi_select", ["Wind turbine", "wind"], ["wind"]),
    ("multi_select", [], []),
    ("email", "Ada@Example.COM", "Ada@example.com"),
    ("phone", "(202) 555-1234", "+12025551234"),
    ("url", "HTTPS://example.com/a?b=1", "https://example.com/a?b=1"),
    ("text", "AB-12345", "AB-12345"),
    ("free_text", "  hello  ", "hello"),
    ("free_text", 42, "42"),
]

REFUSED = [
    ("number", "not sure"),
    ("number", "7,00"),
    ("number", "1" * 10_000),
    ("number", 10**10_000),
    ("number", float("nan")),
    ("number", float("inf")),
    ("number", True),
    ("number", -1),
    ("number", "20M"),
    ("number", {"value": 1}),
    ("integer", "7.5"),
    ("integer", -6),
    ("boolean", "maybe"),
    ("boolean", 2),
    ("boolean", None),
    ("date", "24/12/2026"),
    ("date", "2026-02-30"),
    ("date", "20261224"),
    ("datetime", "2026-12-24T18:30:00"),
    ("datetime", "2026-12-24"),
    ("datetime", "0001-01-01T00:00:00+01:00"),
    ("select", "not sure"),
    ("select", ["solar"]),
    ("select", 1),
    ("multi_select", "solar, nuclear"),
    ("multi_select", ["solar"] * 1000),
    ("multi_select", 7),
    ("email", "not an email"),
    ("phone", "12"),
    ("url", "ftp://example.com"),
    ("url", "javascript:alert(1)"),
    ("url", "http://"),
    ("url", "http://exa mple.com"),
    ("url", "http://[::1"),
    ("text", "ab-12345"),
    ("text", "AB-12345\x00"),
    ("free_text", ""),
    ("free_text", "x" * 2001),
    ("free_text", ["a"]),
]


@pytest.mark.parametrize(("key", "raw", "stored"), CONVERTS, ids=[repr(c[:2]) for c in CONVERTS])
def test_every_input_form_converts_to_the_canonical_value(key: str, raw: Any, stored: Any) -> None:
    value = coerce(DEFS[key], raw)
    assert value == stored
    assert type(value) is type(stored)
    assert coerce(DEFS[key], value) == value  # and the canonical value is kept as it is


@pytest.mark.parametrize(
    ("key", "raw"), REFUSED, ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSED)]
)
def test_what_does_not_convert_is_invalid_value(key: str, raw: Any) -> None:
    with pytest.raises(InvalidValue) as caught:
        coerce(DEFS[key], raw)
    assert str(caught.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
LOOSE = JSON | st.sampled_from([c[1] for c in CONVERTS] + [r[1] for r in REFUSED[:3]])


@settings(max_examples=400, deadline=None)
@given(key=st.sampled_from(sorted(DEFS)), raw=LOOSE)
def test_coercion_raises_only_its_own_error_and_is_idempotent(key: str, raw: Any) -> None:
    try:
        value = coerce(DEFS[key], raw)
    except InvalidValue:
        return
    assert coerce(DEFS[key], value) == value
    if isinstance(value, float):
        assert math.isfinite(value)


@settings(max_examples=300, deadline=None)
@given(
    number=st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.decimals(allow_nan=False, allow_infinity=False, places=3, max_value=10**12).map(str),
    )
)
def test_numbers_are_canonical_and_idempotent(number: Any) -> None:
    free = parse_definition({"key": "n", "label": "N", "type": "number"})
    value = coerce(free, number)
    assert coerce(free, value) == value
    assert not (isinstance(value, float) and value.is_integer() and abs(value) <= 2**53)


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a+)+$",
        r"^(a|aa)*$",
        r"(x+x+)+y",
        r"\d+\d+\d+x",
        r"(a|a)" * 30 + "b",
        r"(?=a)a",
        r"(?<!a)b",
        r"(x)\1",
        r"(?(1)a|b)",
        r"[",
        "a" * 201,
        "a\x00",
    ],
)
def test_a_pattern_that_could_backtrack_for_minutes_is_refused(pattern: str) -> None:
    with pytest.raises(UnsafePattern):
        check_pattern(pattern)
    with pytest.raises(ValidationFailed) as caught:
        parse_definition({"key": "code", "label": "Code", "type": "text", "pattern": pattern})
    assert "pattern" in caught.value.details


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (r"(.*)(.*)x", "a" * 1999 + "!"),
        (r"\w+\s\w+", "a" * 2000),
        (r"^[A-Z]{2,3}-\d{3,5}$", "A" * 2000),
        (r"^\d{5}(-\d{4})?$", "1" * 2000),
    ],
)
def test_the_worst_accepted_pattern_runs_in_milliseconds_on_the_longest_value(
    pattern: str, text: str
) -> None:
    started = time.perf_counter()
    compiled(check_pattern(pattern)).fullmatch(text)
    assert time.perf_counter() - started < 0.5


def _refused(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        parse_definition({"key": "f", "label": "F", **body})
    return caught.value.details


def test_hostile_definitions_are_refused_naming_the_field() -> None:
    many = [{"value": f"o{i}"} for i in range(MAX_OPTIONS + 1)]
    assert "options" in _refused({"type": "select", "options": many})
    assert "options" in _refused({"type": "select", "options": []})
    assert "options" in _refused({"type": "select"})
    assert "options" in _refused({"type": "select", "options": "solar"})
    aliases = [{"value": "a", "aliases": [str(i) for i in range(21)]}]
    assert "options.0.aliases" in _refused({"type": "select", "options": aliases})
    clash = [{"value": "a", "aliases": ["x"]}, {"value": "b", "label": "X"}]
    assert "options" in _refused({"type": "select", "options": clash})
    assert "options.0.value" in _refused({"type": "select", "options": [{"value": "v" * 65}]})
    assert "options" in _refused({"type": "number", "options": OPTIONS})
    assert "min" in _refused({"type": "number", "min": float("nan")})
    assert "min" in _refused({"type": "number", "min": 10**10_000})
    assert "min" in _refused({"type": "number", "min": "5"})
    assert "min" in _refused({"type": "number", "min": 5, "max": 1})
    assert "min" in _refused({"type": "integer", "min": 0.5})
    assert "min" in _refused({"type": "text", "min": 1})
    assert "pattern" in _refused({"type": "number", "pattern": "a"})
    assert "type" in _refused({"type": "money"})
    assert "type" in _refused({"type": ["text"]})
    assert "label" in _refused({"type": "text", "label": "x" * 101})
    assert "ai_extractable" in _refused({"type": "text", "aiExtractable": "yes"})
    assert "bogus" in _refused({"type": "text", "bogus": 1})
    with pytest.raises(ValidationFailed) as caught:
        parse_definition({"key": "schema", "label": "S", "type": "text"})
    assert "key" in caught.value.details
    with pytest.raises(ValidationFailed):
        parse_definition({"key": "a b", "label": "S", "type": "text"})


def test_a_patch_may_add_options_and_aliases_but_not_change_type_or_drop_an_option() -> None:
    select = DEFS["select"]
    grown = apply_patch(select, {"options": [*OPTIONS, {"value": "battery"}], "label": "Interest"})
    assert [o.value for o in grown.options][-1] == "battery"
    assert grown.label == "Interest"
    with pytest.raises(TypeChange):
        apply_patch(select, {"type": "text"})
    with pytest.raises(ValidationFailed) as caught:
        apply_patch(select, {"options": OPTIONS[:1]})
    assert "options" in caught.value.details
    assert apply_patch(select, {"type": "select"}) == select


def test_a_definition_reads_back_as_it_was_stored() -> None:
    for definition in DEFS.values():
        values = {**definition.to_dict(), "spec": spec_json(definition)}
        assert definition_from_stored(values) == definition
    big = parse_definition({"key": "b", "label": "B", "type": "integer", "max": 2**63 - 1})
    again = definition_from_stored({**big.to_dict(), "spec": spec_json(big)})
    assert again.maximum == 2**63 - 1


def test_a_persons_values_are_coerced_or_named_in_one_422() -> None:
    definitions: dict[str, FieldDefinition] = {"budget": DEFS["number"], "yes": DEFS["boolean"]}
    typed = coerce_fields(
        {"budget": "$7.5k", "yes": "YES", "free": "x", "gone": None},
        definitions,
        region="US",
        reject_undefined=False,
    )
    assert typed == {"budget": 7500, "yes": True, "free": "x", "gone": None}
    with pytest.raises(ValidationFailed) as caught:
        coerce_fields(
            {"budget": "lots", "free": "x"}, definitions, region="US", reject_undefined=True
        )
    assert set(caught.value.details) == {"custom_fields.budget", "custom_fields.free"}


def test_the_extraction_schema_has_only_ai_extractable_fields_with_their_constraints() -> None:
    hidden = parse_definition({"key": "h", "label": "H", "type": "text", "aiExtractable": False})
    schema = extraction_schema([*DEFS.values(), hidden])
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == set(DEFS)
    select = schema["properties"]["select"]["anyOf"][0]
    assert select["enum"] == ["solar", "wind", "heat_pump"]
    number = schema["properties"]["number"]["anyOf"][0]
    assert (number["minimum"], number["maximum"]) == (0, 10_000_000)
    assert schema["properties"]["text"]["anyOf"][0]["pattern"] == BODIES["text"]["pattern"]


# --------------------------------------------------------------------------- the merge

LOOSE_BUDGETS = ("$7.5k", "7,000", 7000, "a lot", "1.2M", 7.0, None, "")
LOOSE_INTEREST = ("Solar panels", "PV", "wind", "not sure", ["solar"], None)
MINUTES = (0, 1, 2)
EVENT_IDS = ("evt_a", "evt_b", "evt_c", "evt_d")


def _event(event_id: str, minute: int, budget: Any, interest: Any, confidence: float) -> Any:
    from datetime import UTC, datetime, timedelta

    from contact_sync.calls.events import parse_event

    at = datetime(2026, 11, 20, 15, 0, tzinfo=UTC) + timedelta(minutes=minute)
    fields = {
        "budget": {"value": budget, "confidence": confidence},
        "product_interest": interest,
    }
    payload = {
        "event_id": event_id,
        "type": "call.completed",
        "schema_version": 1,
        "team_id": "team",
        "call_id": f"call_{event_id}",
        "contact_id": "ct",
        "occurred_at": at.isoformat(),
        "outcome": "completed",
        "extraction": {"custom_fields": fields},
    }
    return parse_event(payload, now=at + timedelta(days=1))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(EVENT_IDS),
            st.sampled_from(MINUTES),
            st.sampled_from(LOOSE_BUDGETS),
            st.sampled_from(LOOSE_INTEREST),
            st.sampled_from((0.3, 0.9)),
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda t: t[0],
    ),
    st.randoms(use_true_random=False),
)
def test_typed_values_merge_to_the_same_contact_whatever_the_delivery_order(
    drawn: list[tuple[Any, ...]], rng: Any
) -> None:
    """docs/design.md §4.1 holds for coerced values: any order (with repeats) ends where
    time order ends, and every stored value is canonical."""
    from contact_sync.calls.merge import ContactState, MergePolicy, merge

    policy = MergePolicy(definitions={"budget": DEFS["number"], "product_interest": DEFS["select"]})
    events = [_event(*item) for item in drawn]

    def apply(order: list[Any]) -> dict[str, Any]:
        state = ContactState(first_name="A", last_name="B")
        for event in order:
            state = merge(state, event, policy).state
        return state.custom_fields

    in_time = apply(sorted(events, key=lambda e: (e.occurred_at, e.event_id)))
    shuffled = events + rng.sample(events, k=len(events) // 2)
    rng.shuffle(shuffled)
    assert apply(shuffled) == in_time
    for key, value in in_time.items():
        definition = policy.definitions[key]
        assert coerce(definition, value) == value
