"""The contact store (docs/design.md §2, §5): teams, companies, create, get, update, delete,
history.

Every test runs on both PostgreSQL and SQLite, in one transaction rolled back after it (the
``conn`` fixture); each write a service makes is a savepoint in it, rolled back if it fails, as
the transaction of an entry point would be.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select

from contact_sync.accounts.teams import Team, authenticate, create_team, get_team, issue_api_key
from contact_sync.contacts.companies import create_company, list_companies
from contact_sync.contacts.model import Contact
from contact_sync.contacts.phones import E164_MESSAGE
from contact_sync.contacts.store import (
    CONTACT_COLUMNS,
    contact_from_row,
    contacts_from_rows,
    create_contact,
    delete_contact,
    get_contact,
    list_history,
    update_contact,
)
from contact_sync.db.tables import api_keys, contact_history, contacts
from contact_sync.errors import (
    ContactNotFound,
    ForbiddenTeam,
    StaleVersion,
    TeamNotFound,
    ValidationFailed,
)
from tests.factories import make_contact, make_team


@pytest.fixture
def team(conn: Connection) -> Team:
    """A US team, in the test's transaction."""
    return create_team(conn, name="Acme Solar")


@pytest.fixture
def other_team(conn: Connection) -> Team:
    """A second team, for isolation checks."""
    return create_team(conn, name="Rival Roofing")


def update(conn: Connection, team_id: str, contact_id: str, data: dict[str, Any], **kw: Any) -> Any:
    with conn.begin_nested():
        return update_contact(conn, team_id=team_id, contact_id=contact_id, data=data, **kw)


def get(conn: Connection, team_id: str, contact_id: str) -> Contact:
    return get_contact(conn, team_id=team_id, contact_id=contact_id)


def history(conn: Connection, team_id: str, contact_id: str) -> list[dict[str, Any]]:
    return list_history(conn, team_id=team_id, contact_id=contact_id)


def provenance(conn: Connection, contact_id: str) -> dict[str, Any]:
    value: dict[str, Any] = conn.execute(
        select(contacts.c.provenance).where(contacts.c.id == contact_id)
    ).scalar_one()
    return value


