"""The one contact writer and the typed records it stores.

Runs on PostgreSQL and SQLite (the ``engine`` fixture). The stored JSON is
compared as the database renders it, so a change of keys, key order or
value types shows.
"""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, Text, bindparam, cast, select, text, update

from contact_sync.accounts.teams import Team
from contact_sync.calls.apply import apply_payloads
from contact_sync.contacts import writer as contact_writer
from contact_sync.contacts.records import (
    Change,
    Observation,
    Skip,
    observation_from_json,
    observation_json,
    provenance_from_json,
    provenance_json,
)
from contact_sync.contacts.store import update_contact as update_by_person
from contact_sync.contacts.writer import (
    ContactUpdate,
    HistoryRecord,
    record_history,
    update_contact,
    update_contacts,
)
from contact_sync.db.tables import contact_history, contacts
from contact_sync.errors import StaleVersion
from tests.factories import call_event, contact_row, make_contact, make_team

AT = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
CALL = {
    "source": "call",
    "observed_at": "2026-11-20T15:00:00.000000+00:00",
    "event_id": "evt_1",
    "call_id": "call_1",
}

# Every shape of observation the service writes, as it is stored.
STORED_OBSERVATIONS = [
    {"source": "api", "observed_at": "2026-11-20T15:00:00+00:00"},
    {"source": "import", "observed_at": "2026-11-20T16:00:00+01:00"},
    {"source": "suppression", "observed_at": "2026-11-20T15:00:00.123456+00:00"},
    CALL,
    {**CALL, "confidence": 0.9, "evidence": "about five thousand"},
    {**CALL, "confidence": 1},
    {**CALL, "implicit": True, "replaces": None},
    {**CALL, "implicit": True, "replaces": {"source": "api", "observed_at": "2026-11-19"}},
    {**CALL, "implicit": True, "replaces": CALL},
]


@pytest.mark.parametrize("stored", STORED_OBSERVATIONS)
def test_every_stored_observation_reads_back_to_the_same_json(stored: dict[str, Any]) -> None:
    again = observation_json(observation_from_json(stored))
    assert json.dumps(again) == json.dumps(stored)  # same keys, same order, same types


def test_a_call_observation_names_its_event_and_call_a_persons_does_not() -> None:
    assert observation_json(Observation("api", "2026-11-20")) == {
        "source": "api",
        "observed_at": "2026-11-20",
    }
    assert observation_json(Observation("call", "t", "evt_1", "call_1")) == {
        "source": "call",
        "observed_at": "t",
        "event_id": "evt_1",
        "call_id": "call_1",
    }


# A shape the typed observation does not model (keys in another order, a key it does not
# know), as older versions or a hand repair may have left it.
LEGACY = {"observed_at": "2026-11-19T10:00:00+00:00", "source": "import", "note": "csv row 7"}


def _stored_provenance() -> dict[str, Any]:
    entries = {f"custom_fields.k{i}": entry for i, entry in enumerate(STORED_OBSERVATIONS)}
    return {**entries, "email": LEGACY}


def test_stored_provenance_is_decoded_where_looked_at_and_otherwise_kept_as_read() -> None:
    stored = _stored_provenance()
    provenance = provenance_from_json(stored)
    assert provenance["custom_fields.k5"] == observation_from_json(STORED_OBSERVATIONS[5])
    assert provenance.get("job_title") is None
    assert list(provenance) == list(stored)
    assert not provenance.changed()
    assert json.dumps(provenance_json(provenance)) == json.dumps(stored)

    provenance["custom_fields.k0"] = provenance["custom_fields.k0"]  # the same observation
    assert not provenance.changed()
    provenance["job_title"] = Observation("api", "2026-11-21T09:00:00+00:00")
    by_call = Observation("call", "t", "evt_9", "call_9")
    provenance["custom_fields.k1"] = by_call
    assert provenance.changed()
    again = provenance_json(provenance)
    assert list(again) == [*stored, "job_title"]  # a replaced entry keeps its place
    assert again["custom_fields.k1"] == observation_json(by_call)
    assert again["email"] == LEGACY
    assert stored == _stored_provenance()  # the row as read is never changed


def test_an_event_writes_back_the_observations_it_did_not_replace_as_they_were_stored(
    conn: Connection,
) -> None:
    team = make_team(conn)
    created = make_contact(conn, team.id, phone="+12025550143")
    stored = _stored_provenance()
    conn.execute(update(contacts).where(contacts.c.id == created.id).values(provenance=stored))
    event = call_event(
        team.id,
        contact_id=created.id,
        outcome="voicemail",
        extraction={"contact": {"job_title": "CTO"}},
    )
    [outcome] = apply_payloads(conn, [event])
    assert (outcome.outcome, outcome.version) == ("applied", 2)
    text_after = stored_text(conn, contacts.c.provenance, created.id)
    job_title = json.loads(text_after)["job_title"]
    assert job_title["event_id"] == event["event_id"]
    assert text_after == as_stored(conn, {**stored, "job_title": job_title})


