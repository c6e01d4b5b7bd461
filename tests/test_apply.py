"""The apply service called directly, no Celery (docs/design.md §3–§6).

Runs on PostgreSQL and SQLite. A test that applies and reads through one connection
uses ``conn`` (rolled back after it: nothing to empty); the CLI replay and the concurrency
tests, where several connections or processes write, use ``engine``; the one that relies on
PostgreSQL's locks runs there only.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select, text

from contact_sync.accounts.teams import Team
from contact_sync.calls.apply import STATE_FIELDS, Outcome, apply_payloads
from contact_sync.contacts.store import update_contact
from contact_sync.db.tables import contact_history, contacts, dead_letters, processed_events
from tests.factories import (
    Database,
    call_event,
    contact_row,
    make_contact,
    make_team,
    merged_in_time_order,
    reading,
    writing,
)


def apply(db: Database, *payloads: Any) -> list[Outcome]:
    """Apply payloads in a transaction of their own (a savepoint on ``conn``), as the worker's
    task does."""
    with writing(db) as conn:
        return apply_payloads(conn, list(payloads))


@pytest.fixture
def acme(conn: Connection) -> Team:
    """A US team made on the test's connection."""
    return make_team(conn, "Acme Solar")


@pytest.fixture
def rival(conn: Connection) -> Team:
    """A second team on the test's connection, for isolation checks."""
    return make_team(conn, "Rival Roofing")


def call_history(db: Database, contact_id: str) -> list[Any]:
    """The contact's history records written by calls, oldest version first."""
    with reading(db) as conn:
        return list(
            conn.execute(
                select(contact_history)
                .where(
                    contact_history.c.contact_id == contact_id, contact_history.c.source == "call"
                )
                .order_by(contact_history.c.version_after, contact_history.c.recorded_at)
            )
        )


def all_rows(db: Database, table: Any) -> list[Any]:
    with reading(db) as conn:
        return list(conn.execute(select(table)))


def count(db: Database, table: Any) -> int:
    with reading(db) as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def inbox(db: Database, event_id: str) -> Any:
    with reading(db) as conn:
        return conn.execute(
            select(processed_events).where(processed_events.c.event_id == event_id)
        ).one_or_none()


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTACT_SYNC_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "contact_sync.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


FULL_EXTRACTION: dict[str, Any] = {
    "extractor_version": "v3",
    "custom_fields": {
        "budget": {"value": 50000, "confidence": 0.92, "evidence": "about fifty thousand"},
        "product_interest": "solar",
        "callback_day": None,
    },
    "contact": {"email": "ada@example.com", "job_title": "CTO"},
    "lead_status": "qualified",
    "tags": ["hot-lead"],
    "summary": "Interested in a 6 kW system; call back Tuesday.",
}


# --- resolving the contact and applying --------------------------------------------


def test_an_event_by_contact_id_changes_the_contact_once_with_one_history_record(
    conn: Connection, acme: Team
) -> None:
    contact = make_contact(conn, acme.id, phone="+12025551234")
    event = call_event(acme.id, contact_id=contact.id, extraction=FULL_EXTRACTION)

    [outcome] = apply(conn, event)

    assert (outcome.outcome, outcome.contact_id, outcome.version) == ("applied", contact.id, 2)
    row = contact_row(conn, contact.id)
    assert row.custom_fields == {"budget": 50000, "product_interest": "solar"}
    assert (row.email, row.job_title, row.lead_status) == ("ada@example.com", "CTO", "qualified")
    assert row.tags == ["hot-lead"]
    assert row.notes is None  # the summary stays with the call, not in notes
    assert row.version == 2
    assert row.provenance["custom_fields.budget"]["confidence"] == 0.92
    assert row.provenance["custom_fields.budget"]["event_id"] == event["event_id"]
    [record] = call_history(conn, contact.id)
    assert (record.event_id, record.call_id) == (event["event_id"], event["call_id"])
    assert (record.version_before, record.version_after) == (1, 2)
    assert record.summary == FULL_EXTRACTION["summary"]
    changed = {change["field"] for change in record.changes}
    assert {"custom_fields.budget", "custom_fields.product_interest", "email", "job_title"} <= (
        changed
    )
    assert "custom_fields.callback_day" not in changed  # null changes nothing
    claimed = inbox(conn, event["event_id"])
    assert (claimed.outcome, claimed.contact_id) == ("applied", contact.id)


