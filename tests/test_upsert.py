"""The upsert service (docs/design.md §14), on PostgreSQL and SQLite.

Each test writes through the ``conn`` fixture (rolled back) unless it needs
several connections: the concurrency tests commit, on PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, func, select

from contact_sync.accounts.team_settings import put_team_settings
from contact_sync.accounts.teams import Team
from contact_sync.contacts.store import create_contact, list_history, update_contact
from contact_sync.contacts.suppression import suppress
from contact_sync.contacts.upsert import (
    FieldError,
    UpsertResult,
    upsert_contact,
    upsert_contacts,
)
from contact_sync.db.tables import contact_history, contacts
from contact_sync.db.unit_of_work import unit_of_work
from contact_sync.errors import AmbiguousMatch, DuplicatePhone, ValidationFailed
from contact_sync.fields.store import define
from tests.factories import contact_row, make_contact, make_team, writing

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
ADA = {"firstName": "Ada", "lastName": "Lovelace"}


def upsert(
    conn: Connection,
    team: Team,
    items: Sequence[Any],
    match_on: Sequence[str] = ("phone", "email"),
    source: str = "api",
) -> list[UpsertResult]:
    with writing(conn) as tx:
        return upsert_contacts(
            tx, team_id=team.id, items=items, match_on=match_on, source=source, now=NOW
        )


def statuses(results: list[UpsertResult]) -> list[str]:
    return [result.status for result in results]


def reject_duplicates(conn: Connection, team: Team) -> None:
    with writing(conn) as tx:
        put_team_settings(
            tx, team_id=team.id, data={"duplicatePhones": "reject"}, default_min_confidence=0.5
        )


def count(conn: Connection, team: Team) -> int:
    return conn.execute(
        select(func.count()).select_from(contacts).where(contacts.c.team_id == team.id)
    ).scalar_one()


def history_count(conn: Connection, contact_id: str) -> int:
    stmt = select(func.count()).where(contact_history.c.contact_id == contact_id)
    return conn.execute(stmt).scalar_one()


@pytest.fixture
def acme(conn: Connection) -> Team:
    return make_team(conn)


def test_no_match_creates_one_match_updates_and_the_same_again_is_unchanged(
    conn: Connection, acme: Team
) -> None:
    [created] = upsert(conn, acme, [{**ADA, "phone": "+12025551234"}])
    assert (created.status, created.errors) == ("created", ())
    assert created.contact is not None
    assert created.contact.version == 1
    [updated] = upsert(conn, acme, [{**ADA, "phone": "+12025551234", "jobTitle": "CTO"}])
    assert (updated.status, updated.contact_id) == ("updated", created.contact_id)
    assert updated.contact is not None
    assert updated.contact.job_title == "CTO"
    assert updated.contact.version == 2
    [same] = upsert(conn, acme, [{**ADA, "phone": "+12025551234", "jobTitle": "CTO"}])
    assert (same.status, same.contact_id) == ("unchanged", created.contact_id)
    assert same.contact is not None
    assert same.contact.version == 2
    assert created.contact_id is not None
    assert history_count(conn, created.contact_id) == 2  # the no-op wrote no record
    assert count(conn, acme) == 1


def test_an_update_has_patch_semantics_fields_not_sent_are_kept(
    conn: Connection, acme: Team
) -> None:
    first = make_contact(
        conn, acme.id, phone="+12025551234", job_title="CTO", custom_fields={"a": 1, "b": 2}
    )
    [result] = upsert(
        conn, acme, [{**ADA, "phone": "+12025551234", "customFields": {"b": None, "c": 3}}]
    )
    assert result.status == "updated"
    row = contact_row(conn, first.id)
    assert row.job_title == "CTO"
    assert row.custom_fields == {"a": 1, "c": 3}
    assert row.version == 2


@pytest.mark.parametrize(("match_on", "winner"), [(["phone", "email"], 0), (["email", "phone"], 1)])
def test_match_on_order_decides_which_key_wins(
    conn: Connection, acme: Team, match_on: list[str], winner: int
) -> None:
    by_phone = make_contact(conn, acme.id, phone="+12025551234")
    by_email = make_contact(conn, acme.id, email="grace@example.com")
    item = {**ADA, "phone": "+12025551234", "email": "grace@example.com"}
    [result] = upsert(conn, acme, [item], match_on=match_on)
    assert result.contact_id == [by_phone.id, by_email.id][winner]


def test_a_key_that_matches_nobody_lets_the_next_key_decide(conn: Connection, acme: Team) -> None:
    grace = make_contact(conn, acme.id, email="grace@example.com")
    [result] = upsert(conn, acme, [{**ADA, "phone": "+12025559999", "email": "grace@example.com"}])
    assert (result.status, result.contact_id) == ("updated", grace.id)
    assert contact_row(conn, grace.id).phone == "+12025559999"


def test_match_on_phone_alone_never_matches_by_email(conn: Connection, acme: Team) -> None:
    make_contact(conn, acme.id, email="grace@example.com")
    [result] = upsert(conn, acme, [{**ADA, "email": "grace@example.com"}], match_on=["phone"])
    assert result.status == "created"


def test_the_phone_matches_a_contacts_secondary_number(conn: Connection, acme: Team) -> None:
    known = make_contact(conn, acme.id, phone="+12025550000", phone_secondary="+12025551234")
    [result] = upsert(conn, acme, [{**ADA, "phone": "+12025551234"}], match_on=["phone"])
    assert (result.status, result.contact_id) == ("updated", known.id)


def test_national_numbers_are_read_in_the_teams_region(conn: Connection) -> None:
    london = make_team(conn, region="GB")
    known = make_contact(conn, london.id, phone="+442079460000")
    [result] = upsert(conn, london, [{**ADA, "phone": "020 7946 0000", "jobTitle": "CFO"}])
    assert (result.status, result.contact_id) == ("updated", known.id)
    us = make_team(conn)
    known_us = make_contact(conn, us.id, phone="+12025551234")
    [again] = upsert(conn, us, [{**ADA, "phone": "(202) 555-1234", "jobTitle": "CFO"}])
    assert again.contact_id == known_us.id


def test_email_matches_without_case(conn: Connection, acme: Team) -> None:
    known = make_contact(conn, acme.id, email="Ada.King@Example.com")
    [result] = upsert(conn, acme, [{**ADA, "email": "ADA.KING@example.COM"}], match_on=["email"])
    assert (result.status, result.contact_id) == ("updated", known.id)
    assert contact_row(conn, known.id).email == "ADA.KING@example.com"  # as a PATCH sets it


def test_several_contacts_for_the_deciding_key_are_ambiguous(conn: Connection, acme: Team) -> None:
    one = make_contact(conn, acme.id, phone="+12025551234")
    two = make_contact(conn, acme.id, phone_secondary="+12025551234")
    make_contact(conn, acme.id, email="ada@example.com")
    item = {**ADA, "phone": "+12025551234", "email": "ada@example.com"}
    [result] = upsert(conn, acme, [item])
    assert (result.status, result.contact_id, result.contact) == ("failed", None, None)
    [error] = result.errors
    assert error.field == "phone"
    assert one.id in error.message
    assert two.id in error.message
    with pytest.raises(AmbiguousMatch) as raised, writing(conn) as tx:
        upsert_contact(tx, team_id=acme.id, item=item, match_on=["phone"], source="api", now=NOW)
    assert raised.value.contact_ids == sorted([one.id, two.id])
    assert count(conn, acme) == 3


def test_another_teams_contacts_are_never_matched(conn: Connection, acme: Team) -> None:
    rival = make_team(conn)
    theirs = make_contact(conn, rival.id, phone="+12025551234", email="ada@example.com")
    [result] = upsert(conn, acme, [{**ADA, "phone": "+12025551234", "email": "ada@example.com"}])
    assert result.status == "created"
    assert result.contact_id != theirs.id
    assert contact_row(conn, theirs.id).version == 1


def test_items_repeating_a_person_apply_in_order(conn: Connection, acme: Team) -> None:
    items = [
        {**ADA, "phone": "+12025551234"},
        {**ADA, "phone": "(202) 555-1234", "jobTitle": "CTO"},
        {**ADA, "email": "ada@example.com", "phone": "+12025551234"},
        {**ADA, "email": "ada@EXAMPLE.com", "jobTitle": "CTO"},
    ]
    results = upsert(conn, acme, items)
    assert statuses(results) == ["created", "updated", "updated", "unchanged"]
    assert len({r.contact_id for r in results}) == 1
    assert [r.contact.version for r in results if r.contact] == [1, 2, 3, 3]
    assert results[1].contact is not None
    assert results[1].contact.email is None  # as it was then
    contact_id = results[0].contact_id
    assert contact_id is not None
    row = contact_row(conn, contact_id)
    assert (row.version, row.job_title, row.email) == (3, "CTO", "ada@example.com")
    versions = [(r["version_before"], r["version_after"]) for r in list_history_of(conn, acme, row)]
    assert versions == [(2, 3), (1, 2), (None, 1)]


def list_history_of(conn: Connection, team: Team, row: Any) -> list[dict[str, Any]]:
    return list_history(conn, team_id=team.id, contact_id=row.id)


def test_an_existing_contact_changed_twice_in_one_list_gets_two_versions(
    conn: Connection, acme: Team
) -> None:
    known = make_contact(conn, acme.id, phone="+12025551234")
    items = [{**ADA, "phone": "+12025551234", "jobTitle": t} for t in ("CTO", "CEO")]
    assert statuses(upsert(conn, acme, items)) == ["updated", "updated"]
    assert contact_row(conn, known.id).version == 3
    assert history_count(conn, known.id) == 3


def test_a_failed_item_never_stops_the_others(conn: Connection, acme: Team) -> None:
    items: list[Any] = [
        {**ADA, "phone": "+12025551234"},
        {"firstName": "Ada"},
        {**ADA, "phone": "not a number"},
        "not an object",
        {**ADA, "email": "grace@example.com", "companyId": "no-such-company"},
        {**ADA, "email": "grace@example.com"},
    ]
    results = upsert(conn, acme, items)
    assert statuses(results) == ["created", "failed", "failed", "failed", "failed", "created"]
    assert [r.index for r in results] == list(range(6))
    assert results[1].errors == (FieldError("last_name", "Field required"),)
    assert [e.field for e in results[2].errors] == ["phone"]
    assert [e.field for e in results[3].errors] == ["body"]
    assert results[4].errors == (FieldError("company_id", "Company not found"),)
    assert count(conn, acme) == 2


def test_another_teams_company_or_team_id_fails_the_item(conn: Connection, acme: Team) -> None:
    from contact_sync.contacts.companies import create_company

    rival = make_team(conn)
    with writing(conn) as tx:
        theirs = create_company(tx, team_id=rival.id, name="Rival")
    results = upsert(conn, acme, [{**ADA, "companyId": theirs.id}, {**ADA, "teamId": rival.id}])
    assert [e.field for r in results for e in r.errors] == ["company_id", "team_id"]
    assert count(conn, acme) == 0


def test_hostile_values_fail_their_item_naming_the_field(conn: Connection, acme: Team) -> None:
    items = [
        {**ADA, "jobTitle": "x" * 1_000_000},
        {**ADA, "notes": "nul\x00byte"},
        {**ADA, "doNotCall": "yes"},
        {**ADA, "tags": "vip"},
        {**ADA, "phone": 12025551234},
        {**ADA, "customFields": {"k": "\x00"}},
        {**ADA, "callCount": 3},
        {**ADA, "bogus": 1},
    ]
    results = upsert(conn, acme, items)
    fields = [[e.field for e in r.errors] for r in results]
    assert fields == [
        ["job_title"],
        ["notes"],
        ["do_not_call"],
        ["tags"],
        ["phone"],
        ["custom_fields"],
        ["call_count"],
        ["bogus"],
    ]
    assert statuses(results) == ["failed"] * len(items)


def test_match_on_must_name_known_keys(conn: Connection, acme: Team) -> None:
    for bad in ([], ["name"], ["phone", "phone"], "phone"):
        with pytest.raises(ValidationFailed) as raised:
            upsert(conn, acme, [ADA], match_on=bad)
        assert list(raised.value.details) == ["match_on"]


def test_import_is_the_provenance_and_the_history_source(conn: Connection, acme: Team) -> None:
    [result] = upsert(conn, acme, [{**ADA, "phone": "+12025551234"}], source="import")
    assert result.contact_id is not None
    row = contact_row(conn, result.contact_id)
    assert {seen["source"] for seen in row.provenance.values()} == {"import"}
    [record] = list_history_of(conn, acme, row)
    assert record["source"] == "import"


def test_a_suppressed_number_makes_a_new_contact_do_not_call(conn: Connection, acme: Team) -> None:
    with writing(conn) as tx:
        suppress(tx, team_id=acme.id, phones=["+12025551234"], now=NOW)
    [result] = upsert(conn, acme, [{**ADA, "phone": "+12025551234"}])
    assert result.contact is not None
    assert result.contact.do_not_call is True


def test_custom_fields_are_coerced_to_their_definitions(conn: Connection, acme: Team) -> None:
    with writing(conn) as tx:
        define(tx, team_id=acme.id, data={"key": "budget", "label": "Budget", "type": "number"})
    results = upsert(
        conn,
        acme,
        [{**ADA, "customFields": {"budget": "$7.5k"}}, {**ADA, "customFields": {"budget": "lots"}}],
    )
    assert statuses(results) == ["created", "failed"]
    assert results[0].contact is not None
    assert results[0].contact.custom_fields == {"budget": 7500}
    assert [e.field for e in results[1].errors] == ["custom_fields.budget"]


# --- duplicate_phones: reject ---------------------------------------------------------


def test_with_reject_a_new_contact_with_a_known_number_fails(conn: Connection, acme: Team) -> None:
    known = make_contact(conn, acme.id, phone="+12025551234")
    reject_duplicates(conn, acme)
    items = [
        {**ADA, "email": "ada@example.com", "phoneSecondary": "+12025551234"},
        {**ADA, "email": "bob@example.com", "phone": "+12025550001"},
        {**ADA, "email": "eve@example.com", "phone": "+12025550001"},
    ]
    results = upsert(conn, acme, items, match_on=["email"])
    assert statuses(results) == ["failed", "created", "failed"]
    assert results[0].errors[0].field == "phone_secondary"
    assert known.id in results[0].errors[0].message
    assert results[1].contact_id is not None
    assert results[1].contact_id in results[2].errors[0].message


def test_with_reject_an_update_may_keep_its_own_number_not_take_another(
    conn: Connection, acme: Team
) -> None:
    ada = make_contact(conn, acme.id, phone="+12025551234", email="ada@example.com")
    bob = make_contact(conn, acme.id, phone="+12025550001")
    reject_duplicates(conn, acme)
    items = [
        {**ADA, "email": "ada@example.com", "phone": "+12025551234", "jobTitle": "CTO"},
        {**ADA, "email": "ada@example.com", "phoneSecondary": "+12025550001"},
    ]
    results = upsert(conn, acme, items, match_on=["email"])
    assert statuses(results) == ["updated", "failed"]
    assert results[1].errors[0].field == "phone_secondary"
    assert bob.id in results[1].errors[0].message
    assert contact_row(conn, ada.id).phone_secondary is None


def test_allow_is_the_default_and_accepts_a_shared_number(conn: Connection, acme: Team) -> None:
    make_contact(conn, acme.id, phone="+12025551234")
    results = upsert(conn, acme, [{**ADA, "phoneSecondary": "+12025551234"}], match_on=["email"])
    assert statuses(results) == ["created"]


def test_with_reject_create_and_patch_refuse_a_known_number(conn: Connection, acme: Team) -> None:
    known = make_contact(conn, acme.id, phone="+12025551234")
    other = make_contact(conn, acme.id, phone="+12025550001")
    reject_duplicates(conn, acme)
    with pytest.raises(DuplicatePhone) as raised:
        make_contact(conn, acme.id, phone_secondary="(202) 555-1234")
    assert (raised.value.field, raised.value.contact_ids) == ("phone_secondary", [known.id])
    with pytest.raises(DuplicatePhone), writing(conn) as tx:
        update_contact(tx, team_id=acme.id, contact_id=other.id, data={"phone": "+12025551234"})
    with writing(conn) as tx:  # its own number again is no duplicate
        update_contact(tx, team_id=acme.id, contact_id=known.id, data={"phone": "+12025551234"})


# --- many at once ---------------------------------------------------------------------


def test_a_list_of_500_with_bad_items_mixed_in(conn: Connection, acme: Team) -> None:
    items: list[Any] = [
        {**ADA, "phone": f"+1202555{i:04d}"} if i % 7 else {**ADA, "phone": "bad"}
        for i in range(500)
    ]
    first = upsert(conn, acme, items)
    assert statuses(first).count("failed") == 72
    assert statuses(first).count("created") == 428
    again = upsert(conn, acme, items)
    assert statuses(again).count("unchanged") == 428


@st.composite
def people(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Distinct people, each with a number (in any common form) or an address (any case)."""
    numbers = draw(st.lists(st.integers(0, 9999), unique=True, max_size=8))
    items = []
    for i in numbers:
        forms = [f"+1202555{i:04d}", f"(202) 555-{i:04d}", f"202.555.{i:04d}"]
        keys = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "phone": st.sampled_from(forms),
                    "email": st.sampled_from([f"p{i}@example.com", f"p{i}@EXAMPLE.com"]),
                },
            ).filter(bool)
        )
        extra = draw(
            st.fixed_dictionaries({}, optional={"jobTitle": st.sampled_from(["CTO", None])})
        )
        items.append({**ADA, **keys, **extra})
    return items


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=people())
def test_upserting_the_same_list_twice_changes_nothing_the_second_time(
    conn: Connection, items: list[dict[str, Any]]
) -> None:
    team = make_team(conn)
    upsert(conn, team, items)
    before = count(conn, team)
    again = upsert(conn, team, items)
    assert set(statuses(again)) <= {"unchanged", "failed"}
    assert count(conn, team) == before


