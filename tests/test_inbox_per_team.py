"""The inbox is keyed by ``(team_id, event_id)`` (README, "The event path"; issue 18 item 5).

Event ids are unique within a team's pipeline, not across teams: team B's
``evt-shared`` is B's event even after team A applied its own ``evt-shared``.
Within a team, duplicates are absorbed exactly as before; dead letters are
per team too. The migration keeps round-1 rows working on both backends.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from alembic import command
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.engine import make_url

from contact_sync.accounts.teams import Team, create_team
from contact_sync.db.engine import make_engine
from contact_sync.db.migrate import alembic_config, upgrade
from contact_sync.db.tables import dead_letters, processed_events
from tests.factories import QUEUE, apply_batch, call_event, contact_row, make_contact, task_envelope
from tests.services import redis_server
from tests.workers import start_worker, stop_worker

SHARED_ID = "evt-shared"


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def budget(team_id: str, contact_id: str, value: int, **fields: Any) -> dict[str, Any]:
    """An event of the team about its contact that sets custom field ``budget``."""
    return call_event(
        team_id,
        contact_id=contact_id,
        extraction={"custom_fields": {"budget": value}},
        **fields,
    )


def inbox_rows(engine: Engine, event_id: str) -> dict[str, Any]:
    """The inbox rows of ``event_id``, by team."""
    with engine.connect() as conn:
        rows = conn.execute(select(processed_events).where(processed_events.c.event_id == event_id))
        return {row.team_id: row for row in rows}


def letters(engine: Engine, event_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(dead_letters)
                .where(dead_letters.c.event_id == event_id)
                .order_by(dead_letters.c.first_seen_at, dead_letters.c.id)
            )
        )


# --- the apply path --------------------------------------------------------------------


def test_another_teams_event_with_an_id_one_team_applied_applies_too(
    engine: Engine, team: Team, other_team: Team
) -> None:
    mine = make_contact(engine, team.id)
    theirs = make_contact(engine, other_team.id, first_name="Grace")

    [first] = apply_batch(engine, [budget(team.id, mine.id, 1, event_id=SHARED_ID)])
    [second] = apply_batch(engine, [budget(other_team.id, theirs.id, 2, event_id=SHARED_ID)])

    assert (first.outcome, second.outcome) == ("applied", "applied")
    assert contact_row(engine, mine.id).custom_fields == {"budget": 1}
    assert contact_row(engine, theirs.id).custom_fields == {"budget": 2}
    rows = inbox_rows(engine, SHARED_ID)
    assert {team_id: row.contact_id for team_id, row in rows.items()} == {
        team.id: mine.id,
        other_team.id: theirs.id,
    }


def test_a_redelivery_within_a_team_is_still_a_duplicate(
    engine: Engine, team: Team, other_team: Team
) -> None:
    mine = make_contact(engine, team.id)
    theirs = make_contact(engine, other_team.id, first_name="Grace")
    apply_batch(engine, [budget(team.id, mine.id, 1, event_id=SHARED_ID)])
    apply_batch(engine, [budget(other_team.id, theirs.id, 2, event_id=SHARED_ID)])

    # The same ids again, even with other values: each team has applied its event once.
    again = apply_batch(
        engine,
        [
            budget(team.id, mine.id, 7, event_id=SHARED_ID),
            budget(other_team.id, theirs.id, 8, event_id=SHARED_ID),
        ],
    )

    assert [o.outcome for o in again] == ["duplicate", "duplicate"]
    assert contact_row(engine, mine.id).version == 2
    assert contact_row(engine, theirs.id).custom_fields == {"budget": 2}


def test_two_teams_events_with_one_id_in_one_batch_apply_each_once(
    engine: Engine, team: Team, other_team: Team
) -> None:
    mine = make_contact(engine, team.id)
    theirs = make_contact(engine, other_team.id, first_name="Grace")
    a_event = budget(team.id, mine.id, 1, event_id=SHARED_ID)
    b_event = budget(other_team.id, theirs.id, 2, event_id=SHARED_ID)

    outcomes = apply_batch(engine, [a_event, b_event, b_event])

    assert [(o.outcome, o.team_id, o.contact_id) for o in outcomes] == [
        ("applied", team.id, mine.id),
        ("applied", other_team.id, theirs.id),
        ("duplicate", other_team.id, None),
    ]
    assert contact_row(engine, theirs.id).custom_fields == {"budget": 2}
    assert set(inbox_rows(engine, SHARED_ID)) == {team.id, other_team.id}


def test_two_teams_unknown_numbers_under_one_event_id_create_a_contact_in_each(
    engine: Engine, team: Team, other_team: Team
) -> None:
    phone = "+12025550111"
    outcomes = apply_batch(
        engine,
        [
            call_event(team.id, event_id=SHARED_ID, phone=phone),
            call_event(other_team.id, event_id=SHARED_ID, phone=phone),
        ],
    )

    assert [o.outcome for o in outcomes] == ["applied", "applied"]
    created = {o.team_id: contact_row(engine, o.contact_id or "") for o in outcomes}
    assert {t: (row.team_id, row.phone) for t, row in created.items()} == {
        team.id: (team.id, phone),
        other_team.id: (other_team.id, phone),
    }


# --- dead letters ----------------------------------------------------------------------


def test_each_team_parks_its_own_event_under_a_shared_id_in_its_own_letter(
    engine: Engine, team: Team, other_team: Team
) -> None:
    missing = f"ct_missing_{uuid.uuid4().hex[:8]}"
    a_event = call_event(team.id, event_id=SHARED_ID, contact_id=missing)
    b_event = call_event(other_team.id, event_id=SHARED_ID, contact_id=missing)

    apply_batch(engine, [a_event])
    apply_batch(engine, [b_event])
    apply_batch(engine, [a_event])  # A's redelivery

    parked = {letter.team_id: letter for letter in letters(engine, SHARED_ID)}
    assert set(parked) == {team.id, other_team.id}
    assert (parked[team.id].attempts, parked[team.id].payload) == (2, a_event)
    assert (parked[other_team.id].attempts, parked[other_team.id].payload) == (1, b_event)
    assert {t: row.outcome for t, row in inbox_rows(engine, SHARED_ID).items()} == {
        team.id: "dead_lettered",
        other_team.id: "dead_lettered",
    }


def test_a_letter_whose_team_was_unreadable_is_not_rewritten_by_a_teams_event(
    engine: Engine, team: Team
) -> None:
    """A payload whose team cannot be read is nobody's event: a team's bad event that
    carries its id is parked in a letter of its own, and the first letter stays as it was."""
    teamless = {**call_event(team.id, event_id=SHARED_ID, phone="+12025550111"), "team_id": 7}
    apply_batch(engine, [teamless])
    bad = call_event(team.id, event_id=SHARED_ID, phone="+12025550111", outcome="exploded")

    apply_batch(engine, [bad])

    parked = {letter.team_id: letter for letter in letters(engine, SHARED_ID)}
    assert set(parked) == {None, team.id}
    assert (parked[None].payload, parked[None].attempts) == (teamless, 1)
    assert parked[team.id].payload == bad
    assert set(inbox_rows(engine, SHARED_ID)) == {team.id}


def test_a_teams_parked_event_applies_once_fixed_though_another_team_applied_its_id(
    engine: Engine, team: Team, other_team: Team
) -> None:
    theirs = make_contact(engine, other_team.id, first_name="Grace")
    mine = make_contact(engine, team.id)
    parked = budget(team.id, "ct_not_yet", 5, event_id=SHARED_ID)
    [outcome] = apply_batch(engine, [parked])
    assert outcome.reason == "contact_not_found"
    apply_batch(engine, [budget(other_team.id, theirs.id, 2, event_id=SHARED_ID)])

    # The pipeline redelivers A's event, corrected, with the same id.
    [fixed] = apply_batch(engine, [{**parked, "contact_id": mine.id}])

    assert (fixed.outcome, fixed.contact_id) == ("applied", mine.id)
    assert contact_row(engine, mine.id).custom_fields == {"budget": 5}
    assert contact_row(engine, theirs.id).custom_fields == {"budget": 2}


# --- through a real worker -------------------------------------------------------------


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """A Redis server of this module's own: no database number to share with other modules."""
    with redis_server() as url:
        yield url