def test_an_event_by_phone_in_national_format_finds_the_contact_by_either_number(
    conn: Connection, acme: Team
) -> None:
    ada = make_contact(conn, acme.id, phone="+12025551234")
    bob = make_contact(conn, acme.id, first_name="Bob", phone_secondary="+12025550143")
    to_ada = call_event(acme.id, phone="(202) 555-1234", extraction={"tags": ["a"]})
    to_bob = call_event(acme.id, phone="202.555.0143", extraction={"tags": ["b"]})

    outcomes = apply(conn, to_ada, to_bob)

    assert [(o.outcome, o.contact_id) for o in outcomes] == [
        ("applied", ada.id),
        ("applied", bob.id),
    ]
    assert contact_row(conn, ada.id).tags == ["a"]
    assert contact_row(conn, bob.id).tags == ["b"]
    assert count(conn, contacts) == 2  # found, not created


def test_the_same_event_three_times_changes_the_contact_once(conn: Connection, acme: Team) -> None:
    contact = make_contact(conn, acme.id)
    event = call_event(acme.id, contact_id=contact.id, extraction=FULL_EXTRACTION)

    outcomes = [apply(conn, event)[0].outcome for _ in range(3)]

    assert outcomes == ["applied", "duplicate", "duplicate"]
    assert contact_row(conn, contact.id).version == 2
    assert len(call_history(conn, contact.id)) == 1
    assert count(conn, processed_events) == 1


def test_the_same_event_three_times_in_one_batch_changes_the_contact_once(
    conn: Connection, acme: Team
) -> None:
    contact = make_contact(conn, acme.id)
    event = call_event(acme.id, contact_id=contact.id, extraction=FULL_EXTRACTION)

    outcomes = apply(conn, event, dict(event), dict(event))

    assert sorted(o.outcome for o in outcomes) == ["applied", "duplicate", "duplicate"]
    assert contact_row(conn, contact.id).version == 2
    assert len(call_history(conn, contact.id)) == 1


def test_an_older_event_delivered_after_a_newer_one_does_not_overwrite_it(
    conn: Connection, acme: Team
) -> None:
    def older(contact_id: str) -> dict[str, Any]:
        extraction = {
            "custom_fields": {"budget": 1},
            "contact": {"job_title": "Owner"},
            "lead_status": "qualified",
        }
        return call_event(acme.id, minutes=0, contact_id=contact_id, extraction=extraction)

    def newer(contact_id: str) -> dict[str, Any]:
        extraction = {
            "custom_fields": {"budget": 2},
            "contact": {"job_title": "CTO"},
            "lead_status": "unqualified",
        }
        return call_event(acme.id, minutes=10, contact_id=contact_id, extraction=extraction)

    late = make_contact(conn, acme.id)
    in_order = make_contact(conn, acme.id, first_name="Bob")

    newest_first = [o.outcome for o in apply(conn, newer(late.id))]
    newest_first += [o.outcome for o in apply(conn, older(late.id))]
    apply(conn, older(in_order.id))
    apply(conn, newer(in_order.id))

    assert newest_first == ["applied", "no_change"]
    row = contact_row(conn, late.id)
    assert (row.custom_fields, row.job_title, row.lead_status) == (
        {"budget": 2},
        "CTO",
        "unqualified",
    )
    assert row.version == 2
    reference = contact_row(conn, in_order.id)
    assert {n: getattr(row, n) for n in STATE_FIELDS if n != "first_name"} == {
        n: getattr(reference, n) for n in STATE_FIELDS if n != "first_name"
    }
    late_record = call_history(conn, late.id)[-1]
    assert (late_record.version_before, late_record.version_after) == (2, 2)
    assert late_record.changes == []
    skipped = {item["field"]: item["reason"] for item in late_record.skipped}
    assert skipped == {
        "custom_fields.budget": "older_than_current",
        "job_title": "older_than_current",
        "lead_status": "older_than_current",
    }