# --- concurrency (PostgreSQL) ---------------------------------------------------------


def _at_once(engine: Engine, jobs: list[Any]) -> list[Any]:
    """Run each job in its own thread and transaction, started together."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(index: int) -> None:
        barrier.wait()
        try:
            with unit_of_work(engine) as uow:
                results[index] = jobs[index](uow.conn)
                uow.commit()
        except Exception as exc:  # reported to the test, which fails on it
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_upserts_of_one_new_person_create_one_contact(
    pg_engine: Engine, pg_team: Team
) -> None:
    def job(email: str, phone: str) -> Any:
        return lambda conn: upsert_contact(
            conn,
            team_id=pg_team.id,
            item={**ADA, "email": email, "phone": phone},
            match_on=["phone", "email"],
            source="api",
            now=NOW,
        )

    jobs = [job("ada@example.com", "+12025551234") for _ in range(4)]
    jobs += [job("ada@EXAMPLE.com", "(202) 555-1234") for _ in range(4)]
    results = _at_once(pg_engine, jobs)
    assert not [r for r in results if isinstance(r, Exception)]
    assert sorted(status for status, _ in results) == ["created"] + ["unchanged"] * 7
    with pg_engine.connect() as conn:
        assert count(conn, pg_team) == 1


def test_concurrent_lists_sharing_people_in_any_order_neither_deadlock_nor_duplicate(
    pg_engine: Engine, pg_team: Team
) -> None:
    people = [{**ADA, "phone": f"+1202555{i:04d}", "email": f"p{i}@example.com"} for i in range(50)]

    def job(items: list[dict[str, Any]]) -> Any:
        return lambda conn: upsert_contacts(
            conn, team_id=pg_team.id, items=items, match_on=["email"], source="import", now=NOW
        )

    results = _at_once(pg_engine, [job(people), job(people[::-1]), job(people[25:] + people[:25])])
    assert not [r for r in results if isinstance(r, Exception)]
    with pg_engine.connect() as conn:
        assert count(conn, pg_team) == 50


def test_a_long_list_is_stored_exactly_as_one_by_one_writes_store_it(
    conn: Connection, acme: Team
) -> None:
    """On PostgreSQL a long list goes in by COPY (contacts/writer.py): same rows, same JSON."""
    rich = {
        **ADA,
        "email": "Ada@Example.com",
        "phone": "(202) 555-0100",
        "phoneSecondary": "+442079460000",
        "timezone": "Europe/London",
        "leadStatus": "Qualified",
        "doNotCall": True,
        "notes": 'Tabs\tand "quotes", back\\slashes,\nnew lines and ünïcödé ✓',
        "customFields": {"nested": {"a": [1, 2.5, None, True]}, "big": 2**62, "text": "x\\y"},
        "tags": ["vip", "solar"],
    }
    [alone] = upsert(conn, acme, [rich])
    others = [
        {**rich, "phone": f"+1202555{i:04d}", "email": f"p{i}@example.com"} for i in range(60)
    ]
    results = upsert(conn, acme, others, match_on=["email"])
    assert statuses(results) == ["created"] * 60
    assert alone.contact_id is not None
    expected = contact_row(conn, alone.contact_id)
    [expected_record] = list_history_of(conn, acme, expected)
    for result in results:
        assert result.contact_id is not None
        row = contact_row(conn, result.contact_id)
        assert result.contact is not None
        assert result.contact.model_dump() == {
            name: getattr(row, name) for name in result.contact.model_dump()
        }
        same = ("notes", "custom_fields", "tags", "do_not_call", "lead_status", "phone_zone")
        assert [getattr(row, name) for name in same] == [getattr(expected, name) for name in same]
        assert list(row.provenance) == list(expected.provenance)
        [record] = list_history_of(conn, acme, row)
        changed = {change["field"]: change["new"] for change in record["changes"]}
        assert changed["custom_fields"] == rich["customFields"]
        assert len(record["changes"]) == len(expected_record["changes"])


def test_with_reject_concurrent_writers_of_one_number_leave_one_contact_with_it(
    pg_engine: Engine, pg_team: Team
) -> None:
    with unit_of_work(pg_engine) as uow:
        put_team_settings(
            uow.conn,
            team_id=pg_team.id,
            data={"duplicatePhones": "reject"},
            default_min_confidence=0.5,
        )
        uow.commit()

    def create(i: int) -> Any:
        return lambda conn: create_contact(
            conn, team_id=pg_team.id, data={**ADA, "email": f"c{i}@a.com", "phone": "+12025551234"}
        )

    def upsert_one(i: int) -> Any:
        return lambda conn: upsert_contact(
            conn,
            team_id=pg_team.id,
            item={**ADA, "email": f"u{i}@a.com", "phoneSecondary": "(202) 555-1234"},
            match_on=["email"],
            source="api",
            now=NOW,
        )

    results = _at_once(pg_engine, [create(i) for i in range(3)] + [upsert_one(i) for i in range(3)])
    refused = [r for r in results if isinstance(r, DuplicatePhone)]
    assert len(refused) == 5, results
    with pg_engine.connect() as conn:
        assert count(conn, pg_team) == 1