@pytest.mark.slow
def test_a_worker_applies_two_teams_events_that_share_an_id(
    pg_engine: Engine,
    pg_team: Team,
    pg_other_team: Team,
    postgres_url: str,
    broker_url: str,
    tmp_path: Path,
) -> None:
    mine = make_contact(pg_engine, pg_team.id)
    theirs = make_contact(pg_engine, pg_other_team.id, first_name="Grace")
    client = redis.Redis.from_url(broker_url)
    worker = start_worker(postgres_url, broker_url, tmp_path / "worker.log")
    try:
        client.lpush(QUEUE, task_envelope([budget(pg_team.id, mine.id, 1, event_id=SHARED_ID)]))
        wait_for(worker, lambda: contact_row(pg_engine, mine.id).custom_fields, tmp_path)
        client.lpush(
            QUEUE,
            task_envelope([budget(pg_other_team.id, theirs.id, 2, event_id=SHARED_ID)]),
        )
        wait_for(worker, lambda: contact_row(pg_engine, theirs.id).custom_fields, tmp_path)
    finally:
        stop_worker(worker)
        client.close()

    assert contact_row(pg_engine, mine.id).custom_fields == {"budget": 1}
    assert contact_row(pg_engine, theirs.id).custom_fields == {"budget": 2}
    rows = inbox_rows(pg_engine, SHARED_ID)
    assert {t: (row.outcome, row.contact_id) for t, row in rows.items()} == {
        pg_team.id: ("applied", mine.id),
        pg_other_team.id: ("applied", theirs.id),
    }