def test_an_unknown_number_creates_an_inbound_call_contact_found_by_later_calls(
    conn: Connection, acme: Team
) -> None:
    named = call_event(
        acme.id,
        phone="(202) 555-0199",
        extraction={
            "contact": {"first_name": "Grace", "last_name": "Hopper"},
            "custom_fields": {"budget": 9000},
        },
    )
    anonymous = call_event(acme.id, phone="+1 202 555 0177", outcome="voicemail")
    follow_up = call_event(acme.id, minutes=5, phone="+12025550199", extraction={"tags": ["x"]})

    [created, unnamed] = apply(conn, named, anonymous)
    [followed] = apply(conn, follow_up)

    assert (created.outcome, created.version) == ("applied", 1)
    row = contact_row(conn, created.contact_id)
    assert (row.first_name, row.last_name, row.phone) == ("Grace", "Hopper", "+12025550199")
    assert (row.source, row.team_id) == ("inbound-call", acme.id)
    assert row.custom_fields == {"budget": 9000}
    unknown = contact_row(conn, unnamed.contact_id)
    assert (unknown.first_name, unknown.last_name, unknown.phone) == (
        "Unknown",
        "Unknown",
        "+12025550177",
    )
    assert unknown.source == "inbound-call"
    assert followed.contact_id == created.contact_id
    assert count(conn, contacts) == 2
    first = call_history(conn, created.contact_id)[0]
    assert (first.version_before, first.version_after) == (None, 1)
    assert first.event_id == named["event_id"]
    assert {"field": "phone", "old": None, "new": "+12025550199"} in first.changes


def test_an_event_within_the_future_tolerance_applies(conn: Connection, acme: Team) -> None:
    contact = make_contact(conn, acme.id)
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    event = call_event(acme.id, contact_id=contact.id, occurred_at=soon, extraction={"tags": ["s"]})

    assert [o.outcome for o in apply(conn, event)] == ["applied"]


# --- dead letters -------------------------------------------------------------------


def only_dead_letter(conn: Connection) -> Any:
    [letter] = all_rows(conn, dead_letters)
    return letter


def test_an_unknown_contact_id_is_dead_lettered_as_contact_not_found(
    conn: Connection, acme: Team
) -> None:
    event = call_event(acme.id, contact_id="ct_does_not_exist", extraction=FULL_EXTRACTION)

    [outcome] = apply(conn, event)

    assert (outcome.outcome, outcome.reason) == ("dead_lettered", "contact_not_found")
    letter = only_dead_letter(conn)
    assert (letter.reason, letter.event_id, letter.team_id) == (
        "contact_not_found",
        event["event_id"],
        acme.id,
    )
    assert letter.payload == event
    assert (letter.attempts, letter.replayed_at) == (1, None)
    assert "ct_does_not_exist" in letter.message
    assert inbox(conn, event["event_id"]).outcome == "dead_lettered"
    assert count(conn, contacts) == 0


def test_a_contact_of_another_team_is_never_used(conn: Connection, acme: Team, rival: Team) -> None:
    theirs = make_contact(conn, rival.id, phone="+12025551234")
    by_id = call_event(acme.id, contact_id=theirs.id, extraction=FULL_EXTRACTION)
    by_phone = call_event(acme.id, phone="+12025551234", extraction=FULL_EXTRACTION)

    outcomes = apply(conn, by_id, by_phone)

    assert (outcomes[0].outcome, outcomes[0].reason) == ("dead_lettered", "contact_not_found")
    # By phone, the other team's contact is invisible: a contact of this team is created.
    assert outcomes[1].outcome == "applied"
    assert outcomes[1].contact_id != theirs.id
    untouched = contact_row(conn, theirs.id)
    assert (untouched.version, untouched.custom_fields, untouched.email) == (1, {}, None)
    assert call_history(conn, theirs.id) == []
    assert only_dead_letter(conn).payload == by_id


def test_an_event_of_an_unknown_team_is_dead_lettered_as_contact_not_found(
    conn: Connection,
) -> None:
    event = call_event("team_that_does_not_exist", phone="+12025551234")

    [outcome] = apply(conn, event)

    assert (outcome.outcome, outcome.reason) == ("dead_lettered", "contact_not_found")
    assert count(conn, contacts) == 0


