"""Set-based writes: the rows of a batch as one JSON parameter on PostgreSQL (db/bulk.py).

The history round trip runs on PostgreSQL and SQLite (SQLite keeps the row lists); the
statement shapes are PostgreSQL's only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, event, select

from contact_sync.calls.apply import apply_free_payloads, apply_payloads
from contact_sync.contacts.records import Change, Skip
from contact_sync.contacts.writer import HistoryRecord, record_history
from contact_sync.db.tables import contact_history
from contact_sync.storable import has_unstorable
from tests.factories import call_event, make_contact, make_team, writing


@pytest.fixture
def statements(conn: Connection) -> Iterator[list[str]]:
    """Every statement sent on the test's connection, in order."""
    sent: list[str] = []

    def record(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(conn, "before_cursor_execute", record)
    yield sent
    event.remove(conn, "before_cursor_execute", record)


def _batch(team_id: str, contact_ids: list[str], size: int, tag: str) -> list[dict[str, Any]]:
    return [
        call_event(
            team_id,
            minutes=-i,
            event_id=f"{tag}-{i}",
            call_id=f"{tag}-call-{i}",
            contact_id=contact_ids[i % len(contact_ids)],
            extraction={
                "custom_fields": {"budget": {"value": i, "confidence": 0.9}},
                "contact": {"job_title": f"Owner {i}"},
                "summary": 'Said "yes"; a \\ backslash and ünïcode',
            },
        )
        for i in range(size)
    ]


# PostgreSQL only: SQLite sends the rows as lists (db/bulk.py).
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_batch_writes_its_rows_with_statements_that_do_not_grow_with_it(
    conn: Connection, statements: list[str]
) -> None:
    team = make_team(conn, "Acme Solar")
    ids = [make_contact(conn, team.id, phone=f"+1212555{i:04d}").id for i in range(10)]
    shapes = []
    for size, tag in ((3, "small"), (40, "large")):
        statements.clear()
        with writing(conn):
            outcomes = apply_payloads(conn, _batch(team.id, ids, size, tag))
        assert {o.outcome for o in outcomes} <= {"applied", "no_change"}
        shapes.append({s for s in statements if "jsonb_to_recordset" in s})
    assert shapes[0] == shapes[1]
    written = " ".join(shapes[0])
    # The inbox claim and outcomes, the versioned update, the history, the ledger (its
    # stored rows read by the batch's pairs, then the upsert), and the custom-field side
    # rows the events changed.
    for table in ("processed_events", "contacts", "contact_history", "calls"):
        assert f"INSERT INTO {table} " in written or f"UPDATE {table} " in written
    assert "DELETE FROM custom_field_values USING " in written
    assert "INSERT INTO custom_field_values " in written  # fewer than COPY_FROM_ROWS here
    assert "FROM calls JOIN " in written
    assert "FROM contacts JOIN " in written  # the contacts looked up by their (team, id)
    assert len(shapes[0]) == 9


# PostgreSQL only: SQLite's lookups keep their IN lists.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_first_pass_looks_contacts_up_with_statements_that_do_not_grow(
    conn: Connection, statements: list[str]
) -> None:
    team = make_team(conn, "Acme Solar")
    phones = [f"+1212555{i:04d}" for i in range(12)]
    ids = [make_contact(conn, team.id, phone=phone).id for phone in phones]
    shapes = []
    for size, tag in ((3, "small"), (24, "large")):
        payloads = [
            call_event(team.id, minutes=-i, event_id=f"{tag}-{i}", call_id=f"{tag}-c{i}")
            | ({"contact_id": ids[i % 12]} if i % 2 else {"phone": phones[i % 12]})
            for i in range(size)
        ]
        statements.clear()
        with writing(conn):
            found, deferred = apply_free_payloads(conn, payloads)
        assert not deferred
        assert {o.outcome for o in found.values()} <= {"applied", "no_change"}
        shapes.append({s for s in statements if s.lstrip().startswith("SELECT contacts.")})
    assert shapes[0] == shapes[1]
    # The numbers' holders, unlocked; then by id, locked skipping the busy (the events
    # naming their contact and the holders alike).
    assert len(shapes[0]) == 2
    for statement in shapes[0]:  # the pairs as one JSON parameter, not a parameter each
        assert set(re.findall(r"%\((\w+)\)s", statement)) == {"json_rows", "json_rows_count"}