def wait_for(worker: Any, probe: Any, log_dir: Path, timeout: float = 60) -> None:
    """Poll ``probe`` until truthy; a generous deadline for a loaded machine."""
    deadline = time.monotonic() + timeout
    while not probe():
        log = (log_dir / "worker.log").read_text(errors="replace")[-4000:]
        assert worker.poll() is None, log
        assert time.monotonic() < deadline, log
        time.sleep(0.05)


# --- the migration ---------------------------------------------------------------------


@pytest.fixture(params=["postgresql", "sqlite"])
def blank_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database (no schema), on each backend; removed afterwards."""
    if request.param == "sqlite":
        with tempfile.TemporaryDirectory(prefix="contact-sync-migration-") as folder:
            yield f"sqlite:///{os.path.join(folder, 'round1.sqlite3')}"
        return
    server: str = request.getfixturevalue("postgres_url")
    name = f"contact_sync_migration_{uuid.uuid4().hex[:12]}"
    admin = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_migration_rekeys_a_round_one_inbox_and_its_rows_keep_working(
    blank_url: str,
) -> None:
    engine = make_engine(blank_url)
    try:
        upgrade(engine, "0002")
        # Round-1 rows, written with round 1's columns (today's code knows newer ones).
        a, b = f"team-a-{uuid.uuid4().hex[:8]}", f"team-b-{uuid.uuid4().hex[:8]}"
        mine, theirs = f"ct-a-{uuid.uuid4().hex[:8]}", f"ct-b-{uuid.uuid4().hex[:8]}"
        now = datetime.now(UTC)
        with engine.begin() as conn:
            for team_id, contact_id in ((a, mine), (b, theirs)):
                conn.execute(
                    text(
                        "INSERT INTO teams (id, name, default_region, calls_overwrite_people, "
                        "created_at) VALUES (:t, 'Team', 'US', false, :now)"
                    ),
                    {"t": team_id, "now": now},
                )
                conn.execute(
                    text(
                        "INSERT INTO contacts (id, team_id, first_name, last_name, lead_status, "
                        "do_not_call, custom_fields, tags, provenance, version, created_at, "
                        "updated_at) VALUES (:c, :t, 'Ada', 'Lovelace', 'new', false, :empty, "
                        ":none, :empty, 1, :now, :now)"
                    ),
                    {"c": contact_id, "t": team_id, "empty": "{}", "none": "[]", "now": now},
                )
            # Round 1 as its code wrote it: an applied row with its team, an older row
            # without one (its contact says whose it is), and the mark of a payload
            # whose team could not be read.
            conn.execute(
                text(
                    "INSERT INTO processed_events "
                    "(event_id, team_id, contact_id, outcome, processed_at) VALUES "
                    "(:e1, :a, :mine, 'applied', :now), "
                    "('evt-old', NULL, :theirs, 'no_change', :now), "
                    "('evt-teamless', NULL, NULL, 'dead_lettered', :now)"
                ),
                {"e1": SHARED_ID, "a": a, "mine": mine, "theirs": theirs, "now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO dead_letters (id, event_id, team_id, reason, message, payload, "
                    "first_seen_at, last_seen_at, attempts) VALUES "
                    "('dl-1', 'evt-bad', :a, 'invalid_payload', 'x', :payload, :now, :now, 1)"
                ),
                {"a": a, "payload": '{"event_id": "evt-bad"}', "now": now},
            )

        upgrade(engine)

        key = inspect(engine).get_pk_constraint("processed_events")["constrained_columns"]
        assert key == ["team_id", "event_id"]
        with engine.connect() as conn:
            rows = {
                row.event_id: (row.team_id, row.contact_id, row.outcome)
                for row in conn.execute(select(processed_events))
            }
            [letter] = conn.execute(select(dead_letters)).all()
        assert rows == {
            SHARED_ID: (a, mine, "applied"),
            "evt-old": (b, theirs, "no_change"),
        }
        assert (letter.team_id, letter.payload, letter.erased_at) == (
            a,
            {"event_id": "evt-bad"},
            None,
        )
        # The old rows still absorb redeliveries; another team's event with the id applies.
        outcomes = apply_batch(
            engine,
            [
                budget(a, mine, 1, event_id=SHARED_ID),
                budget(b, theirs, 2, event_id="evt-old"),
                budget(b, theirs, 3, event_id=SHARED_ID),
            ],
        )
        assert [o.outcome for o in outcomes] == ["duplicate", "duplicate", "applied"]
        assert contact_row(engine, theirs).custom_fields == {"budget": 3}
        upgrade(engine)  # running it again changes nothing
    finally:
        engine.dispose()


def test_the_migration_goes_back_only_while_no_event_id_is_in_two_teams_inboxes(
    blank_url: str,
) -> None:
    engine = make_engine(blank_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            a, b = create_team(conn, name="Acme Solar"), create_team(conn, name="Rival")
        mine = make_contact(engine, a.id)
        theirs = make_contact(engine, b.id, first_name="Grace")
        apply_batch(
            engine,
            [
                budget(a.id, mine.id, 1, event_id=SHARED_ID),
                budget(b.id, theirs.id, 2, event_id=SHARED_ID),
            ],
        )
        with pytest.raises(RuntimeError, match=f"event id '{SHARED_ID}' is in the inbox"):
            downgrade(engine, "0002")
        with engine.begin() as conn:
            conn.execute(processed_events.delete().where(processed_events.c.team_id == b.id))

        downgrade(engine, "0002")

        key = inspect(engine).get_pk_constraint("processed_events")["constrained_columns"]
        assert key == ["event_id"]
        assert "suppressions" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            [row] = conn.execute(text("SELECT team_id, contact_id FROM processed_events")).all()
        assert tuple(row) == (a.id, mine.id)
        upgrade(engine)
        assert set(inbox_rows(engine, SHARED_ID)) == {a.id}
    finally:
        engine.dispose()