def count(conn: Connection, table: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# --- teams and API keys --------------------------------------------------------


def test_a_team_defaults_to_region_us_and_reads_back(conn: Connection) -> None:
    with conn.begin_nested():
        created = create_team(conn, name="  Acme  ")
        assert get_team(conn, team_id=created.id) == created
    assert (created.name, created.default_region) == ("Acme", "US")


def test_a_team_region_is_an_upper_cased_iso_code(conn: Connection) -> None:
    with conn.begin_nested():
        assert create_team(conn, name="Berlin", region="de").default_region == "DE"
        with pytest.raises(ValidationFailed) as caught:
            create_team(conn, name="Nowhere", region="ZZ")
    assert list(caught.value.details) == ["region"]


def test_a_team_name_must_have_1_to_200_characters(conn: Connection) -> None:
    for name in ("", "   ", "n" * 201):
        with pytest.raises(ValidationFailed) as caught, conn.begin_nested():
            create_team(conn, name=name)
        assert list(caught.value.details) == ["name"], name
    with conn.begin_nested():
        assert create_team(conn, name="n" * 200).name == "n" * 200


def test_an_unknown_team_is_team_not_found(conn: Connection) -> None:
    with pytest.raises(TeamNotFound):
        get_team(conn, team_id="no-such-team")
    with pytest.raises(TeamNotFound):
        get_team(conn, team_id="bad\x00id")


def test_an_issued_api_key_authenticates_its_team_and_only_its_hash_is_stored(
    conn: Connection, team: Team, other_team: Team
) -> None:
    with conn.begin_nested():
        issued = issue_api_key(conn, team_id=team.id)
        assert authenticate(conn, api_key=issued.api_key) == (team.id, issued.key_id)
        assert authenticate(conn, api_key=issued.api_key + "x") is None
        assert authenticate(conn, api_key="") is None
        stored = conn.execute(select(api_keys.c.key_hash)).scalars().all()
    assert stored == [hashlib.sha256(issued.api_key.encode()).hexdigest()]
    assert issued.api_key.startswith("cs_")
    assert issued.api_key not in stored


def test_a_key_cannot_be_issued_for_an_unknown_team(conn: Connection) -> None:
    with pytest.raises(TeamNotFound), conn.begin_nested():
        issue_api_key(conn, team_id="no-such-team")


# --- companies -------------------------------------------------------------------


def test_companies_are_listed_per_team_by_name(
    conn: Connection, team: Team, other_team: Team
) -> None:
    with conn.begin_nested():
        zeta = create_company(conn, team_id=team.id, name=" Zeta Corp ")
        alpha = create_company(conn, team_id=team.id, name="Alpha Inc")
        create_company(conn, team_id=other_team.id, name="Rival Co")
        listed = list_companies(conn, team_id=team.id)
    assert [c.id for c in listed] == [alpha.id, zeta.id]
    assert zeta.name == "Zeta Corp"
    assert zeta.team_id == team.id


def test_a_company_name_must_be_a_string_of_1_to_200_characters(
    conn: Connection, team: Team
) -> None:
    for name in ("", "  ", "c" * 201, None, 42):
        with pytest.raises(ValidationFailed) as caught, conn.begin_nested():
            create_company(conn, team_id=team.id, name=name)
        assert list(caught.value.details) == ["name"], name
    assert list_companies(conn, team_id=team.id) == []


def test_a_company_cannot_be_created_for_an_unknown_team(conn: Connection) -> None:
    with pytest.raises(TeamNotFound), conn.begin_nested():
        create_company(conn, team_id="no-such-team", name="Ghost Ltd")


# --- create --------------------------------------------------------------------


def test_a_created_contact_starts_at_version_1_with_lead_status_new(
    conn: Connection, team: Team
) -> None:
    contact = make_contact(conn, team.id)
    assert contact.version == 1
    assert contact.lead_status == "new"
    assert contact.team_id == team.id
    assert contact.do_not_call is False
    assert contact.custom_fields == {}
    assert contact.tags == []
    assert contact.created_at == contact.updated_at
    assert contact.created_at.tzinfo is not None


def test_a_created_contact_reads_back_equal_from_get(conn: Connection, team: Team) -> None:
    created = make_contact(
        conn,
        team.id,
        email="Ada@Example.COM",
        phone="(202) 555-1234",
        phone_secondary="202 555 9876",
        job_title="Analyst",
        lead_status="Qualified",
        source="trade-show",
        timezone="America/Chicago",
        preferred_contact_method="phone",
        do_not_call=True,
        notes="Prefers mornings",
        custom_fields={"budget": 50000, "roof": {"type": "tile", "sqm": 120.5}},
        tags=["solar", "hot", "solar"],
    )
    fetched = get(conn, team.id, created.id)
    assert fetched == created
    assert fetched.email == "Ada@example.com"
    assert fetched.phone == "+12025551234"
    assert fetched.phone_secondary == "+12025559876"
    assert fetched.lead_status == "qualified"
    assert fetched.custom_fields == {"budget": 50000, "roof": {"type": "tile", "sqm": 120.5}}
    assert fetched.tags == ["solar", "hot"]


def test_a_create_accepts_a_camel_case_body(conn: Connection, team: Team) -> None:
    with conn.begin_nested():
        contact = create_contact(
            conn,
            team_id=team.id,
            data={"firstName": "Grace", "lastName": "Hopper", "doNotCall": True, "teamId": team.id},
        )
    assert (contact.first_name, contact.last_name, contact.do_not_call) == ("Grace", "Hopper", True)


def test_a_create_reads_national_numbers_in_the_team_region(conn: Connection) -> None:
    with conn.begin_nested():
        berlin = create_team(conn, name="Berlin Solar", region="DE")
    contact = make_contact(conn, berlin.id, phone="0049 30 1234567", phone_secondary="030 7654321")
    assert contact.phone == "+49301234567"
    assert contact.phone_secondary == "+49307654321"


def test_a_create_writes_one_history_record_with_no_version_before(
    conn: Connection, team: Team
) -> None:
    contact = make_contact(conn, team.id, phone="(202) 555-1234", custom_fields={"budget": 5})
    records = history(conn, team.id, contact.id)
    assert len(records) == 1
    record = records[0]
    assert record["version_before"] is None
    assert record["version_after"] == 1
    assert record["source"] == "api"
    assert record["event_id"] is None
    assert record["call_id"] is None
    assert record["skipped"] == []
    changes = {c["field"]: (c["old"], c["new"]) for c in record["changes"]}
    assert changes["first_name"] == (None, "Ada")
    assert changes["last_name"] == (None, "Lovelace")
    assert changes["phone"] == (None, "+12025551234")
    assert "email" not in changes  # unset fields are not changes
    assert "lead_status" not in changes  # a default is no one's input


def test_a_lead_status_sent_on_create_is_a_recorded_change(conn: Connection, team: Team) -> None:
    contact = make_contact(conn, team.id, lead_status="Qualified")
    changes = {c["field"]: c["new"] for c in history(conn, team.id, contact.id)[0]["changes"]}
    assert changes["lead_status"] == "qualified"
    assert provenance(conn, contact.id)["lead_status"]["source"] == "api"


def test_a_create_records_the_api_key_that_made_it(conn: Connection, team: Team) -> None:
    with conn.begin_nested():
        contact = create_contact(
            conn, team_id=team.id, data={"first_name": "A", "last_name": "B"}, api_key_id="key-1"
        )
    assert history(conn, team.id, contact.id)[0]["api_key_id"] == "key-1"


def test_a_create_records_api_provenance_for_each_field_it_set(
    conn: Connection, team: Team
) -> None:
    contact = make_contact(conn, team.id, email="ada@example.com", custom_fields={"budget": 5})
    recorded = provenance(conn, contact.id)
    assert set(recorded) == {"first_name", "last_name", "email", "custom_fields.budget"}
    for field, entry in recorded.items():
        assert entry["source"] == "api", field
        assert datetime.fromisoformat(entry["observed_at"]) == contact.created_at


def test_an_invalid_create_raises_and_writes_nothing(conn: Connection, team: Team) -> None:
    with pytest.raises(ValidationFailed) as caught:
        make_contact(conn, team.id, phone="12345", email="nope")
    assert caught.value.details == {
        "phone": E164_MESSAGE,
        "email": "Email must be a valid address",
    }
    assert count(conn, contacts) == 0
    assert count(conn, contact_history) == 0


def test_a_create_for_an_unknown_team_is_team_not_found(conn: Connection) -> None:
    with pytest.raises(TeamNotFound):
        make_contact(conn, "no-such-team")


def test_a_body_team_id_of_another_team_is_forbidden(
    conn: Connection, team: Team, other_team: Team
) -> None:
    body = {"first_name": "Eve", "last_name": "Spy", "teamId": other_team.id}
    with pytest.raises(ForbiddenTeam), conn.begin_nested():
        create_contact(conn, team_id=team.id, data=body)
    assert count(conn, contacts) == 0


def test_a_contact_may_belong_to_a_company_of_its_team(conn: Connection, team: Team) -> None:
    with conn.begin_nested():
        company = create_company(conn, team_id=team.id, name="Analytical Engines")
    contact = make_contact(conn, team.id, company_id=company.id)
    assert get(conn, team.id, contact.id).company_id == company.id


def test_an_unknown_company_is_rejected_naming_company_id(conn: Connection, team: Team) -> None:
    with pytest.raises(ValidationFailed) as caught:
        make_contact(conn, team.id, company_id="no-such-company")
    assert caught.value.details == {"company_id": "Company not found"}
    assert count(conn, contacts) == 0


def test_a_company_of_another_team_is_forbidden(
    conn: Connection, team: Team, other_team: Team
) -> None:
    with conn.begin_nested():
        rival = create_company(conn, team_id=other_team.id, name="Rival Co")
    with pytest.raises(ForbiddenTeam, match="Company does not belong to this team"):
        make_contact(conn, team.id, companyId=rival.id)
    assert count(conn, contacts) == 0


# --- get -----------------------------------------------------------------------


def test_get_of_an_unknown_id_is_contact_not_found(conn: Connection, team: Team) -> None:
    make_contact(conn, team.id)
    for bad in ("no-such-contact", "", "nul\x00id"):
        with pytest.raises(ContactNotFound):
            get(conn, team.id, bad)


def test_get_of_another_teams_contact_is_contact_not_found(
    conn: Connection, team: Team, other_team: Team
) -> None:
    theirs = make_contact(conn, other_team.id)
    with pytest.raises(ContactNotFound):
        get(conn, team.id, theirs.id)
    assert get(conn, other_team.id, theirs.id).id == theirs.id


# --- update ----------------------------------------------------------------------


def test_an_update_bumps_the_version_by_exactly_one(conn: Connection, team: Team) -> None:
    contact = make_contact(conn, team.id)
    updated = update(conn, team.id, contact.id, {"job_title": "CTO", "email": "a@example.com"})
    assert updated.version == 2
    assert (updated.job_title, updated.email) == ("CTO", "a@example.com")
    assert updated.updated_at > contact.updated_at
    assert updated.created_at == contact.created_at
    assert get(conn, team.id, contact.id) == updated
    assert update(conn, team.id, contact.id, {"jobTitle": "CEO"}).version == 3


def test_an_update_records_history_with_old_and_new_values(conn: Connection, team: Team) -> None:
    contact = make_contact(conn, team.id, job_title="Analyst", phone="(202) 555-1234")
    update(
        conn,
        team.id,
        contact.id,
        {"jobTitle": "CTO", "phone": None, "lead_status": "Qualified"},
        api_key_id="key-7",
    )
    latest = history(conn, team.id, contact.id)[0]
    assert (latest["version_before"], latest["version_after"]) == (1, 2)
    assert latest["source"] == "api"
    assert latest["api_key_id"] == "key-7"
    changes = {c["field"]: (c["old"], c["new"]) for c in latest["changes"]}
    assert changes == {
        "job_title": ("Analyst", "CTO"),
        "phone": ("+12025551234", None),
        "lead_status": ("new", "qualified"),
    }


def test_an_update_records_api_provenance_for_the_changed_fields_only(
    conn: Connection, team: Team
) -> None:
    contact = make_contact(conn, team.id)
    before = provenance(conn, contact.id)
    updated = update(conn, team.id, contact.id, {"email": "ada@example.com"})
    after = provenance(conn, contact.id)
    assert after["email"]["source"] == "api"
    assert datetime.fromisoformat(after["email"]["observed_at"]) == updated.updated_at
    assert after["first_name"] == before["first_name"]


def test_an_update_that_changes_nothing_keeps_the_version_and_records_nothing(
    conn: Connection, team: Team
) -> None:
    contact = make_contact(
        conn, team.id, phone="+12025551234", tags=["a"], custom_fields={"budget": 5}
    )
    # Same values, written differently: still no change.
    same = {
        "first_name": " Ada ",
        "phone": "(202) 555-1234",
        "tags": ["a", "a"],
        "customFields": {"budget": 5, "absent": None},
    }
    result = update(conn, team.id, contact.id, same)
    assert result.version == 1
    assert result.updated_at == contact.updated_at
    assert len(history(conn, team.id, contact.id)) == 1
    assert update(conn, team.id, contact.id, {}).version == 1
    assert get(conn, team.id, contact.id) == contact


def test_an_expected_version_that_no_longer_matches_raises_stale_version(
    conn: Connection, team: Team
) -> None:
    contact = make_contact(conn, team.id)
    update(conn, team.id, contact.id, {"job_title": "CTO"})
    with pytest.raises(StaleVersion) as caught:
        update(conn, team.id, contact.id, {"job_title": "CEO"}, expected_version=1)
    assert caught.value.current_version == 2
    current = get(conn, team.id, contact.id)
    assert (current.version, current.job_title) == (2, "CTO")
    assert len(history(conn, team.id, contact.id)) == 2


def test_a_version_in_the_body_is_checked_like_an_expected_version(
    conn: Connection, team: Team
) -> None:
    contact = make_contact(conn, team.id)
    assert update(conn, team.id, contact.id, {"notes": "one", "version": 1}).version == 2
    with pytest.raises(StaleVersion) as caught:
        update(conn, team.id, contact.id, {"notes": "two", "version": 1})
    assert caught.value.current_version == 2
    assert get(conn, team.id, contact.id).notes == "one"


def test_a_matching_expected_version_applies_the_update(conn: Connection, team: Team) -> None:
    contact = make_contact(conn, team.id)
    updated = update(conn, team.id, contact.id, {"notes": "hello"}, expected_version=1)
    assert (updated.version, updated.notes) == (2, "hello")


def test_custom_fields_are_merge_patched_and_null_removes_a_key(
    conn: Connection, team: Team
) -> None:
    contact = make_contact(conn, team.id, custom_fields={"a": 1, "b": 2, "c": {"x": 1}})
    updated = update(
        conn, team.id, contact.id, {"custom_fields": {"b": None, "c": {"y": 2}, "d": "new"}}
    )
    assert updated.custom_fields == {"a": 1, "c": {"y": 2}, "d": "new"}
    assert updated.version == 2
    changes = {
        c["field"]: (c["old"], c["new"]) for c in history(conn, team.id, contact.id)[0]["changes"]
    }
    assert changes == {
        "custom_fields.b": (2, None),
        "custom_fields.c": ({"x": 1}, {"y": 2}),
        "custom_fields.d": (None, "new"),
    }
    assert provenance(conn, contact.id)["custom_fields.d"]["source"] == "api"


def test_nulling_a_custom_field_that_does_not_exist_is_a_no_op(
    conn: Connection, team: Team
) -> None:
    contact = make_contact(conn, team.id, custom_fields={"a": 1})
    assert update(conn, team.id, contact.id, {"custom_fields": {"zzz": None}}).version == 1


def test_null_clears_optional_fields_and_resets_defaults(conn: Connection, team: Team) -> None:
    contact = make_contact(
        conn,
        team.id,
        email="a@example.com",
        tags=["x"],
        lead_status="qualified",
        do_not_call=True,
    )
    updated = update(
        conn,
        team.id,
        contact.id,
        {"email": None, "tags": None, "lead_status": None, "do_not_call": None},
    )
    assert (updated.email, updated.tags, updated.lead_status) == (None, [], "new")
    assert updated.do_not_call is False


def test_an_update_may_not_null_a_name(conn: Connection, team: Team) -> None:
    contact = make_contact(conn, team.id)
    with pytest.raises(ValidationFailed) as caught:
        update(conn, team.id, contact.id, {"last_name": None})
    assert caught.value.details == {"last_name": "Must not be null"}


def test_an_invalid_update_raises_and_writes_nothing(conn: Connection, team: Team) -> None:
    contact = make_contact(conn, team.id)
    with pytest.raises(ValidationFailed) as caught:
        update(conn, team.id, contact.id, {"job_title": "CTO", "phone_secondary": "999"})
    assert caught.value.details == {"phone_secondary": E164_MESSAGE}
    assert get(conn, team.id, contact.id) == contact
    assert len(history(conn, team.id, contact.id)) == 1


def test_an_update_reads_national_numbers_in_the_team_region(conn: Connection) -> None:
    with conn.begin_nested():
        berlin = create_team(conn, name="Berlin Solar", region="DE")
    contact = make_contact(conn, berlin.id)
    assert update(conn, berlin.id, contact.id, {"phone": "030 1234567"}).phone == "+49301234567"


def test_an_update_of_another_teams_contact_is_contact_not_found(
    conn: Connection, team: Team, other_team: Team
) -> None:
    theirs = make_contact(conn, other_team.id)
    with pytest.raises(ContactNotFound):
        update(conn, team.id, theirs.id, {"job_title": "Spy"})
    with pytest.raises(ContactNotFound):
        update(conn, team.id, "no-such-contact", {"job_title": "Spy"})
    assert get(conn, other_team.id, theirs.id) == theirs


def test_an_update_to_an_unknown_company_is_rejected_naming_company_id(
    conn: Connection, team: Team
) -> None:
    contact = make_contact(conn, team.id)
    with pytest.raises(ValidationFailed) as caught:
        update(conn, team.id, contact.id, {"company_id": "no-such-company"})
    assert caught.value.details == {"company_id": "Company not found"}


def test_an_update_to_a_company_of_another_team_is_forbidden(
    conn: Connection, team: Team, other_team: Team
) -> None:
    contact = make_contact(conn, team.id)
    with conn.begin_nested():
        rival = create_company(conn, team_id=other_team.id, name="Rival Co")
        ours = create_company(conn, team_id=team.id, name="Our Co")
    with pytest.raises(ForbiddenTeam):
        update(conn, team.id, contact.id, {"companyId": rival.id})
    assert update(conn, team.id, contact.id, {"companyId": ours.id}).company_id == ours.id
    assert update(conn, team.id, contact.id, {"companyId": None}).company_id is None


def test_concurrent_updates_are_all_applied_each_with_its_own_version(engine: Engine) -> None:
    # Several connections at once: committed for real, on tables emptied first.
    team = make_team(engine)
    contact = make_contact(engine, team.id)
    writers = 6
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            with engine.begin() as conn:
                update(conn, team.id, contact.id, {"custom_fields": {f"k{i}": i}})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with engine.connect() as conn:
        final = get(conn, team.id, contact.id)
        versions = sorted(r["version_after"] for r in history(conn, team.id, contact.id))
    assert final.custom_fields == {f"k{i}": i for i in range(writers)}
    assert final.version == 1 + writers
    assert versions == list(range(1, writers + 2))


# --- history and delete ------------------------------------------------------------


def test_history_is_listed_newest_first(conn: Connection, team: Team) -> None:
    contact = make_contact(conn, team.id)
    for title in ("Analyst", "Lead", "CTO"):
        update(conn, team.id, contact.id, {"job_title": title})
    records = history(conn, team.id, contact.id)
    assert [r["version_after"] for r in records] == [4, 3, 2, 1]
    assert [r["version_before"] for r in records] == [3, 2, 1, None]
    assert records[0]["changes"] == [{"field": "job_title", "old": "Lead", "new": "CTO"}]
    assert records[0]["recorded_at"] >= records[-1]["recorded_at"]


def test_history_of_another_teams_contact_is_contact_not_found(
    conn: Connection, team: Team, other_team: Team
) -> None:
    theirs = make_contact(conn, other_team.id)
    with pytest.raises(ContactNotFound):
        history(conn, team.id, theirs.id)


def test_history_is_kept_per_contact(conn: Connection, team: Team) -> None:
    first = make_contact(conn, team.id)
    second = make_contact(conn, team.id, first_name="Grace")
    update(conn, team.id, first.id, {"notes": "x"})
    assert len(history(conn, team.id, first.id)) == 2
    assert [r["contact_id"] for r in history(conn, team.id, second.id)] == [second.id]


def test_a_deleted_contact_is_gone_with_its_history_but_for_a_record_of_the_delete(
    conn: Connection, team: Team
) -> None:
    contact = make_contact(conn, team.id)
    kept = make_contact(conn, team.id, first_name="Grace")
    update(conn, team.id, contact.id, {"notes": "x"})
    with conn.begin_nested():
        delete_contact(conn, team_id=team.id, contact_id=contact.id)
    with pytest.raises(ContactNotFound):
        get(conn, team.id, contact.id)
    with pytest.raises(ContactNotFound):
        history(conn, team.id, contact.id)
    [record] = conn.execute(
        select(contact_history).where(contact_history.c.contact_id == contact.id)
    ).all()
    # The records that held its values are gone; the delete's own record holds none.
    assert (record.version_before, record.version_after, record.changes) == (2, 3, [])
    assert count(conn, contact_history) == 2
    assert get(conn, team.id, kept.id) == kept


def test_a_contact_cannot_be_deleted_by_another_team_or_twice(
    conn: Connection, team: Team, other_team: Team
) -> None:
    contact = make_contact(conn, team.id)
    with pytest.raises(ContactNotFound), conn.begin_nested():
        delete_contact(conn, team_id=other_team.id, contact_id=contact.id)
    assert get(conn, team.id, contact.id) == contact
    with conn.begin_nested():
        delete_contact(conn, team_id=team.id, contact_id=contact.id)
    for bad in (contact.id, "no-such-contact", "nul\x00id"):
        with pytest.raises(ContactNotFound), conn.begin_nested():
            delete_contact(conn, team_id=team.id, contact_id=bad)


def test_text_no_database_can_store_is_a_validation_error_not_a_crash(
    conn: Connection, team: Team
) -> None:
    # PostgreSQL cannot store U+0000, and no database stores a lone surrogate.
    for body, field in (
        ({"custom_fields": {"note": "a\x00b"}}, "custom_fields"),
        ({"custom_fields": {"note": "a\ud800"}}, "custom_fields"),
        ({"first_name": "Ada\ud800"}, "first_name"),
        ({"tags": ["\udfff"]}, "tags"),
    ):
        with pytest.raises(ValidationFailed) as caught:
            make_contact(conn, team.id, **body)
        assert list(caught.value.details) == [field], body
    contact = make_contact(conn, team.id)
    with pytest.raises(ValidationFailed):
        update(conn, team.id, contact.id, {"custom_fields": {"note": {"k\x00": 1}}})
    with pytest.raises(ValidationFailed):
        update(conn, team.id, contact.id, {"notes": "\ud800"})
    assert get(conn, team.id, contact.id) == contact
    assert count(conn, contacts) == 1


def test_contacts_built_from_rows_equal_validated_ones(conn: Connection, team: Team) -> None:
    # contact_from_row and contacts_from_rows skip pydantic's validation and
    # model_construct: what they build must be a contact like any other.
    assert not Contact.__private_attributes__
    assert not Contact.__pydantic_post_init__
    assert Contact.model_config.get("extra") != "allow"
    created = make_contact(conn, team.id, custom_fields={"budget": 5}, tags=["vip"])
    rows = conn.execute(select(*CONTACT_COLUMNS).where(contacts.c.id == created.id)).all()
    full = conn.execute(select(contacts).where(contacts.c.id == created.id)).one()
    for built in (*contacts_from_rows(rows), contact_from_row(full), contact_from_row(rows[0])):
        validated = Contact.model_validate(built.model_dump())
        assert built == validated
        assert built.model_dump_json() == validated.model_dump_json()
        assert built.model_fields_set == validated.model_fields_set