def stored_text(conn: Connection, column: Any, row_id: str) -> str:
    """A JSON column's value as the database renders it."""
    table = column.table
    return str(conn.execute(select(cast(column, Text)).where(table.c.id == row_id)).scalar_one())


def as_stored(conn: Connection, document: Any) -> str:
    """How the database renders ``document`` (PostgreSQL normalises JSONB; SQLite keeps text)."""
    kind = "jsonb" if conn.dialect.name == "postgresql" else "text"
    sql = text(f"SELECT CAST(CAST(:doc AS {kind}) AS text)").bindparams(bindparam("doc"))
    return str(conn.execute(sql, {"doc": json.dumps(document)}).scalar_one())


def test_a_call_created_contact_stores_its_provenance_json_as_before(
    engine: Engine, team: Team
) -> None:
    event = call_event(
        team.id,
        phone="+12025550143",
        extraction={"custom_fields": {"budget": {"value": 5, "confidence": 0.9, "evidence": "5"}}},
    )
    with engine.begin() as conn:
        [outcome] = apply_payloads(conn, [event])
    assert outcome.contact_id is not None
    seen = {
        "source": "call",
        "observed_at": datetime.fromisoformat(event["occurred_at"])
        .astimezone(UTC)
        .isoformat(timespec="microseconds"),
        "event_id": event["event_id"],
        "call_id": event["call_id"],
    }
    expected = {
        "phone": seen,
        "source": seen,
        "custom_fields.budget": {**seen, "confidence": 0.9, "evidence": "5"},
        "lead_status": {**seen, "implicit": True, "replaces": None},
    }
    with engine.connect() as conn:
        stored = stored_text(conn, contacts.c.provenance, outcome.contact_id)
        assert stored == as_stored(conn, expected)


def test_a_persons_update_stores_its_change_and_provenance_json_as_before(
    engine: Engine, team: Team
) -> None:
    created = make_contact(engine, team.id, email="ada@example.com")
    with engine.begin() as conn:
        before = json.loads(stored_text(conn, contacts.c.provenance, created.id))
        update_by_person(conn, team_id=team.id, contact_id=created.id, data={"jobTitle": "CTO"})
        record = conn.execute(
            select(contact_history.c.id).where(contact_history.c.version_after == 2)
        ).scalar_one()
        changes = stored_text(conn, contact_history.c.changes, record)
        assert changes == as_stored(conn, [{"field": "job_title", "old": None, "new": "CTO"}])
        stored = stored_text(conn, contacts.c.provenance, created.id)
        observed_at = json.loads(stored)["job_title"]["observed_at"]
        expected = {**before, "job_title": {"source": "api", "observed_at": observed_at}}
        assert stored == as_stored(conn, expected)


def test_history_stores_changes_with_their_reason_and_skips_in_their_json_form(
    engine: Engine, team: Team
) -> None:
    record = HistoryRecord(
        contact_id="c1",
        team_id=team.id,
        version_before=1,
        version_after=2,
        source="call",
        occurred_at=AT,
        recorded_at=AT,
        changes=[Change("do_not_call", False, True, "suppressed"), Change("tags", [], ["a"])],
        skipped=[Skip("email", "x", "invalid: not an email")],
        event_id="evt_1",
        call_id="call_1",
    )
    with engine.begin() as conn:
        record_history(conn, [record])
        row = conn.execute(select(contact_history)).one()
    assert row.changes == [
        {"field": "do_not_call", "old": False, "new": True, "reason": "suppressed"},
        {"field": "tags", "old": [], "new": ["a"]},
    ]
    assert row.skipped == [{"field": "email", "value": "x", "reason": "invalid: not an email"}]


def _next(row: Any, *, read_version: int) -> ContactUpdate:
    return ContactUpdate(
        contact_id=row.id,
        read_version=read_version,
        version=read_version + 1,
        values={"job_title": "CTO"},
        provenance={"job_title": Observation("api", AT.isoformat())},
        updated_at=AT,
    )


def test_a_write_from_a_stale_read_changes_nothing_and_says_so(engine: Engine, team: Team) -> None:
    row = contact_row(engine, make_contact(engine, team.id).id)
    with engine.begin() as conn, pytest.raises(StaleVersion):
        update_contact(conn, _next(row, read_version=row.version + 1))
    after = contact_row(engine, row.id)
    assert (after.version, after.job_title) == (row.version, None)


def test_a_batch_write_that_loses_a_compare_and_set_is_an_error(engine: Engine, team: Team) -> None:
    row = contact_row(engine, make_contact(engine, team.id).id)
    with engine.begin() as conn, pytest.raises(RuntimeError, match="under its lock"):
        update_contacts(conn, [_next(row, read_version=row.version + 1)])
    assert contact_row(engine, row.id).version == row.version