def test_a_number_shared_by_two_contacts_is_dead_lettered_as_ambiguous(
    conn: Connection, acme: Team
) -> None:
    ada = make_contact(conn, acme.id, phone="+12025551234")
    bob = make_contact(conn, acme.id, first_name="Bob", phone_secondary="+12025551234")
    event = call_event(acme.id, phone="202-555-1234", extraction=FULL_EXTRACTION)

    [outcome] = apply(conn, event)

    assert (outcome.outcome, outcome.reason) == ("dead_lettered", "ambiguous_contact")
    assert only_dead_letter(conn).payload == event
    for contact in (ada, bob):
        assert contact_row(conn, contact.id).version == 1
        assert call_history(conn, contact.id) == []
    assert count(conn, contacts) == 2


def _without(key: str) -> Any:
    def build(team_id: str) -> dict[str, Any]:
        event = call_event(team_id, phone="+12025551234")
        del event[key]
        return event

    return build


def _with(**fields: Any) -> Any:
    return lambda team_id: call_event(team_id, **{"phone": "+12025551234", **fields})


INVALID = {
    "not an object": (lambda team_id: ["call.completed", team_id], "invalid_payload"),
    "no call_id": (_without("call_id"), "invalid_payload"),
    "no occurred_at": (_without("occurred_at"), "invalid_payload"),
    "unknown outcome": (_with(outcome="exploded"), "invalid_payload"),
    "wrong type": (_with(type="call.started"), "invalid_payload"),
    "naive occurred_at": (_with(occurred_at="2026-11-20T15:04:05"), "invalid_payload"),
    "numeric occurred_at": (_with(occurred_at=1763650000), "invalid_payload"),
    "unexpected field": (_with(caller_mood="happy"), "invalid_payload"),
    "neither contact_id nor phone": (_without("phone"), "invalid_payload"),
    "invalid phone": (_with(phone="12"), "invalid_payload"),
    "schema_version true": (_with(schema_version=True), "invalid_payload"),
    "custom field key": (_with(extraction={"custom_fields": {"a b": 1}}), "invalid_payload"),
    "schema_version 2": (_with(schema_version=2), "unsupported_schema_version"),
    "in the future": (
        _with(occurred_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()),
        "occurred_in_future",
    ),
}


@pytest.mark.parametrize(("build", "reason"), INVALID.values(), ids=INVALID.keys())
def test_a_bad_payload_is_dead_lettered_with_its_reason_and_raw_payload(
    conn: Connection, acme: Team, build: Any, reason: str
) -> None:
    contact = make_contact(conn, acme.id, phone="+12025551234")
    payload = build(acme.id)
    if isinstance(payload, dict):  # stored exactly: a person reads it to fix the cause
        summary = "Élodie said “call back” 🌞"
        payload.setdefault("extraction", {"summary": summary, "custom_fields": {"n": [1.5, None]}})

    [outcome] = apply(conn, payload)

    assert (outcome.outcome, outcome.reason) == ("dead_lettered", reason)
    letter = only_dead_letter(conn)
    assert letter.reason == reason
    assert letter.payload == payload
    assert letter.message
    event_id = payload.get("event_id") if isinstance(payload, dict) else None
    assert letter.event_id == event_id
    if event_id is not None:
        assert inbox(conn, event_id).outcome == "dead_lettered"
    assert contact_row(conn, contact.id).version == 1
    assert call_history(conn, contact.id) == []


UNSTORABLE = {
    "NUL in the summary": {"extraction": {"summary": "a\x00b"}},
    "lone surrogate in the summary": {"extraction": {"summary": "a\ud800b"}},
    "lone surrogate in a custom field": {"extraction": {"custom_fields": {"note": "\udfff"}}},
    "NUL in an unknown key": {"caller\x00mood": "happy"},
}


@pytest.mark.parametrize("fields", UNSTORABLE.values(), ids=UNSTORABLE.keys())
def test_text_no_database_can_store_is_dead_lettered_as_its_json_text(
    conn: Connection, acme: Team, fields: dict[str, Any]
) -> None:
    # JSON may carry U+0000 and lone surrogates ("\ud800"); PostgreSQL stores neither.
    contact = make_contact(conn, acme.id, phone="+12025551234")
    payload = call_event(acme.id, phone="+12025551234", **fields)

    [outcome] = apply(conn, payload)

    assert (outcome.outcome, outcome.reason) == ("dead_lettered", "invalid_payload")
    letter = only_dead_letter(conn)
    assert letter.event_id == payload["event_id"]
    assert json.loads(letter.payload["raw_json"]) == payload
    assert contact_row(conn, contact.id).version == 1


