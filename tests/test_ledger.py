"""The calls ledger (docs/design.md §11): one row per (team, call_id) from every applied event.

The contact's ``call_count``, ``last_called_at`` and ``last_call_outcome`` are computed from
its rows whatever the delivery order, and are not versioned. Both databases.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from contact_sync.accounts.teams import Team
from contact_sync.calls.events import parse_event
from contact_sync.calls.ledger import call_phone, is_newer, newest_per_call, record_of
from contact_sync.db.tables import calls, contact_history, dead_letters
from tests.factories import (
    EVENT_BASE,
    apply_batch,
    call_event,
    call_rows,
    contact_row,
    make_contact,
    make_team,
)

NOW = datetime.now(UTC)


def at(minutes: float) -> datetime:
    return (EVENT_BASE + timedelta(minutes=minutes)).astimezone(UTC)


def ledger_fields(row: Any) -> tuple[Any, Any, Any]:
    return (row.call_count, row.last_called_at, row.last_call_outcome)


# --- the pure rules ---------------------------------------------------------------------


def test_a_row_from_an_event_takes_each_column_from_the_event() -> None:
    event = parse_event(
        call_event(
            "t1",
            minutes=10,
            call_id="call_1",
            phone="(202) 555-1234",
            campaign_id="camp_9",
            direction="inbound",
            outcome="voicemail",
            duration_seconds=90,
            extraction={"summary": "Left a message."},
        ),
        now=NOW,
    )
    record = record_of(event, "ct_1", call_phone(event, "US", "+12025550000"))
    assert record.values() == {
        "team_id": "t1",
        "contact_id": "ct_1",
        "call_id": "call_1",
        "event_id": event.event_id,
        "campaign_id": "camp_9",
        "direction": "inbound",
        "outcome": "voicemail",
        "duration_seconds": 90,
        "started_at": at(10) - timedelta(seconds=90),
        "ended_at": at(10),
        "phone": "+12025551234",
        "summary": "Left a message.",
    }


def test_a_row_without_direction_is_outbound_and_a_given_start_wins_over_the_duration() -> None:
    started = (EVENT_BASE - timedelta(hours=1)).isoformat()
    event = parse_event(
        call_event("t1", contact_id="ct_1", started_at=started, duration_seconds=5), now=NOW
    )
    record = record_of(event, "ct_1", None)
    assert (record.direction, record.started_at) == ("outbound", at(-60))


def test_a_row_without_start_or_duration_has_no_start() -> None:
    event = parse_event(call_event("t1", contact_id="ct_1"), now=NOW)
    assert record_of(event, "ct_1", None).started_at is None


def test_the_phone_is_the_contacts_primary_when_the_event_has_none_or_an_unreadable_one() -> None:
    for extra in ({}, {"phone": "12"}):
        event = parse_event(call_event("t1", contact_id="ct_1", **extra), now=NOW)
        assert call_phone(event, "US", "+12025550000") == "+12025550000"


def test_newer_is_later_end_then_larger_event_id_and_one_row_per_call_is_kept() -> None:
    def record(minutes: float, event_id: str) -> Any:
        payload = call_event("t1", minutes=minutes, call_id="c", contact_id="x", event_id=event_id)
        return record_of(parse_event(payload, now=NOW), "x", None)

    old, tie_small, tie_large = record(0, "evt_z"), record(5, "evt_a"), record(5, "evt_b")
    assert is_newer(tie_small, old.order)
    assert not is_newer(old, tie_small.order)
    assert is_newer(tie_large, tie_small.order)
    assert not is_newer(tie_small, tie_large.order)
    assert is_newer(old, None)
    for order in ([old, tie_small, tie_large], [tie_large, old, tie_small]):
        assert newest_per_call(order) == [tie_large]


# --- the apply writes it ---------------------------------------------------------------


def test_an_applied_event_writes_its_call_and_the_contacts_three_fields(
    engine: Engine, team: Team
) -> None:
    contact = make_contact(engine, team.id, phone="+12025551234")
    event = call_event(
        team.id,
        minutes=3,
        phone="(202) 555-1234",
        campaign_id="camp_1",
        outcome="no_answer",
        duration_seconds=20,
        extraction={"summary": "Rang out."},
    )
    [outcome] = apply_batch(engine, [event])
    assert (outcome.outcome, outcome.contact_id) == ("no_change", contact.id)
    [row] = call_rows(engine, team.id)
    assert (row.contact_id, row.call_id, row.event_id, row.campaign_id) == (
        contact.id,
        event["call_id"],
        event["event_id"],
        "camp_1",
    )
    assert (row.direction, row.outcome, row.duration_seconds, row.phone, row.summary) == (
        "outbound",
        "no_answer",
        20,
        "+12025551234",
        "Rang out.",
    )
    assert (row.started_at, row.ended_at) == (at(3) - timedelta(seconds=20), at(3))
    assert ledger_fields(contact_row(engine, contact.id)) == (1, at(3), "no_answer")


def test_a_call_that_changes_no_field_is_recorded_and_keeps_the_version(
    engine: Engine, team: Team
) -> None:
    contact = make_contact(engine, team.id)
    before = contact_row(engine, contact.id)
    [outcome] = apply_batch(engine, [call_event(team.id, contact_id=contact.id, outcome="busy")])
    assert outcome.outcome == "no_change"
    after = contact_row(engine, contact.id)
    assert (after.version, after.updated_at) == (before.version, before.updated_at)
    assert ledger_fields(after) == (1, at(0), "busy")
    assert len(call_rows(engine, team.id)) == 1


def test_duplicates_and_dead_letters_write_no_call(engine: Engine, team: Team) -> None:
    contact = make_contact(engine, team.id)
    event = call_event(team.id, contact_id=contact.id)
    apply_batch(engine, [event, event])
    apply_batch(engine, [event])
    lost = call_event(team.id, contact_id="ct_nobody")
    invalid = call_event(team.id, contact_id=contact.id, started_at="2999-01-01T00:00:00Z")
    outcomes = apply_batch(engine, [lost, invalid])
    assert [o.reason for o in outcomes] == ["contact_not_found", "invalid_payload"]
    assert [r.event_id for r in call_rows(engine, team.id)] == [event["event_id"]]
    assert contact_row(engine, contact.id).call_count == 1


def test_a_newer_reanalysis_replaces_the_whole_row_and_adds_no_call(
    engine: Engine, team: Team
) -> None:
    contact = make_contact(engine, team.id)
    first = call_event(
        team.id,
        contact_id=contact.id,
        call_id="call_r",
        campaign_id="camp_1",
        outcome="completed",
        duration_seconds=60,
        extraction={"summary": "First pass."},
    )
    again = call_event(
        team.id, minutes=1, contact_id=contact.id, call_id="call_r", outcome="voicemail"
    )
    apply_batch(engine, [first])
    [stored] = call_rows(engine, team.id)
    apply_batch(engine, [again])
    [row] = call_rows(engine, team.id)
    assert row.id == stored.id
    assert (row.event_id, row.campaign_id, row.outcome, row.duration_seconds, row.summary) == (
        again["event_id"],
        None,
        "voicemail",
        None,
        None,
    )
    assert (row.started_at, row.ended_at) == (None, at(1))
    assert ledger_fields(contact_row(engine, contact.id)) == (1, at(1), "voicemail")


def test_an_older_reanalysis_leaves_the_row_exactly_as_it_was(engine: Engine, team: Team) -> None:
    contact = make_contact(engine, team.id)
    newer = call_event(team.id, minutes=5, contact_id=contact.id, call_id="c", outcome="busy")
    older = call_event(
        team.id,
        contact_id=contact.id,
        call_id="c",
        outcome="completed",
        extraction={"contact": {"job_title": "CTO"}, "summary": "Old."},
    )
    apply_batch(engine, [newer])
    [stored] = call_rows(engine, team.id)
    [outcome] = apply_batch(engine, [older])
    assert outcome.outcome == "applied"  # its fields still merge (job title was empty)
    assert call_rows(engine, team.id) == [stored]
    row = contact_row(engine, contact.id)
    assert (row.job_title, *ledger_fields(row)) == ("CTO", 1, at(5), "busy")


def test_on_a_tie_of_ends_the_larger_event_id_is_the_row(engine: Engine, team: Team) -> None:
    contact = make_contact(engine, team.id)
    small = call_event(team.id, contact_id=contact.id, call_id="c", event_id="evt_a")
    large = call_event(
        team.id, contact_id=contact.id, call_id="c", event_id="evt_b", outcome="failed"
    )
    apply_batch(engine, [large])
    apply_batch(engine, [small])
    assert [r.event_id for r in call_rows(engine, team.id)] == ["evt_b"]
    assert contact_row(engine, contact.id).last_call_outcome == "failed"


def test_events_of_one_call_in_one_batch_end_as_if_applied_one_by_one(
    engine: Engine, team: Team
) -> None:
    contact = make_contact(engine, team.id)
    events = [
        call_event(team.id, minutes=m, contact_id=contact.id, call_id="c", outcome=o)
        for m, o in ((2, "busy"), (7, "completed"), (4, "no_answer"))
    ]
    outcomes = apply_batch(engine, events)
    assert {o.outcome for o in outcomes} <= {"applied", "no_change"}
    [row] = call_rows(engine, team.id)
    assert (row.event_id, row.outcome) == (events[1]["event_id"], "completed")
    assert ledger_fields(contact_row(engine, contact.id)) == (1, at(7), "completed")


def test_a_reanalysis_naming_another_contact_moves_the_call_and_both_counts(
    engine: Engine, team: Team
) -> None:
    ada = make_contact(engine, team.id)
    bob = make_contact(engine, team.id, first_name="Bob")
    apply_batch(engine, [call_event(team.id, contact_id=ada.id, call_id="c")])
    apply_batch(engine, [call_event(team.id, minutes=1, contact_id=bob.id, call_id="c")])
    assert [r.contact_id for r in call_rows(engine, team.id)] == [bob.id]
    assert ledger_fields(contact_row(engine, ada.id)) == (0, None, None)
    assert ledger_fields(contact_row(engine, bob.id)) == (1, at(1), "completed")


def test_the_newest_call_gives_the_last_call_fields_and_each_call_counts(
    engine: Engine, team: Team
) -> None:
    contact = make_contact(engine, team.id)
    apply_batch(
        engine,
        [
            call_event(team.id, minutes=9, contact_id=contact.id, outcome="voicemail"),
            call_event(team.id, minutes=1, contact_id=contact.id, outcome="completed"),
        ],
    )
    apply_batch(engine, [call_event(team.id, minutes=5, contact_id=contact.id, outcome="busy")])
    assert ledger_fields(contact_row(engine, contact.id)) == (3, at(9), "voicemail")


def test_the_call_fields_are_written_without_a_history_record_of_their_own(
    engine: Engine, team: Team
) -> None:
    contact = make_contact(engine, team.id)
    apply_batch(engine, [call_event(team.id, contact_id=contact.id, outcome="busy")])
    with engine.connect() as conn:
        records = conn.execute(
            select(contact_history).where(contact_history.c.contact_id == contact.id)
        ).all()
    # The create and the call's own record (every applied event has one); nothing else.
    assert [(r.source, r.version_after) for r in records] in (
        [("api", 1), ("call", 1)],
        [("call", 1), ("api", 1)],
    )
    assert all("call_count" not in str(r.changes) for r in records)


def test_another_teams_call_with_the_same_call_id_is_its_own_row(
    engine: Engine, team: Team, other_team: Team
) -> None:
    ours = make_contact(engine, team.id)
    theirs = make_contact(engine, other_team.id)
    apply_batch(
        engine,
        [
            call_event(team.id, minutes=1, contact_id=ours.id, call_id="c"),
            call_event(other_team.id, contact_id=theirs.id, call_id="c"),
        ],
    )
    assert [r.contact_id for r in call_rows(engine, team.id)] == [ours.id]
    assert [r.contact_id for r in call_rows(engine, other_team.id)] == [theirs.id]


# --- resolution with a direction -------------------------------------------------------


def test_an_outbound_call_to_an_unknown_number_is_dead_lettered_contact_not_found(
    engine: Engine, team: Team
) -> None:
    event = call_event(team.id, phone="(202) 555-0188", direction="outbound", outcome="no_answer")
    [outcome] = apply_batch(engine, [event])
    assert (outcome.outcome, outcome.reason) == ("dead_lettered", "contact_not_found")
    assert "outbound" in (outcome.message or "")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(dead_letters)).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(calls)).scalar_one() == 0


def test_an_inbound_call_or_one_without_direction_from_an_unknown_number_creates_a_contact(
    engine: Engine, team: Team
) -> None:
    inbound = call_event(team.id, phone="+12025550101", direction="inbound")
    round_one = call_event(team.id, phone="+12025550102")
    outcomes = apply_batch(engine, [inbound, round_one])
    assert [o.outcome for o in outcomes] == ["applied", "applied"]
    rows = call_rows(engine, team.id)
    assert sorted((r.direction, r.phone) for r in rows) == [
        ("inbound", "+12025550101"),
        ("outbound", "+12025550102"),
    ]
    for outcome in outcomes:
        row = contact_row(engine, outcome.contact_id or "")
        assert (row.source, row.call_count) == ("inbound-call", 1)


def test_an_outbound_call_to_a_known_number_applies(engine: Engine, team: Team) -> None:
    contact = make_contact(engine, team.id, phone="+12025550103")
    event = call_event(team.id, phone="+12025550103", direction="outbound")
    [outcome] = apply_batch(engine, [event])
    assert (outcome.outcome, outcome.contact_id) == ("applied", contact.id)
    assert call_rows(engine, team.id)[0].direction == "outbound"


def test_an_outbound_call_after_an_inbound_one_in_a_batch_finds_the_contact_it_created(
    engine: Engine, team: Team
) -> None:
    inbound = call_event(team.id, phone="+12025550104", direction="inbound")
    outbound = call_event(team.id, minutes=5, phone="+12025550104", direction="outbound")
    first, second = apply_batch(engine, [inbound, outbound])
    assert (first.outcome, second.outcome) == ("applied", "no_change")
    assert first.contact_id == second.contact_id
    assert contact_row(engine, first.contact_id or "").call_count == 2


def test_an_outbound_call_before_an_inbound_one_in_a_batch_is_not_found_as_alone(
    engine: Engine, team: Team
) -> None:
    outbound = call_event(team.id, minutes=5, phone="+12025550105", direction="outbound")
    inbound = call_event(team.id, phone="+12025550105", direction="inbound")
    first, second = apply_batch(engine, [outbound, inbound])
    assert (first.reason, second.outcome) == ("contact_not_found", "applied")


# --- erasure ---------------------------------------------------------------------------


def test_deleting_a_contact_deletes_its_calls_and_no_other(engine: Engine, team: Team) -> None:
    from contact_sync.contacts.store import delete_contact
    from contact_sync.db.unit_of_work import unit_of_work

    gone = make_contact(engine, team.id)
    kept = make_contact(engine, team.id, first_name="Kept")
    apply_batch(
        engine,
        [call_event(team.id, contact_id=c.id) for c in (gone, gone, kept)],
    )
    with unit_of_work(engine) as uow:
        delete_contact(uow.conn, team_id=team.id, contact_id=gone.id)
        uow.commit()
    assert [r.contact_id for r in call_rows(engine, team.id)] == [kept.id]


# --- the property ----------------------------------------------------------------------

CALL_IDS = ("call_a", "call_b", "call_c", "call_d")
LEDGER_EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def call_sets(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """Event specs over three contacts and four call ids (re-analyses and ties are common).

    Returns the distinct events (as specs, without a team) and the deliveries: batches of
    indexes into them, every event at least once, some twice, in a drawn order.
    """
    specs = [
        {
            "event_id": f"evt_{n}",
            "call_id": draw(st.sampled_from(CALL_IDS)),
            "contact": draw(st.integers(0, 2)),
            "minutes": draw(st.sampled_from([0, 1, 1, 2])),
            "outcome": draw(st.sampled_from(["completed", "voicemail", "no_answer", "busy"])),
            "direction": draw(st.sampled_from([None, "outbound", "inbound"])),
            "duration_seconds": draw(st.sampled_from([None, 0, 45])),
            "by_phone": draw(st.booleans()),
        }
        for n in range(draw(st.integers(1, 8)))
    ]
    repeats = draw(st.lists(st.integers(0, len(specs) - 1), max_size=4))
    order = draw(st.permutations([*range(len(specs)), *repeats]))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=3)))
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    return specs, [batch for batch in batches if batch]


def _team_with_contacts(engine: Engine) -> tuple[Team, list[Any]]:
    team = make_team(engine, f"Ledger {uuid.uuid4().hex[:12]}")
    people = [
        make_contact(engine, team.id, first_name=f"P{i}", phone=f"+1202555{i:04d}")
        for i in range(3)
    ]
    return team, people


def _payload(spec: dict[str, Any], team: Team, people: list[Any]) -> dict[str, Any]:
    person = people[spec["contact"]]
    who = {"phone": person.phone} if spec["by_phone"] else {"contact_id": person.id}
    fields = {k: spec[k] for k in ("event_id", "call_id", "outcome", "duration_seconds")}
    if spec["direction"]:
        fields["direction"] = spec["direction"]
    return call_event(team.id, minutes=spec["minutes"], **who, **fields)


def _ledger(engine: Engine, team: Team, people: list[Any]) -> tuple[list[Any], list[Any]]:
    """The team's ledger and three contact fields, with contacts named by their index."""
    index = {person.id: n for n, person in enumerate(people)}
    skip = {"id", "team_id", "contact_id", "recorded_at"}
    rows = [
        (index[r.contact_id], {k: v for k, v in r._mapping.items() if k not in skip})
        for r in call_rows(engine, team.id)
    ]
    stored = [contact_row(engine, person.id) for person in people]
    # The internal attempt_count (the eligible stream's caps, §12) is the contact's outbound rows.
    for n, row in enumerate(stored):
        outbound = sum(1 for who, r in rows if who == n and r["direction"] == "outbound")
        assert row.attempt_count == outbound
    fields = [ledger_fields(row) for row in stored]
    return rows, fields


@LEDGER_EXAMPLES
@given(case=call_sets())
def test_any_delivery_order_and_batching_with_duplicates_gives_the_ledger_of_time_order(
    engine: Engine, case: tuple[list[dict[str, Any]], list[list[int]]]
) -> None:
    specs, batches = case
    team, people = _team_with_contacts(engine)
    payloads = [_payload(spec, team, people) for spec in specs]
    for batch in batches:
        apply_batch(engine, [payloads[i] for i in batch])
    # The oracle: each event once, alone, in time order, in a team of its own.
    ref_team, ref_people = _team_with_contacts(engine)
    reference = [_payload(spec, ref_team, ref_people) for spec in specs]
    for payload in sorted(reference, key=lambda p: (p["occurred_at"], p["event_id"])):
        apply_batch(engine, [payload])
    assert _ledger(engine, team, people) == _ledger(engine, ref_team, ref_people)
    # And each delivery alone, in the drawn order: the same again.
    one_team, one_people = _team_with_contacts(engine)
    singles = [_payload(spec, one_team, one_people) for spec in specs]
    for index in [i for batch in batches for i in batch]:
        apply_batch(engine, [singles[index]])
    assert _ledger(engine, one_team, one_people) == _ledger(engine, ref_team, ref_people)
