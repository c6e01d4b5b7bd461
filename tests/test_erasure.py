"""Erasure on delete, and the suppression list (README, "Erasure"; issue 18 item 4).

Deleting a contact redacts the team's dead letters that name it (by id, by
either number in any format the team's region reads, by email in any case),
refuses their replay, keeps one history record of the delete without the
contact's values, and, for a do-not-call contact, leaves a keyed hash of each
number so that the number stays do-not-call when it comes back. Every test
runs on PostgreSQL and SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, Text, cast, func, select

from contact_sync.accounts.teams import Team
from contact_sync.cli.main import main
from contact_sync.contacts.store import delete_contact
from contact_sync.contacts.suppression import SUPPRESSED, is_suppressed
from contact_sync.db.tables import contact_history, contacts, dead_letters, suppressions
from contact_sync.ops.dead_letters import ERASED_MESSAGE
from contact_sync.settings import get_settings
from tests.factories import apply_batch, call_event, contact_row, make_contact
from tests.test_api import CONTACTS, Api, _api, _client

PHONE = "+12025550143"
PHONE_NATIONAL = "(202) 555-0143"
SECOND = "+12025550178"
SECOND_NATIONAL = "202.555.0178"
EMAIL = "Ada.Lovelace@Example.com"  # stored with the domain lower-cased
OTHER_PHONE = "+12025550199"
ADA = {
    "firstName": "Ada",
    "lastName": "Lovelace",
    "phone": PHONE,
    "phoneSecondary": SECOND,
    "email": EMAIL,
    "doNotCall": True,
}
# Every form of the contact's data that must not survive anywhere it was erased from.
PII = ("2025550143", "555-0143", "5550143", "2025550178", "5550178", "lovelace", "Lovelace")


@pytest.fixture
def api(engine: Engine, redis_url: str, team: Team, other_team: Team) -> Iterator[Api]:
    with _client(engine, redis_url) as client:
        yield _api(client, engine, team, other_team)


def park(engine: Engine, payload: Any) -> str:
    """Apply ``payload``, which must be dead-lettered; returns its letter's id."""
    [outcome] = apply_batch(engine, [payload])
    assert outcome.outcome == "dead_lettered", outcome
    with engine.connect() as conn:
        return str(
            conn.execute(
                select(dead_letters.c.id).where(
                    dead_letters.c.event_id == outcome.event_id,
                    dead_letters.c.erased_at.is_(None),
                    dead_letters.c.team_id.is_(None)
                    if outcome.team_id is None
                    else dead_letters.c.team_id == outcome.team_id,
                )
            ).scalar_one()
        )


def bad(team_id: str, **fields: Any) -> dict[str, Any]:
    """An event that cannot apply (its outcome is not one of the contract's)."""
    return call_event(team_id, outcome="exploded", **fields)


def letter(engine: Engine, letter_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(dead_letters).where(dead_letters.c.id == letter_id)).one()


def row_text(engine: Engine, table: Any, *where: Any) -> str:
    """Every column of the matching rows as the database prints it, in one string."""
    columns = [cast(column, Text) for column in table.c]
    with engine.connect() as conn:
        rows = conn.execute(select(*columns).where(*where)).all()
    return " ".join(str(value) for row in rows for value in row)


def assert_no_pii(text_: str, *extra: str) -> None:
    for secret in (*PII, EMAIL, EMAIL.lower(), *extra):
        assert secret not in text_, secret


@dataclass
class Letters:
    """Dead letters of the team naming Ada in every way, and letters that must stay."""

    naming: dict[str, str]
    kept: dict[str, tuple[str, Any]]