@pytest.mark.parametrize(
    "fields",
    [{"event_id": "evt_\x00"}, {"event_id": "evt_\ud800"}, {"team_id": "team_\x00"}],
    ids=["NUL in event_id", "lone surrogate in event_id", "NUL in team_id"],
)
def test_an_id_no_database_can_store_is_dead_lettered_without_it(
    pg_engine: Engine, pg_team: Team, fields: dict[str, Any]
) -> None:
    payload = {**call_event(pg_team.id, phone="+12025551234"), **fields}

    [outcome] = apply(pg_engine, payload)

    assert (outcome.outcome, outcome.reason) == ("dead_lettered", "invalid_payload")
    assert count(pg_engine, dead_letters) == 1


def test_one_bad_event_in_a_batch_never_fails_its_batch_mates(conn: Connection, acme: Team) -> None:
    ada = make_contact(conn, acme.id)
    bob = make_contact(conn, acme.id, first_name="Bob", phone="+12025551234")
    good = [
        call_event(acme.id, contact_id=ada.id, extraction={"tags": ["one"]}),
        call_event(acme.id, minutes=1, contact_id=ada.id, extraction={"tags": ["two"]}),
        call_event(acme.id, phone="(202) 555-1234", extraction={"tags": ["three"]}),
    ]
    bad = call_event(acme.id, contact_id=ada.id, outcome="exploded")

    outcomes = apply(conn, good[0], bad, good[1], good[2])

    assert [o.outcome for o in outcomes] == ["applied", "dead_lettered", "applied", "applied"]
    assert outcomes[1].reason == "invalid_payload"
    assert sorted(contact_row(conn, ada.id).tags) == ["one", "two"]
    assert contact_row(conn, bob.id).tags == ["three"]
    assert sorted(r.event_id for r in call_history(conn, ada.id)) == sorted(
        event["event_id"] for event in good[:2]
    )
    assert only_dead_letter(conn).event_id == bad["event_id"]


def test_a_redelivered_dead_lettered_event_bumps_attempts_instead_of_adding_one(
    conn: Connection, acme: Team
) -> None:
    event = call_event(acme.id, contact_id="ct_missing")

    apply(conn, event)
    first = only_dead_letter(conn)
    [again] = apply(conn, event)

    assert (again.outcome, again.reason) == ("dead_lettered", "contact_not_found")
    letter = only_dead_letter(conn)
    assert (letter.id, letter.attempts) == (first.id, 2)
    assert letter.first_seen_at == first.first_seen_at
    assert letter.last_seen_at >= first.last_seen_at


