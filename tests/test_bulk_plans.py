"""The plans of a small group's set-based writes read the keys' indexes (db/bulk.rows_source).

PostgreSQL takes ``jsonb_to_recordset`` for 100 rows whatever it is given, so
without the ``LIMIT`` of the rows' number a group of a few events joined its rows
to the whole table by a hash join over a sequential scan (docs/design.md §6,
"Plans"). These tests apply a group of two events in a team of a few thousand
contacts with statistics, then ask PostgreSQL for the plan of every update and
delete the group sent, with its own parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, event

from contact_sync.calls.apply import apply_free_payloads
from contact_sync.db.tables import contacts
from tests.factories import call_event, make_contact, make_team

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

CROWD = 3_000  # contacts beside the group's: a table no plan should read whole for two rows
BIG_TABLES = ("contacts", "custom_field_values", "processed_events")


def _crowd(conn: Connection, team_id: str, model_id: str) -> None:
    """``CROWD`` copies of the model contact (new ids, no phone or email), their side rows,
    and as many inbox rows; then statistics, as autovacuum keeps them in service."""
    blank = {"id": "gen_random_uuid()::text", "phone": "NULL", "email": "NULL"}
    names = [c.name for c in contacts.c]
    values = ", ".join(blank.get(name, f"c.{name}") for name in names)
    conn.exec_driver_sql(
        f"INSERT INTO contacts ({', '.join(names)}) SELECT {values}"
        f" FROM contacts c CROSS JOIN generate_series(1, {CROWD}) WHERE c.id = %(id)s",
        {"id": model_id},
    )
    conn.exec_driver_sql(
        "INSERT INTO custom_field_values (team_id, contact_id, key, kind, txt)"
        " SELECT c.team_id, c.id, k, 's', 'x' FROM contacts c"
        " CROSS JOIN unnest(ARRAY['region', 'source', 'list']) AS k WHERE c.team_id = %(team)s",
        {"team": team_id},
    )
    conn.exec_driver_sql(
        "INSERT INTO processed_events (team_id, event_id, contact_id, outcome, processed_at)"
        " SELECT c.team_id, 'past-' || c.id, c.id, 'applied', now() FROM contacts c"
        " WHERE c.team_id = %(team)s",
        {"team": team_id},
    )
    conn.exec_driver_sql("ANALYZE contacts, custom_field_values, processed_events")


@pytest.fixture
def writes(conn: Connection) -> Iterator[list[tuple[str, Any]]]:
    """Every UPDATE or DELETE sent on the test's connection, and every SELECT on given
    rows (the contacts' lookups), with its parameters."""
    sent: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        verb = statement.split(None, 1)[0]
        if verb in ("UPDATE", "DELETE") or (verb == "SELECT" and "jsonb_to_recordset" in statement):
            sent.append((statement, parameters))

    event.listen(conn, "before_cursor_execute", record)
    yield sent
    event.remove(conn, "before_cursor_execute", record)


def _scans(node: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(node type, relation) of every node of a plan that reads a relation."""
    if "Relation Name" in node:
        yield node["Node Type"], node["Relation Name"]
    for child in node.get("Plans", []):
        yield from _scans(child)


def _sequential_scans(conn: Connection, statement: str, parameters: Any) -> set[str]:
    """The tables PostgreSQL's plan of ``statement`` (not run) reads whole."""
    document = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).scalar_one()
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    return {table for kind, table in _scans(plan) if kind == "Seq Scan"}


def test_a_small_group_updates_and_deletes_by_index_in_a_large_team(
    conn: Connection, writes: list[tuple[str, Any]]
) -> None:
    team = make_team(conn, "Plans")
    first = make_contact(conn, team.id, custom_fields={"region": "north", "source": "expo"})
    second = make_contact(conn, team.id, first_name="Grace", phone="+12125550123")
    _crowd(conn, team.id, first.id)
    group = [
        call_event(
            team.id,
            event_id=f"plan-{i}",
            call_id=f"plan-call-{i}",
            contact_id=contact.id,
            extraction={
                "custom_fields": {"region": {"value": "south", "confidence": 0.9}},
                "contact": {"job_title": f"Owner {i}"},
            },
        )
        for i, contact in enumerate((first, second))
    ]
    # And one by number: its holders are looked up by the number columns' indexes.
    group.append(call_event(team.id, event_id="plan-2", call_id="plan-call-2", phone=second.phone))
    writes.clear()
    found, deferred = apply_free_payloads(conn, group)  # the worker's first pass
    assert not deferred
    assert [found[i].outcome for i in range(2)] == ["applied", "applied"]
    assert found[2].contact_id == second.id  # found by its number
    sent_writes = list(writes)

    sent = " ".join(statement for statement, _ in sent_writes)
    for statement in (
        "UPDATE contacts",
        "DELETE FROM custom_field_values",
        "UPDATE processed_events",
        "FROM contacts JOIN",  # by (team, id)
        "contacts.phone_secondary = anon_",  # the numbers' holders
    ):
        assert statement in sent  # the statements that join the group's rows to a big table
    for statement, parameters in sent_writes:
        read_whole = _sequential_scans(conn, statement, parameters) & set(BIG_TABLES)
        assert not read_whole, statement[:160]