def park_letters(api: Api, ada: dict[str, Any], grace: dict[str, Any]) -> Letters:
    engine, team, other = api.engine, api.team.id, api.other_team.id
    summary = "Card 4111 1111 1111 1111, lives at 12 Baker Street"
    naming = {
        "by id": park(engine, bad(team, contact_id=ada["id"], extraction={"summary": summary})),
        "by phone, national format": park(
            engine, call_event(team, phone=PHONE_NATIONAL, schema_version=2)
        ),
        "by second phone, in the extraction": park(
            engine,
            bad(
                team,
                phone=OTHER_PHONE,
                extraction={"contact": {"phone_secondary": SECOND_NATIONAL}},
            ),
        ),
        "by email, other case": park(
            engine,
            bad(team, phone=OTHER_PHONE, extraction={"contact": {"email": EMAIL.upper()}}),
        ),
        "by number in prose": park(
            engine,
            bad(team, phone=OTHER_PHONE, extraction={"summary": f"call back on {PHONE_NATIONAL}"}),
        ),
        "by number with its country code, in prose": park(
            engine,
            bad(team, phone=OTHER_PHONE, extraction={"summary": "ring 1-202-555-0178 please"}),
        ),
        "by full-width digits": park(
            engine,
            bad(
                team,
                phone=OTHER_PHONE,
                extraction={"custom_fields": {"alt": "２０２ ５５５ ０１４３"}},
            ),
        ),
        "without a readable team, by id": park(
            engine, {**bad(team, contact_id=ada["id"]), "team_id": ["not", "a", "team"]}
        ),
    }
    kept_payloads = {
        "another contact's": bad(team, contact_id=grace["id"], phone=grace["phone"]),
        "a longer address": bad(
            team, phone=OTHER_PHONE, extraction={"contact": {"email": "x" + EMAIL}}
        ),
        "the other team's, same number and email": bad(
            other, phone=PHONE, extraction={"contact": {"email": EMAIL}}
        ),
        "the other team's, naming the id": bad(other, contact_id=ada["id"]),
        "without a readable team, by number": {
            **bad(team, phone=PHONE),
            "team_id": ["not", "a", "team"],
        },
    }
    kept = {name: (park(engine, payload), payload) for name, payload in kept_payloads.items()}
    return Letters(naming, kept)


# --- dead letters --------------------------------------------------------------------