def test_a_dead_letter_replays_from_the_cli_once_its_cause_is_fixed(
    engine: Engine, team: Team, database_url: str
) -> None:
    ada = make_contact(engine, team.id, phone="+12025551234")
    bob = make_contact(engine, team.id, first_name="Bob", phone="+12025551234")
    event = call_event(team.id, phone="(202) 555-1234", extraction=FULL_EXTRACTION)
    apply(engine, event)
    letter_id = only_dead_letter(engine).id

    still_ambiguous = run_cli(database_url, "dead-letters", "replay", letter_id)
    assert still_ambiguous.returncode == 1, still_ambiguous.stderr
    assert f"{letter_id}: dead_lettered (ambiguous_contact" in still_ambiguous.stdout
    assert only_dead_letter(engine).attempts == 2

    with engine.begin() as conn:
        update_contact(conn, team_id=team.id, contact_id=bob.id, data={"phone": "+12025550143"})
    replayed = run_cli(database_url, "dead-letters", "replay", letter_id)

    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == f"{letter_id}: applied"
    letter = only_dead_letter(engine)
    assert letter.replayed_at is not None
    row = contact_row(engine, ada.id)
    assert (row.version, row.email, row.job_title) == (2, "ada@example.com", "CTO")
    assert [r.event_id for r in call_history(engine, ada.id)] == [event["event_id"]]
    assert inbox(engine, event["event_id"]).outcome == "applied"

    listed = run_cli(database_url, "dead-letters", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [shown] = json.loads(listed.stdout)
    assert (shown["id"], shown["reason"], shown["event_id"]) == (
        letter_id,
        "ambiguous_contact",
        event["event_id"],
    )
    assert shown["payload"] == event
    assert shown["attempts"] == 2
    assert datetime.fromisoformat(shown["replayed_at"]) == letter.replayed_at


# --- concurrency --------------------------------------------------------------------


def apply_concurrently(engine: Engine, shares: list[list[dict[str, Any]]]) -> list[BaseException]:
    """One thread per share, all starting together, each applying its events one by one."""
    barrier = threading.Barrier(len(shares))
    errors: list[BaseException] = []

    def work(share: list[dict[str, Any]]) -> None:
        barrier.wait()
        try:
            for payload in share:
                apply(engine, payload)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def test_concurrent_appliers_lose_no_update_and_keep_versions_contiguous(
    engine: Engine, team: Team
) -> None:
    rng = random.Random(7)
    people = [make_contact(engine, team.id, first_name=f"P{i}") for i in range(2)]
    before = {p.id: contact_row(engine, p.id) for p in people}
    payloads = [
        call_event(
            team.id,
            minutes=rng.randrange(0, 30),
            contact_id=rng.choice(people).id,
            outcome=rng.choice(["completed", "voicemail"]),
            extraction={
                "custom_fields": {"budget": rng.randrange(100), "kw": rng.choice([3, 6, None])},
                "contact": {"job_title": rng.choice(["CTO", "Owner", "CFO"])},
                "tags": [rng.choice(["a", "b", "c", "d"])],
                "lead_status": rng.choice([None, "qualified", "unqualified"]),
            },
        )
        for _ in range(40)
    ]
    assert apply_concurrently(engine, [payloads[i::4] for i in range(4)]) == []

    for person in people:
        mine = [p for p in payloads if p["contact_id"] == person.id]
        row = contact_row(engine, person.id)
        assert {n: getattr(row, n) for n in STATE_FIELDS} == merged_in_time_order(
            before[person.id], mine
        )
        records = call_history(engine, person.id)
        assert sorted(r.event_id for r in records) == sorted(p["event_id"] for p in mine)
        changing = [r for r in records if r.version_after != r.version_before]
        assert all(r.version_after == r.version_before + 1 for r in changing)
        assert sorted(r.version_after for r in changing) == list(range(2, row.version + 1))


def test_two_appliers_seeing_one_unknown_number_create_one_contact(
    pg_engine: Engine, pg_team: Team
) -> None:
    """The first holds its transaction open until the second waits on it, then commits."""
    first = call_event(pg_team.id, phone="+12025550111", extraction={"tags": ["first"]})
    second = call_event(pg_team.id, minutes=1, phone="(202) 555-0111", extraction={"tags": ["2"]})
    outcomes: list[Outcome] = []

    with pg_engine.connect() as holder:
        with holder.begin():
            [created] = apply_payloads(holder, [first])
            other = threading.Thread(target=lambda: outcomes.extend(apply(pg_engine, second)))
            other.start()
            waited = wait_for_a_blocked_backend(pg_engine)
        other.join(30)

    [row] = all_rows(pg_engine, contacts)
    assert (sorted(row.tags), row.version) == (["2", "first"], 2)
    assert created.outcome == "applied"
    assert [(o.outcome, o.contact_id) for o in outcomes] == [("applied", created.contact_id)]
    assert waited, "the second applier never waited for the first"


def wait_for_a_blocked_backend(engine: Engine, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            conn.rollback()
            if waiting:
                return True
            time.sleep(0.02)
    return False


def test_racing_appliers_for_unknown_numbers_create_one_contact_per_number(
    pg_engine: Engine, pg_team: Team
) -> None:
    numbers = [f"+1202555{n:04d}" for n in range(200, 210)]
    for number in numbers:
        pair = [[call_event(pg_team.id, minutes=m, phone=number)] for m in (0, 1)]
        assert apply_concurrently(pg_engine, pair) == []

    with pg_engine.connect() as conn:
        per_number = dict(
            conn.execute(select(contacts.c.phone, func.count()).group_by(contacts.c.phone)).all()
        )
    assert per_number == dict.fromkeys(numbers, 1)
    assert count(pg_engine, processed_events) == 2 * len(numbers)
