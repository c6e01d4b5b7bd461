"""The typed side table of custom-field values (docs/design.md §13, contacts/field_values.py).

What it holds is a function of each contact's ``custom_fields``: checked after
every kind of write (a person's create and patch, an event, a definition
defined, redefined or deleted, a delete), as a hypothesis property over
arbitrary documents, and against the migration's backfill (``rebuild_all``),
on PostgreSQL and on SQLite.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, Float, select, type_coerce

from contact_sync.accounts.teams import Team
from contact_sync.contacts.field_values import (
    MAX_INDEXED,
    changed_keys,
    rebuild_all,
    string_kind,
    value_rows,
)
from contact_sync.contacts.store import delete_contact, update_contact
from contact_sync.db.tables import custom_field_values
from contact_sync.fields import store as field_store
from contact_sync.storable import is_storable_text
from tests.factories import apply_batch, call_event, contact_row, make_contact, writing

Row = tuple[str, str, str, float | None, str | None]


def _normal(team: str, contact: str, key: str, kind: str, num: Any, txt: Any) -> Row:
    return (contact, key, kind, None if num is None else float(num), txt)


def stored(db: Engine | Connection, contact_id: str | None = None) -> list[Row]:
    """The side rows (of one contact, or all), comparable across databases."""
    c = custom_field_values.c
    # As floats: SQLAlchemy rounds SQLite's numerics to 10 places when it reads them.
    number = type_coerce(c.num, Float)
    statement = select(c.team_id, c.contact_id, c.key, c.kind, number, c.txt)
    if contact_id is not None:
        statement = statement.where(c.contact_id == contact_id)
    if isinstance(db, Connection):
        found = db.execute(statement).all()
    else:
        with db.connect() as conn:
            found = conn.execute(statement).all()
    return sorted(_normal(*row) for row in found)


def implied(team_id: str, contact_id: str, fields: dict[str, Any]) -> list[Row]:
    """What ``custom_fields`` implies."""
    rows = value_rows(team_id, contact_id, fields)
    return sorted(
        _normal(team_id, contact_id, r["key"], r["kind"], r["num"], r["txt"]) for r in rows
    )


def in_step(db: Engine | Connection, contact_id: str) -> list[Row]:
    row = contact_row(db, contact_id)
    expected = implied(row.team_id, row.id, row.custom_fields)
    assert stored(db, contact_id) == expected
    return expected


# --- what a document implies (pure) ---------------------------------------------------


def test_each_json_value_becomes_rows_of_its_kind() -> None:
    fields = {
        "budget": 7000,
        "score": 7.5,
        "homeowner": True,
        "day": "2026-12-24",
        "met": "2026-11-01T15:00:00+00:00",
        "met_local": "2026-11-01T15:00:00-05:00",
        "product": "solar",
        "wants": ["solar", "wind", "solar", 3, None],
        "gone": None,
        "nested": {"a": 1},
    }
    rows = {(r["key"], r["kind"], r["num"], r["txt"]) for r in value_rows("t", "c", fields)}
    assert rows == {
        ("budget", "n", Decimal(7000), None),
        ("score", "n", Decimal("7.5"), None),
        ("homeowner", "b", None, "true"),
        ("day", "d", None, "2026-12-24"),
        ("met", "t", None, "2026-11-01T15:00:00+00:00"),
        ("met_local", "s", None, "2026-11-01T15:00:00-05:00"),
        ("product", "s", None, "solar"),
        ("wants", "a", None, None),
        ("wants", "e", None, "solar"),
        ("wants", "e", None, "wind"),
    }


def test_a_string_too_long_for_an_index_exists_without_its_text() -> None:
    long = "x" * (MAX_INDEXED + 1)
    rows = value_rows("t", "c", {"note": long, "tags": [long, "ok"]})
    assert [(r["key"], r["kind"], r["txt"]) for r in rows] == [
        ("note", "s", None),
        ("tags", "a", None),
        ("tags", "e", "ok"),
    ]


def test_shapes_are_the_canonical_ones_only() -> None:
    assert string_kind("2026-12-24") == "d"
    assert string_kind("2026-12-24T10:00:00.123456+00:00") == "t"
    assert string_kind("2026-12-24\n") == "s"
    assert string_kind("２０２６-12-24") == "s"  # full-width digits are no date
    assert string_kind("2026-12-24T10:00:00Z") == "s"


def test_a_change_of_type_or_value_is_a_change_and_nothing_else_is() -> None:
    before = {"a": 1, "b": True, "c": "x", "d": [1]}
    after = {"a": True, "b": True, "c": "y", "e": None}
    assert changed_keys(before, after) == {"a", "c", "d", "e"}
    assert changed_keys(before, dict(before)) == set()


# --- kept by every write ------------------------------------------------------------------


def test_a_persons_create_patch_and_delete_keep_the_rows(engine: Engine, team: Team) -> None:
    contact = make_contact(
        engine, team.id, custom_fields={"budget": 7000, "wants": ["solar"], "note": "hi"}
    )
    assert len(in_step(engine, contact.id)) == 4
    with writing(engine) as conn:
        update_contact(
            conn,
            team_id=team.id,
            contact_id=contact.id,
            data={"customFields": {"budget": 9000, "note": None, "day": "2026-12-24"}},
        )
    rows = in_step(engine, contact.id)
    assert ("budget", "n", 9000.0) in {row[1:4] for row in rows}
    assert "note" not in {row[1] for row in rows}
    with writing(engine) as conn:
        delete_contact(conn, team_id=team.id, contact_id=contact.id)
    assert stored(engine, contact.id) == []


def test_an_event_keeps_the_rows_of_the_contacts_it_creates_and_changes(
    engine: Engine, team: Team
) -> None:
    made = make_contact(engine, team.id, phone="+12025550111", custom_fields={"seats": 3})
    extraction = {"custom_fields": {"budget": 50000, "product": "solar", "seats": None}}
    apply_batch(
        engine,
        [
            call_event(team.id, contact_id=made.id, extraction=extraction),
            call_event(team.id, phone="+12025550112", extraction=extraction),
        ],
    )
    in_step(engine, made.id)
    assert {row[1] for row in stored(engine, made.id)} >= {"budget", "product"}
    with engine.connect() as conn:
        everyone = conn.execute(select(custom_field_values.c.contact_id).distinct()).all()
    for (contact_id,) in everyone:
        in_step(engine, contact_id)
    assert len(everyone) == 2


def test_defining_redefining_and_deleting_a_field_changes_no_row(
    engine: Engine, team: Team
) -> None:
    contact = make_contact(engine, team.id, custom_fields={"budget": "$7k", "seats": 3})
    before = in_step(engine, contact.id)
    body = {"key": "budget", "label": "Budget", "type": "number"}
    with writing(engine) as conn:
        field_store.define(conn, team_id=team.id, data=body)
    assert in_step(engine, contact.id) == before
    with writing(engine) as conn:
        field_store.remove(conn, team_id=team.id, key="budget")
        field_store.define(conn, team_id=team.id, data={**body, "type": "text"})
    assert in_step(engine, contact.id) == before


def test_the_backfill_computes_the_rows_the_writer_keeps(
    engine: Engine, team: Team, other_team: Team
) -> None:
    fields = {
        "budget": 7000,
        "score": 0.1,
        "huge": 2**62,
        "homeowner": False,
        "day": "2026-12-24",
        "met": "2026-11-01T15:00:00.5+00:00",
        "wants": ["solar", "wind", "solar"],
        "empty": [],
        "note": "x" * (MAX_INDEXED + 5),
        "nested": {"a": [1]},
    }
    for owner in (team, other_team):
        make_contact(engine, owner.id, custom_fields=fields)
        make_contact(engine, owner.id, custom_fields={"note": "short"})
    written = stored(engine)
    with writing(engine) as conn:
        rebuild_all(conn)
    assert stored(engine) == written
    assert len(written) == 2 * (len(fields) - 1 + 2 + 1)


# --- the property ---------------------------------------------------------------------------

_KEYS = st.sampled_from(["budget", "seats", "day", "met", "product", "wants", "note"])
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["2026-12-24", "2026-11-01T15:00:00+00:00", "solar", "wind", "", "7k"]),
    st.text(max_size=20).filter(is_storable_text),
)
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=4))
_DOCUMENTS = st.dictionaries(_KEYS, _VALUES, max_size=6)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(first=_DOCUMENTS, patches=st.lists(_DOCUMENTS, max_size=3))
def test_the_side_table_is_what_custom_fields_implies_after_any_writes(
    engine: Engine, team: Team, first: dict[str, Any], patches: list[dict[str, Any]]
) -> None:
    contact = make_contact(engine, team.id, custom_fields=first)
    in_step(engine, contact.id)
    for patch in patches:
        with writing(engine) as conn:
            update_contact(
                conn, team_id=team.id, contact_id=contact.id, data={"customFields": patch}
            )
        in_step(engine, contact.id)
    with writing(engine) as conn:
        delete_contact(conn, team_id=team.id, contact_id=contact.id)
    assert stored(engine, contact.id) == []


# --- a lone filter counted from the side table --------------------------------------------

_OPTIONS = [{"value": "solar", "label": "Solar"}, {"value": "wind", "label": "Wind"}]
_DEFINED = [
    {"key": "budget", "label": "Budget", "type": "number"},
    {"key": "day", "label": "Day", "type": "date"},
    {"key": "product", "label": "Product", "type": "select", "options": _OPTIONS},
    {"key": "wants", "label": "Wants", "type": "multi_select", "options": _OPTIONS},
    {"key": "note", "label": "Note", "type": "text"},
]
_LONE_FILTERS = [
    {"cf.budget.gte": "5000"},
    {"cf.budget": "7000"},
    {"cf.budget.exists": "true"},
    {"cf.budget.exists": "false"},
    {"cf.day.lt": "2026-12-25"},
    {"cf.product.in": "solar,wind"},
    {"cf.wants.in": "solar,wind"},
    {"cf.wants": "solar"},
    {"cf.note.exists": "true"},
]


def test_a_lone_filters_total_is_the_number_of_its_matches(engine: Engine, team: Team) -> None:
    from contact_sync.contacts.query import ContactQuery, list_contacts
    from contact_sync.fields.store import definitions_for

    documents = [
        {"budget": 7000, "day": "2026-12-24", "product": "solar", "wants": ["solar", "wind"]},
        {"budget": 4000, "day": "2027-01-02", "product": "wind", "wants": ["wind"]},
        {"budget": "7000", "day": "soon", "note": "hi", "wants": []},
        {"note": "x" * (MAX_INDEXED + 1), "product": "hydro"},
        {},
    ]
    for number, fields in enumerate(documents * 2):
        make_contact(engine, team.id, first_name=f"P{number}", custom_fields=fields)
    with writing(engine) as conn:  # defined after: the untyped values stay as they were
        for body in _DEFINED:
            field_store.define(conn, team_id=team.id, data=body)
    with engine.connect() as conn:
        defined = definitions_for(conn, team_id=team.id, keys={d["key"] for d in _DEFINED})
        for parameters in _LONE_FILTERS:
            data = {"team_id": team.id, **parameters}
            everyone = list_contacts(conn, ContactQuery.parse(data, definitions=defined))
            one = list_contacts(conn, ContactQuery.parse({**data, "limit": 1}, definitions=defined))
            assert one.total == everyone.total == len(everyone.data), parameters