def test_a_batch_write_bumps_each_contact_to_its_next_version(engine: Engine, team: Team) -> None:
    rows = [contact_row(engine, make_contact(engine, team.id).id) for _ in range(3)]
    with engine.begin() as conn:
        update_contacts(conn, [_next(row, read_version=1) for row in rows])
    after = [contact_row(engine, row.id) for row in rows]
    assert [(a.version, a.job_title) for a in after] == [(2, "CTO")] * 3
    seen = {"source": "api", "observed_at": AT.isoformat()}
    assert [a.provenance["job_title"] for a in after] == [seen] * 3


def _statements_writing(path: Path, tables: set[str]) -> list[str]:
    """``insert(t)``, ``update(t)`` and ``delete(t)`` calls on ``tables`` in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"insert", "update", "delete"}
            and node.args
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in tables
        ):
            found.append(f"{path.name}:{node.lineno} {node.func.id}({node.args[0].id})")
    return found


def test_only_the_contact_writer_writes_contact_rows_or_history() -> None:
    writer = Path(contact_writer.__file__)
    package = writer.parents[1]  # src/contact_sync
    writers = [
        statement
        for path in sorted(package.rglob("*.py"))
        if path != writer and "migrations" not in path.parts
        for statement in _statements_writing(path, {"contacts", "contact_history"})
    ]
    assert writers == []


# --- the call fields (docs/design.md §11) ------------------------------------------------


def _ledger_row(conn: Connection, contact: Any, **values: Any) -> None:
    from contact_sync.db.tables import calls

    conn.execute(
        calls.insert().values(
            id=values["call_id"],
            team_id=contact.team_id,
            contact_id=contact.id,
            recorded_at=AT,
            **values,
        )
    )


def test_the_call_fields_are_what_the_ledger_says_and_none_for_a_contact_without_calls(
    engine: Engine, team: Team
) -> None:
    called, quiet = (make_contact(engine, team.id) for _ in range(2))
    later = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        for call_id, event_id, direction, outcome, ended_at in [
            ("c1", "evt_1", "outbound", "no_answer", AT),
            ("c2", "evt_B", "inbound", "voicemail", later),
            # Same end as c2: the larger event id in code-point order is the newer ("a" > "B").
            ("c3", "evt_a", "outbound", "connected", later),
        ]:
            _ledger_row(
                conn,
                called,
                call_id=call_id,
                event_id=event_id,
                direction=direction,
                outcome=outcome,
                ended_at=ended_at,
            )
        found = contact_writer.call_fields(conn, [called.id, quiet.id])

    assert found[quiet.id] == dict(contact_writer.NO_CALLS)
    assert found[called.id] == {
        "call_count": 3,
        "attempt_count": 2,
        "last_called_at": later,
        "last_call_outcome": "connected",
    }


def test_writing_the_call_fields_alone_leaves_the_version_and_the_history_alone(
    engine: Engine, team: Team
) -> None:
    row = contact_row(engine, make_contact(engine, team.id).id)
    fields = {
        "call_count": 2,
        "attempt_count": 1,
        "last_called_at": AT,
        "last_call_outcome": "connected",
    }
    with engine.begin() as conn:
        contact_writer.write_call_fields(conn, {row.id: fields})
        history = conn.execute(select(contact_history.c.id)).all()

    after = contact_row(engine, row.id)
    assert {name: getattr(after, name) for name in fields} == fields
    assert (after.version, after.updated_at) == (row.version, row.updated_at)
    assert len(history) == 1  # the create's record only


def test_an_applied_event_writes_its_contact_once_with_the_call_fields_on_its_next_version(
    pg_engine: Engine,
) -> None:
    # The call fields used to be a second update of the same rows after the versioned one:
    # a second copy of each contact's whole row (2-3 KB and its index entries) a batch.
    team = make_team(pg_engine)
    contact = make_contact(pg_engine, team.id, phone="+12025550143")
    event = call_event(team.id, contact_id=contact.id, extraction={"tags": ["roof"]})
    with pg_engine.begin() as conn:
        (outcome,) = apply_payloads(conn, [event])
        updates = conn.execute(
            text("SELECT pg_stat_get_xact_tuples_updated('contacts'::regclass)")
        ).scalar_one()

    assert outcome.outcome == "applied"
    assert updates == 1
    after = contact_row(pg_engine, contact.id)
    assert (after.version, after.tags, after.call_count) == (2, ["roof"], 1)
    assert (after.attempt_count, after.last_call_outcome) == (1, "completed")


def test_a_history_row_holds_exactly_the_history_table_columns() -> None:
    # record_history sends these rows as they are (db/bulk.given_rows): a column left
    # out would be written NULL by jsonb_to_recordset, not refused.
    moment = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    record = HistoryRecord(
        contact_id="ct_1",
        team_id="team_1",
        version_before=1,
        version_after=2,
        source="call",
        occurred_at=moment,
        recorded_at=moment,
    )
    assert set(contact_writer._history_row(record)) == {c.name for c in contact_history.c}