def test_history_rows_read_back_as_written(conn: Connection) -> None:
    team = make_team(conn, "Acme Solar")
    contact = make_contact(conn, team.id)
    paris = timezone(timedelta(hours=2))
    occurred = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=paris)
    records = [
        HistoryRecord(
            contact_id=contact.id,
            team_id=team.id,
            version_before=None if i == 0 else i,
            version_after=i + 1,
            source="call",
            occurred_at=occurred,
            recorded_at=datetime(2026, 3, 1, 11, tzinfo=UTC),
            changes=[Change("custom_fields.note", None, ['a "quote"', "\\u0000 as text", 2**62])],
            skipped=[Skip("tags", {"nested": [1.5, None, True]}, "too_many_tags")],
            event_id=f"evt-{i}",
            call_id=None,
            summary=None if i else "ünïcode, {braces} and \\ backslash",
        )
        for i in range(3)
    ]
    with writing(conn):
        record_history(conn, records)
    rows = conn.execute(
        select(contact_history)
        .where(contact_history.c.event_id.like("evt-%"))
        .order_by(contact_history.c.version_after)
    ).all()
    assert [r.version_before for r in rows] == [None, 1, 2]
    assert all(r.occurred_at == occurred for r in rows)  # the same instant, read back in UTC
    assert rows[0].summary == "ünïcode, {braces} and \\ backslash"
    assert rows[1].summary is None
    assert rows[1].call_id is None
    assert rows[0].changes == [
        {"field": "custom_fields.note", "old": None, "new": ['a "quote"', "\\u0000 as text", 2**62]}
    ]
    assert rows[0].skipped == [
        {"field": "tags", "value": {"nested": [1.5, None, True]}, "reason": "too_many_tags"}
    ]


@pytest.mark.parametrize(
    ("value", "unstorable"),
    [
        ({"a": "a backslash then u0000: \\u0000"}, False),
        ({"a": ["x", {"b": "NUL \x00 inside"}]}, True),
        ({"key with NUL \x00": 1}, True),
        ({"a": "lone surrogate \ud800"}, True),
        ({"a": 2**70, "b": "fine"}, False),  # orjson refuses the integer: the walk decides
        ({1: "a non-text key"}, False),
    ],
)
def test_the_quick_text_check_agrees_with_the_walk(value: Any, unstorable: bool) -> None:
    assert has_unstorable(value) is unstorable


def test_a_few_rows_go_as_one_json_parameter_and_read_back_exactly(
    conn: Connection, statements: list[str]
) -> None:
    # Fewer than COPY_FROM_ROWS rows: PostgreSQL takes them as one JSON parameter (numbers of
    # the side table as exact text, JSON columns as documents), SQLite as a list of rows.
    from decimal import Decimal

    from contact_sync.db.bulk import insert_rows, rows_source
    from contact_sync.db.tables import custom_field_values

    team = make_team(conn, "Acme Solar")
    contact = make_contact(conn, team.id)
    postgresql = conn.dialect.name == "postgresql"
    # SQLite's NUMERIC affinity keeps a double: a number it holds exactly there.
    exact = Decimal("12345678901234567890.123456789" if postgresql else "123456789.125")
    rows = [
        {"team_id": team.id, "contact_id": contact.id, "key": f"k{i}", "kind": "n", "num": exact}
        for i in range(3)
    ]
    statements.clear()
    with writing(conn):
        insert_rows(conn, custom_field_values, rows)
    stored = conn.execute(
        select(custom_field_values.c.num).where(custom_field_values.c.contact_id == contact.id)
    ).scalars()
    assert list(stored) == [exact] * 3
    if postgresql:
        (sent,) = [s for s in statements if s.startswith("INSERT INTO custom_field_values")]
        assert "jsonb_to_recordset" in sent
        # Built once per shape: the same statement object for every batch.
        names = ("team_id", "contact_id", "key")
        assert rows_source(custom_field_values, names) is rows_source(custom_field_values, names)