def test_delete_turns_the_teams_dead_letters_that_name_the_contact_into_tombstones(
    api: Api,
) -> None:
    ada = api.create(**ADA)
    grace = api.create(firstName="Grace", lastName="Hopper", phone="+12025550166")
    letters = park_letters(api, ada, grace)
    before = {name: letter(api.engine, letter_id) for name, letter_id in letters.naming.items()}

    assert api.delete(ada["id"]).status_code == 204

    for name, letter_id in letters.naming.items():
        erased, was = letter(api.engine, letter_id), before[name]
        assert erased.erased_at is not None, name
        assert erased.payload == {
            "event_id": was.event_id,
            "reason": was.reason,
            "erased": True,
            "erased_at": erased.erased_at.isoformat(),
        }, name
        assert erased.message == ERASED_MESSAGE
        kept_columns = ("event_id", "team_id", "reason", "first_seen_at", "attempts")
        assert [getattr(erased, c) for c in kept_columns] == [getattr(was, c) for c in kept_columns]
        text_ = row_text(api.engine, dead_letters, dead_letters.c.id == letter_id)
        assert_no_pii(text_, ada["id"], "4111 1111 1111 1111", "Baker")
    for name, (letter_id, payload) in letters.kept.items():
        untouched = letter(api.engine, letter_id)
        assert (untouched.payload, untouched.erased_at) == (payload, None), name


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def cli_url(api: Api, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("CONTACT_SYNC_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_replaying_an_erased_dead_letter_is_refused(
    api: Api, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before erasure existed, this replay created a new contact with the erased data."""
    ada = api.create(**ADA)
    # Parked because Ada's number was ambiguous at the time; the twin is gone since.
    twin = api.create(firstName="Twin", lastName="Lovelace", phone=PHONE)
    event = call_event(
        api.team.id, phone=PHONE, extraction={"contact": {"email": EMAIL}, "summary": "hi"}
    )
    letter_id = park(api.engine, event)
    assert letter(api.engine, letter_id).reason == "ambiguous_contact"
    assert api.delete(twin["id"]).status_code == 204
    assert api.delete(ada["id"]).status_code == 204
    people = count(api.engine, contacts)

    code, out, err = run(["--database-url", cli_url, "dead-letters", "replay", letter_id], capsys)

    assert code == 3
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"contact-sync: dead letter {letter_id} was erased")
    assert "cannot be replayed" in err
    assert count(api.engine, contacts) == people
    assert letter(api.engine, letter_id).replayed_at is None


def test_replay_all_skips_erased_letters_and_says_how_many(
    api: Api, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ada = api.create(**ADA)
    erased = [
        park(api.engine, bad(api.team.id, contact_id=ada["id"])),
        park(api.engine, bad(api.team.id, phone=PHONE)),
    ]
    grace = api.create(firstName="Grace", lastName="Hopper", phone="+12025550166")
    fixable = call_event(api.team.id, contact_id="ct_later", extraction={"tags": ["x"]})
    open_id = park(api.engine, fixable)
    assert api.delete(ada["id"]).status_code == 204
    with api.engine.begin() as conn:  # the cause is fixed: the letter now names Grace
        conn.execute(
            dead_letters.update()
            .where(dead_letters.c.id == open_id)
            .values(payload={**fixable, "contact_id": grace["id"]})
        )

    code, out, err = run(["--database-url", cli_url, "dead-letters", "replay", "--all"], capsys)

    assert code == 0, err
    assert out.splitlines() == [
        f"{open_id}: applied",
        "skipped 2 erased dead letters (their contacts were deleted)",
    ]
    for letter_id in erased:
        assert letter(api.engine, letter_id).replayed_at is None
    assert contact_row(api.engine, grace["id"]).tags == ["x"]


def test_a_redelivery_after_erasure_gets_a_letter_of_its_own(api: Api) -> None:
    ada = api.create(**ADA)
    event = bad(api.team.id, contact_id=ada["id"])
    erased_id = park(api.engine, event)
    assert api.delete(ada["id"]).status_code == 204

    again_id = park(api.engine, event)

    assert again_id != erased_id
    assert letter(api.engine, erased_id).payload["erased"] is True
    assert letter(api.engine, again_id).payload == event


# --- the record of the delete ----------------------------------------------------------


def test_the_history_of_a_delete_says_who_and_when_and_holds_none_of_the_contact(
    api: Api,
) -> None:
    ada = api.create(**ADA)
    patched = api.patch(ada["id"], {"notes": "Met at 12 Baker Street"})
    assert patched.status_code == 200
    apply_batch(api.engine, [call_event(api.team.id, phone=PHONE, extraction={"summary": "hi"})])

    assert api.delete(ada["id"]).status_code == 204

    with api.engine.connect() as conn:
        [record] = conn.execute(
            select(contact_history).where(contact_history.c.contact_id == ada["id"])
        ).all()
    assert (record.source, record.api_key_id, record.team_id) == ("api", api.key_id, api.team.id)
    assert record.recorded_at == record.occurred_at
    assert record.changes == []
    assert record.skipped == []
    assert api.get(f"{CONTACTS}/{ada['id']}/history").status_code == 404
    text_ = row_text(api.engine, contact_history, contact_history.c.contact_id == ada["id"])
    assert_no_pii(text_, "Baker", "Ada")


# --- suppression -----------------------------------------------------------------------


def suppression_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(suppressions)))


def test_a_deleted_do_not_call_contact_leaves_a_hash_of_each_number_and_no_pii(
    api: Api,
) -> None:
    ada = api.create(**ADA)

    assert api.delete(ada["id"]).status_code == 204

    rows = suppression_rows(api.engine)
    assert [row.team_id for row in rows] == [api.team.id, api.team.id]
    assert len({row.phone_hash for row in rows}) == 2
    assert_no_pii(row_text(api.engine, suppressions), ada["id"], "Ada")
    with api.engine.connect() as conn:
        assert is_suppressed(conn, api.team.id, PHONE)
        assert is_suppressed(conn, api.team.id, SECOND)
        assert not is_suppressed(conn, api.team.id, OTHER_PHONE)
        assert not is_suppressed(conn, api.other_team.id, PHONE)
        with pytest.raises(ValueError, match=r"E\.164"):
            is_suppressed(conn, api.team.id, PHONE_NATIONAL)


def test_an_inbound_call_from_a_suppressed_number_creates_a_do_not_call_contact(
    api: Api,
) -> None:
    ada = api.create(**ADA)
    assert api.delete(ada["id"]).status_code == 204

    [outcome] = apply_batch(
        api.engine,
        [
            call_event(
                api.team.id,
                phone=SECOND_NATIONAL,
                extraction={"do_not_call": False, "summary": "please call me"},
            )
        ],
    )

    assert outcome.outcome == "applied"
    created = contact_row(api.engine, outcome.contact_id or "")
    assert (created.phone, created.do_not_call) == (SECOND, True)
    assert created.provenance["do_not_call"]["source"] == "suppression"
    history = api.get(f"{CONTACTS}/{created.id}/history").json()["data"]
    [creating] = history
    assert {"field": "do_not_call", "old": None, "new": True, "reason": SUPPRESSED} in creating[
        "changes"
    ]
    assert {"field": "do_not_call", "value": False, "reason": "only_people_clear_do_not_call"} in (
        creating["skipped"]
    )


def test_creating_a_contact_with_a_suppressed_number_sets_do_not_call(api: Api) -> None:
    ada = api.create(**ADA)
    assert api.delete(ada["id"]).status_code == 204

    again = api.create(firstName="Ada", lastName="Again", phoneSecondary=PHONE_NATIONAL)

    assert again["do_not_call"] is True
    [creating] = api.get(f"{CONTACTS}/{again['id']}/history").json()["data"]
    assert {"field": "do_not_call", "old": None, "new": True, "reason": SUPPRESSED} in creating[
        "changes"
    ]
    # A person may still decide otherwise, on the record.
    cleared = api.patch(again["id"], {"doNotCall": False})
    assert (cleared.status_code, cleared.json()["do_not_call"]) == (200, False)


def test_only_a_do_not_call_contact_leaves_its_numbers_suppressed(api: Api) -> None:
    callable_ = api.create(**{**ADA, "doNotCall": False})
    blocked = api.create(firstName="Bo", lastName="Quiet", phone=OTHER_PHONE, doNotCall=True)
    assert api.delete(callable_["id"]).status_code == 204
    assert api.delete(blocked["id"]).status_code == 204

    outcomes = apply_batch(
        api.engine,
        [call_event(api.team.id, phone=PHONE), call_event(api.team.id, phone=OTHER_PHONE)],
    )

    assert len(suppression_rows(api.engine)) == 1
    flags = [contact_row(api.engine, o.contact_id or "").do_not_call for o in outcomes]
    assert flags == [False, True]
    with api.engine.connect() as conn:
        assert not is_suppressed(conn, api.team.id, PHONE)
        assert not is_suppressed(conn, api.team.id, SECOND)


def test_another_teams_contacts_with_a_suppressed_number_are_not_affected(api: Api) -> None:
    ada = api.create(**ADA)
    assert api.delete(ada["id"]).status_code == 204

    [outcome] = apply_batch(api.engine, [call_event(api.other_team.id, phone=PHONE)])
    theirs = api.create(key=api.other_key, firstName="Bo", lastName="Rival", phone=PHONE)

    assert contact_row(api.engine, outcome.contact_id or "").do_not_call is False
    assert theirs["do_not_call"] is False
    assert {row.team_id for row in suppression_rows(api.engine)} == {api.team.id}


def test_the_same_number_hashes_differently_in_each_team(
    engine: Engine, team: Team, other_team: Team
) -> None:
    """Keyed per team: one team's entries cannot be matched against another's."""
    for team_id in (team.id, other_team.id):
        contact = make_contact(engine, team_id, phone=PHONE, do_not_call=True)
        with engine.begin() as conn:
            delete_contact(conn, team_id=team_id, contact_id=contact.id)

    hashes = {row.team_id: row.phone_hash for row in suppression_rows(engine)}
    assert set(hashes) == {team.id, other_team.id}
    assert hashes[team.id] != hashes[other_team.id]


def test_deleting_through_the_store_erases_as_the_api_does(engine: Engine, team: Team) -> None:
    """The store function is the one delete path: the API and any later caller share it."""
    ada = make_contact(engine, team.id, phone=PHONE, email=EMAIL, do_not_call=True)
    letter_id = park(
        engine, bad(team.id, phone=OTHER_PHONE, extraction={"contact": {"email": EMAIL}})
    )

    with engine.begin() as conn:
        deletion = delete_contact(conn, team_id=team.id, contact_id=ada.id)

    assert (deletion.dead_letters_erased, deletion.numbers_suppressed) == (1, 1)
    assert letter(engine, letter_id).erased_at is not None
    with engine.connect() as conn:
        assert is_suppressed(conn, team.id, PHONE)


def test_a_suppressed_number_in_one_batch_with_others_blocks_only_its_contact(
    engine: Engine, team: Team
) -> None:
    ada = make_contact(engine, team.id, phone=PHONE, do_not_call=True)
    with engine.begin() as conn:
        delete_contact(conn, team_id=team.id, contact_id=ada.id)
    outcomes = apply_batch(
        engine, [call_event(team.id, phone=PHONE), call_event(team.id, phone=OTHER_PHONE)]
    )

    flags = [contact_row(engine, o.contact_id or "").do_not_call for o in outcomes]
    assert flags == [True, False]
