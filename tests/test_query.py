"""The read module (docs/design.md §7): the contacts list and the scheduler's eligible stream.

Every database test runs on both PostgreSQL and SQLite, in one transaction rolled back after
it (the ``conn`` fixture).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, update

from contact_sync.accounts.teams import Team, create_team
from contact_sync.contacts import query as query_module
from contact_sync.contacts.companies import Company, create_company
from contact_sync.contacts.model import Contact
from contact_sync.contacts.query import (
    ContactPage,
    ContactQuery,
    EligiblePage,
    EligibleQuery,
    list_contacts,
    list_eligible,
)
from contact_sync.contacts.store import create_contact, get_contact, update_contact
from contact_sync.db.tables import contacts
from contact_sync.errors import ValidationFailed
from tests.factories import make_contact

DB_HYPOTHESIS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def team(conn: Connection) -> Team:
    """A US team, in the test's transaction."""
    return create_team(conn, name="Acme Solar")


@pytest.fixture
def other_team(conn: Connection) -> Team:
    """A second team, for isolation checks."""
    return create_team(conn, name="Rival Roofing")


def page(conn: Connection, **params: Any) -> ContactPage:
    """The contacts list for these query parameters (camelCase or snake_case)."""
    return list_contacts(conn, ContactQuery.parse(params))


def ids(conn: Connection, **params: Any) -> list[str]:
    return [c.id for c in page(conn, **params).data]


# A Thursday, 10:00 in New York: inside the default window everywhere the cast lives.
WEEKDAY_MORNING = "2026-01-15T15:00:00Z"
DC = "(202) 555-1234"  # a Washington number: America/New_York, no state rules
TOLL_FREE = "+1 800 555 0199"  # names no zone and no state


def eligible(conn: Connection, **params: Any) -> EligiblePage:
    """The stream at ``at`` (a weekday morning unless given: it defaults to now since §12)."""
    params.setdefault("at", WEEKDAY_MORNING)
    return list_eligible(conn, EligibleQuery.parse(params))


def eligible_ids(conn: Connection, **params: Any) -> set[str]:
    return {c.id for c in eligible(conn, **params).data}


def set_created_at(conn: Connection, contact_id: str, when: datetime) -> None:
    conn.execute(update(contacts).where(contacts.c.id == contact_id).values(created_at=when))


def query_errors(model: type[ContactQuery] | type[EligibleQuery], params: dict[str, Any]) -> Any:
    with pytest.raises(ValidationFailed) as caught:
        model.parse(params)
    return caught.value.details


# --- a small cast for the filter tests ---------------------------------------------


@dataclass
class Cast:
    team: Team
    engines: Company
    navy: Company
    ada: Contact
    grace: Contact
    alan: Contact
    elodie: Contact
    katherine: Contact

    def all(self) -> set[str]:
        return {c.id for c in (self.ada, self.grace, self.alan, self.elodie, self.katherine)}


@pytest.fixture
def cast(conn: Connection, team: Team) -> Cast:
    engines = create_company(conn, team_id=team.id, name="Analytical Engines")
    navy = create_company(conn, team_id=team.id, name="US Navy")
    return Cast(
        team=team,
        engines=engines,
        navy=navy,
        ada=make_contact(
            conn,
            team.id,
            email="ada@analytical.org",
            phone="(202) 555-1234",
            company_id=engines.id,
            lead_status="qualified",
        ),
        grace=make_contact(
            conn,
            team.id,
            first_name="Grace",
            last_name="Hopper",
            email="grace@navy.mil",
            phone_secondary="312-555-0199",
            company_id=engines.id,
        ),
        alan=make_contact(
            conn,
            team.id,
            first_name="Alan",
            last_name="Turing",
            phone="+44 20 7946 0958",
            company_id=navy.id,
            lead_status="customer",
            do_not_call=True,
        ),
        elodie=make_contact(
            conn,
            team.id,
            first_name="Élodie",
            last_name="Durand",
            lead_status="Qualified",
            do_not_call=True,
        ),
        katherine=make_contact(
            conn,
            team.id,
            first_name="Katherine",
            last_name="Johnson",
            email="K.Johnson@NASA.gov",
            phone="(415) 555-0100",
            company_id=engines.id,
            lead_status="qualified",
            do_not_call=True,
        ),
    )


def found(conn: Connection, cast: Cast, **params: Any) -> set[str]:
    """The names of the cast members the list returns."""
    by_id = {
        c.id: name
        for name, c in vars(cast).items()
        if isinstance(c, Contact)  # the people, not the team or companies
    }
    result = page(conn, team_id=cast.team.id, **params)
    assert result.total == len(result.data)  # small enough for one page
    return {by_id[c.id] for c in result.data}


# --- filters, alone and combined ---------------------------------------------------


def test_without_filters_every_contact_of_the_team_is_listed(conn: Connection, cast: Cast) -> None:
    result = page(conn, team_id=cast.team.id)
    assert {c.id for c in result.data} == cast.all()
    assert (result.total, result.limit, result.offset) == (5, 50, 0)


def test_the_company_filter_alone(conn: Connection, cast: Cast) -> None:
    assert found(conn, cast, company_id=cast.engines.id) == {"ada", "grace", "katherine"}
    assert found(conn, cast, companyId=cast.navy.id) == {"alan"}
    assert found(conn, cast, company_id="no-such-company") == set()


def test_the_lead_status_filter_alone_normalises_its_input(conn: Connection, cast: Cast) -> None:
    assert found(conn, cast, lead_status="qualified") == {"ada", "elodie", "katherine"}
    assert found(conn, cast, leadStatus="Qualified") == {"ada", "elodie", "katherine"}
    assert found(conn, cast, lead_status="New") == {"grace"}
    assert found(conn, cast, lead_status="churned") == set()


def test_the_do_not_call_filter_alone(conn: Connection, cast: Cast) -> None:
    assert found(conn, cast, do_not_call=True) == {"alan", "elodie", "katherine"}
    assert found(conn, cast, doNotCall=False) == {"ada", "grace"}


def test_the_has_phone_filter_alone_looks_at_the_primary_phone(
    conn: Connection, cast: Cast
) -> None:
    assert found(conn, cast, has_phone=True) == {"ada", "alan", "katherine"}
    # Grace has only a secondary number: she has no phone to call.
    assert found(conn, cast, hasPhone=False) == {"grace", "elodie"}


def test_the_search_filter_alone(conn: Connection, cast: Cast) -> None:
    assert found(conn, cast, search="hopper") == {"grace"}


def test_filters_combine_with_and(conn: Connection, cast: Cast) -> None:
    engines = cast.engines.id
    assert found(conn, cast, company_id=engines, lead_status="qualified") == {"ada", "katherine"}
    assert found(
        conn, cast, company_id=engines, lead_status="qualified", do_not_call=False, has_phone=True
    ) == {"ada"}
    assert found(conn, cast, lead_status="qualified", do_not_call=True, has_phone=False) == {
        "elodie"
    }
    assert found(conn, cast, company_id=engines, search="nasa") == {"katherine"}
    assert found(conn, cast, search="555", do_not_call=True) == {"katherine"}
    assert found(conn, cast, company_id=cast.navy.id, lead_status="qualified") == set()


# --- search --------------------------------------------------------------------------


SEARCHES = {
    "Ada": {"ada"},
    "lovelace": {"ada"},
    "LOVE": {"ada"},
    "ada love": {"ada"},
    "Ada Lovelace": {"ada"},
    "  grace hopper  ": {"grace"},
    "hopper grace": set(),
    "analytical.org": {"ada"},
    "nasa.GOV": {"katherine"},
    "k.johnson@": {"katherine"},
    "202-555": {"ada"},
    "(202) 555-1234": {"ada"},
    "2025551234": {"ada"},
    "+1 202": {"ada"},
    "312-555": {"grace"},
    "555": {"ada", "grace", "katherine"},
    "20 7946": {"alan"},
    "élodie": {"elodie"},
    "ÉLODIE": {"elodie"},
    "zzz": set(),
}


def test_search_matches_names_email_and_phone_digits_case_insensitively(
    conn: Connection, cast: Cast
) -> None:
    results = {search: found(conn, cast, search=search) for search in SEARCHES}
    assert results == SEARCHES


def test_a_blank_search_is_no_filter(conn: Connection, cast: Cast) -> None:
    assert len(found(conn, cast, search="   ")) == 5


def test_search_finds_lower_case_input_in_non_ascii_upper_case_names(
    conn: Connection, team: Team
) -> None:
    upper = make_contact(conn, team.id, first_name="ÉLODIE", last_name="ØSTERGÅRD")
    assert ids(conn, team_id=team.id, search="élodie østergård") == [upper.id]


SPECIAL_NAMES = ["50% Off", "a_b", "axb", "Back\\slash", "Slash/Name", "O'Brien", 'Quote"Mark']


LITERAL_SEARCHES = {
    "%": ["50% Off"],
    "_": ["a_b"],
    "50%": ["50% Off"],
    "a_b": ["a_b"],
    "\\": ["Back\\slash"],
    "/": ["Slash/Name"],
    "'": ["O'Brien"],
    '"': ['Quote"Mark'],
    "%%": [],
    "\\%": [],
    "_/": [],
}


def test_wildcards_escapes_and_quotes_in_a_search_are_literal(conn: Connection, team: Team) -> None:
    for name in SPECIAL_NAMES:
        make_contact(conn, team.id, first_name=name, last_name="Zed")
    results = {}
    for search in LITERAL_SEARCHES:
        result = page(conn, team_id=team.id, search=search)
        assert result.total == len(result.data)
        results[search] = [c.first_name for c in result.data]
    assert results == LITERAL_SEARCHES


SEARCH_ALPHABET = st.sampled_from(list("abcXYZ019 %_\\/'\"-.@éÉ"))


@DB_HYPOTHESIS
@given(needle=st.text(SEARCH_ALPHABET, min_size=1, max_size=20).filter(lambda s: s.strip()))
@example(needle="%")
@example(needle="_")
@example(needle="\\")
@example(needle="/%")
def test_any_text_in_a_name_is_found_by_searching_for_it_literally(
    conn: Connection, needle: str
) -> None:
    # One team per example: team names are unique.
    team = create_team(conn, name=f"Search team {uuid.uuid4().hex}")
    target = create_contact(
        conn, team_id=team.id, data={"first_name": f"Q{needle}Q", "last_name": "Zed"}
    )
    decoy = create_contact(
        conn, team_id=team.id, data={"first_name": "Plain", "last_name": "Person"}
    )
    found_ids = ids(conn, team_id=team.id, search=needle)
    assert target.id in found_ids
    # The decoy matches only if the text really is in "Plain Person".
    assert (decoy.id in found_ids) == (needle.strip().lower() in "plain person")


def test_a_search_of_wildcards_alone_matches_no_contact_without_them(
    conn: Connection, team: Team
) -> None:
    make_contact(conn, team.id, email="ada@example.com", phone="(202) 555-1234")
    for wildcard in ("%", "_", "%_%", "__"):
        result = page(conn, team_id=team.id, search=wildcard)
        assert (result.data, result.total) == ([], 0), wildcard


def test_search_matches_an_email_containing_wildcards_literally(
    conn: Connection, team: Team
) -> None:
    target = make_contact(conn, team.id, email="first_last@example.com")
    make_contact(conn, team.id, email="firstxlast@example.com")
    assert ids(conn, team_id=team.id, search="first_last") == [target.id]


# --- pagination, total, order ----------------------------------------------------------


def test_pages_follow_limit_and_offset_and_total_counts_every_match(
    conn: Connection, team: Team
) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    created = [make_contact(conn, team.id, first_name=f"P{i}") for i in range(7)]
    for i, contact in enumerate(created):
        set_created_at(conn, contact.id, base + timedelta(minutes=i))
    newest_first = [c.id for c in reversed(created)]
    pages = [page(conn, team_id=team.id, limit=3, offset=offset) for offset in (0, 3, 6, 9)]
    assert [[c.id for c in p.data] for p in pages] == [
        newest_first[0:3],
        newest_first[3:6],
        newest_first[6:7],
        [],
    ]
    assert [p.total for p in pages] == [7, 7, 7, 7]
    assert [(p.limit, p.offset) for p in pages] == [(3, 0), (3, 3), (3, 6), (3, 9)]


def test_total_counts_the_filtered_matches_before_pagination(conn: Connection, team: Team) -> None:
    for i in range(5):
        make_contact(conn, team.id, first_name=f"Q{i}", lead_status="qualified")
    for i in range(3):
        make_contact(conn, team.id, first_name=f"N{i}")
    first = page(conn, team_id=team.id, lead_status="qualified", limit=2)
    assert (len(first.data), first.total) == (2, 5)
    exact = page(conn, team_id=team.id, lead_status="qualified", limit=5)
    assert (len(exact.data), exact.total) == (5, 5)
    last = page(conn, team_id=team.id, lead_status="qualified", limit=2, offset=4)
    assert (len(last.data), last.total) == (1, 5)
    assert page(conn, team_id=team.id, limit=500).total == 8


def test_contacts_are_ordered_newest_created_first_whatever_the_insertion_order(
    conn: Connection, team: Team
) -> None:
    base = datetime(2026, 3, 1, 12, tzinfo=UTC)
    a, b, c = (make_contact(conn, team.id, first_name=n) for n in ("A", "B", "C"))
    set_created_at(conn, a.id, base + timedelta(hours=2))
    set_created_at(conn, b.id, base)
    set_created_at(conn, c.id, base + timedelta(hours=1))
    assert ids(conn, team_id=team.id) == [a.id, c.id, b.id]


def test_contacts_created_at_the_same_instant_are_ordered_by_id(
    conn: Connection, team: Team
) -> None:
    same = datetime(2026, 3, 1, 12, tzinfo=UTC)
    created = [make_contact(conn, team.id, first_name=f"T{i}") for i in range(4)]
    for contact in created:
        set_created_at(conn, contact.id, same)
    expected = sorted((c.id for c in created), reverse=True)
    assert ids(conn, team_id=team.id) == expected
    # The tie-break makes pages disjoint and complete.
    paged = ids(conn, team_id=team.id, limit=2) + ids(conn, team_id=team.id, limit=2, offset=2)
    assert paged == expected


def test_a_page_serialises_to_the_api_shape(conn: Connection, team: Team) -> None:
    contact = make_contact(conn, team.id, custom_fields={"budget": 5}, tags=["hot"])
    body = json.loads(json.dumps(page(conn, team_id=team.id, limit=10).to_dict()))
    assert set(body) == {"data", "total", "limit", "offset"}
    assert (body["total"], body["limit"], body["offset"]) == (1, 10, 0)
    [item] = body["data"]
    assert item["id"] == contact.id
    assert item["first_name"] == "Ada"
    assert item["custom_fields"] == {"budget": 5}
    assert item["version"] == 1
    assert datetime.fromisoformat(item["created_at"]) == contact.created_at


# --- team isolation ------------------------------------------------------------------


def test_another_teams_contacts_never_appear(
    conn: Connection, team: Team, other_team: Team
) -> None:
    ours = make_contact(conn, team.id, phone="(202) 555-1234", lead_status="qualified")
    make_contact(conn, other_team.id, phone="(202) 555-1234", lead_status="qualified")
    make_contact(conn, other_team.id, first_name="Grace", do_not_call=True)
    for params in (
        {},
        {"search": "ada"},
        {"search": "202-555"},
        {"lead_status": "qualified"},
        {"has_phone": True},
        {"do_not_call": False},
    ):
        result = page(conn, team_id=team.id, **params)
        assert [c.id for c in result.data] == [ours.id], params
        assert result.total == 1
    assert page(conn, team_id=team.id, do_not_call=True).total == 0


def test_a_company_of_another_team_matches_nothing(
    conn: Connection, team: Team, other_team: Team
) -> None:
    rival = create_company(conn, team_id=other_team.id, name="Rival Co")
    make_contact(conn, team.id)
    make_contact(conn, other_team.id, company_id=rival.id)
    result = page(conn, team_id=team.id, company_id=rival.id)
    assert (result.data, result.total) == ([], 0)


def test_an_unknown_team_has_no_contacts(conn: Connection, team: Team) -> None:
    make_contact(conn, team.id)
    assert page(conn, team_id="no-such-team").total == 0


# --- query validation (pure) ------------------------------------------------------------


def test_a_query_defaults_to_limit_50_offset_0_and_accepts_camel_case() -> None:
    query = ContactQuery.parse(
        {
            "teamId": "t1",
            "companyId": "c1",
            "leadStatus": "Do Not Contact",
            "doNotCall": True,
            "hasPhone": False,
            "search": "  ada  ",
        }
    )
    assert (query.limit, query.offset) == (50, 0)
    assert query.lead_status == "do_not_contact"
    assert query.search == "ada"
    assert (query.company_id, query.do_not_call, query.has_phone) == ("c1", True, False)


def test_limit_1_and_500_are_accepted() -> None:
    assert ContactQuery.parse({"team_id": "t", "limit": 1}).limit == 1
    assert ContactQuery.parse({"team_id": "t", "limit": 500, "offset": 9}).offset == 9


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": -5}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"leadStatus": "!!!"}, "lead_status"),
        ({"lead_status": "   "}, "lead_status"),
        ({"doNotCall": "maybe"}, "do_not_call"),
        ({"has_phone": "yes"}, "has_phone"),
        ({"search": "x" * 201}, "search"),
        ({"search": "nul\x00"}, "search"),
        ({"company_id": "nul\x00"}, "company_id"),
        ({"company_id": "bad\ud800"}, "company_id"),
        ({"search": "bad\ud800"}, "search"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_an_invalid_query_parameter_is_rejected_naming_it(
    params: dict[str, Any], field: str
) -> None:
    details = query_errors(ContactQuery, {"team_id": "t", **params})
    assert list(details) == [field]


@pytest.mark.parametrize("team_id", [None, "", "nul\x00", "bad\udfff"])
def test_a_query_needs_a_team(team_id: Any) -> None:
    params = {} if team_id is None else {"team_id": team_id}
    assert list(query_errors(ContactQuery, params)) == ["team_id"]


def test_limit_errors_are_never_clamped() -> None:
    details = query_errors(ContactQuery, {"teamId": "t", "limit": 501, "offset": -1})
    assert set(details) == {"limit", "offset"}


# --- the eligible stream -----------------------------------------------------------------


def test_eligible_excludes_do_not_call_phoneless_and_sticky_statuses(
    conn: Connection, team: Team
) -> None:
    phone = "(202) 555-1234"
    callable_ids = {
        make_contact(conn, team.id, phone=phone, lead_status=status).id
        for status in ("new", "contacted", "qualified", "unqualified", "hot_prospect")
    }
    make_contact(conn, team.id, phone=phone, do_not_call=True)
    make_contact(conn, team.id)  # no phone at all
    make_contact(conn, team.id, phone_secondary=phone)  # only a secondary number
    for sticky in ("converted", "customer", "churned", "Do Not Contact"):
        make_contact(conn, team.id, phone=phone, lead_status=sticky)
    result = eligible(conn, team_id=team.id)
    assert {c.id for c in result.data} == callable_ids
    assert result.next_cursor is None


def test_the_stream_serialises_rows_as_the_contact_model_does(conn: Connection, team: Team) -> None:
    # to_dict writes the rows straight to JSON values (no Contact per row): they must be
    # what Contact.model_dump(mode="json") gives, for every kind of value a contact holds.
    from tests.factories import insert_call

    full = make_contact(
        conn,
        team.id,
        phone=DC,
        phone_secondary="+12025550199",
        email="ada@example.com",
        job_title="CTO",
        source="trade-show",
        timezone="America/Chicago",
        preferred_contact_method="phone",
        notes="Met at SPI. ünïcödé",
        custom_fields={"roof": {"type": "flat", "m2": 12.5}, "ok": True, "n": None},
        tags=["vip", "hot"],
    )
    bare = make_contact(conn, team.id, phone=DC)
    ended = datetime(2026, 1, 12, 15, 30, 1, 120, tzinfo=UTC)  # microseconds: 000120
    insert_call(conn, team.id, full.id, ended_at=ended, outcome="busy")
    page = eligible(conn, team_id=team.id)
    assert {c.id for c in page.data} == {full.id, bare.id}
    answer = page.to_dict()
    stored = {c.id: get_contact(conn, team_id=team.id, contact_id=c.id) for c in page.data}
    assert answer["data"] == [stored[c.id].model_dump(mode="json") for c in page.data]
    assert page.data == [stored[c.id] for c in page.data]
    assert json.loads(json.dumps(answer)) == answer
    by_id = {c["id"]: c for c in answer["data"]}
    assert by_id[full.id]["last_called_at"] == "2026-01-12T15:30:01.000120Z"
    assert by_id[full.id]["call_count"] == 1
    assert list(by_id[bare.id]) == list(Contact.model_fields)


def test_eligible_never_lists_another_teams_contacts(
    conn: Connection, team: Team, other_team: Team
) -> None:
    ours = make_contact(conn, team.id, phone="(202) 555-1234")
    make_contact(conn, other_team.id, phone="(202) 555-1234")
    assert eligible_ids(conn, team_id=team.id) == {ours.id}


def test_without_at_the_stream_asks_about_the_current_time(
    conn: Connection, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Round 1 applied no window without `at`: at 07:21 in New York it offered New Yorkers.
    new_yorker = make_contact(conn, team.id, phone=DC)
    found = {}
    for now in ("2026-01-15T12:21:00Z", "2026-01-15T15:00:00Z"):  # 07:21 and 10:00 EST
        monkeypatch.setattr(query_module, "utcnow", lambda now=now: datetime.fromisoformat(now))
        page = list_eligible(conn, EligibleQuery.parse({"team_id": team.id}))
        found[now] = {c.id for c in page.data}
    assert found == {"2026-01-15T12:21:00Z": set(), "2026-01-15T15:00:00Z": {new_yorker.id}}


CHICAGO_WINDOW = {
    "2026-01-15T14:59:00Z": False,  # 08:59 CST
    "2026-01-15T15:00:00Z": True,  # 09:00 CST: the start is inclusive
    "2026-01-15T09:00:00-06:00": True,  # the same instant, another offset
    "2026-01-15T22:59:00Z": True,  # 16:59 CST
    "2026-01-15T23:00:00Z": False,  # 17:00 CST: the end is exclusive
    "2026-07-15T14:00:00Z": True,  # 09:00 CDT (summer time)
    "2026-07-15T13:59:00Z": False,  # 08:59 CDT
}


def test_the_window_is_read_in_the_contacts_timezone_start_inclusive_end_exclusive(
    conn: Connection, team: Team
) -> None:
    chicago = make_contact(conn, team.id, phone="(312) 555-1234", timezone="America/Chicago")
    inside = {at: chicago.id in eligible_ids(conn, team_id=team.id, at=at) for at in CHICAGO_WINDOW}
    assert inside == CHICAGO_WINDOW


def test_contacts_without_a_timezone_use_their_numbers_zone_then_the_default(
    conn: Connection, team: Team
) -> None:
    floating = make_contact(conn, team.id, phone=TOLL_FREE)
    londoner = make_contact(conn, team.id, phone="+44 20 7946 0958")  # Europe/London
    at_nine_in_new_york = "2026-01-15T14:00:00Z"  # 23:00 in Tokyo, 14:00 in London
    assert eligible_ids(conn, team_id=team.id, at=at_nine_in_new_york) == {
        floating.id,
        londoner.id,
    }
    assert eligible_ids(conn, team_id=team.id, at="2026-01-15T13:59:00Z") == {londoner.id}
    assert eligible_ids(conn, team_id=team.id, at="2026-01-15T22:00:00Z") == set()  # 17:00
    assert eligible_ids(
        conn, team_id=team.id, at=at_nine_in_new_york, defaultTimezone="Asia/Tokyo"
    ) == {londoner.id}
    assert eligible_ids(
        conn, team_id=team.id, at="2026-01-15T00:00:00Z", default_timezone="Asia/Tokyo"
    ) == {floating.id}  # 09:00 in Tokyo, midnight in London


def test_the_contacts_own_timezone_wins_over_the_default(conn: Connection, team: Team) -> None:
    tokyo = make_contact(conn, team.id, phone="+81 3 1234 5678", timezone="Asia/Tokyo")
    floating = make_contact(conn, team.id, phone=TOLL_FREE)
    at = "2026-01-15T00:30:00Z"  # 09:30 Tokyo, 19:30 New York
    assert eligible_ids(conn, team_id=team.id, at=at) == {tokyo.id}
    assert eligible_ids(conn, team_id=team.id, at=at, default_timezone="Asia/Tokyo") == {
        tokyo.id,
        floating.id,
    }


# 20:00-09:00 spans midnight; the 08:00-21:00 floor keeps 08:00-09:00 and 20:00-21:00 of it.
OVERNIGHT_WINDOW = {
    "07:59": False,
    "08:00": True,
    "08:59": True,
    "09:00": False,
    "12:00": False,
    "19:59": False,
    "20:00": True,
    "20:59": True,
    "21:00": False,
    "23:30": False,
    "00:00": False,
}


def test_a_window_whose_start_is_after_its_end_spans_midnight_within_the_floor(
    conn: Connection, team: Team
) -> None:
    london = make_contact(conn, team.id, phone="+44 20 7946 0958", timezone="Europe/London")
    inside = {}
    for utc_time in OVERNIGHT_WINDOW:
        at = f"2026-01-15T{utc_time}:00Z"  # London is on UTC in January
        found_ids = eligible_ids(
            conn, team_id=team.id, at=at, windowStart="20:00", windowEnd="09:00"
        )
        inside[utc_time] = london.id in found_ids
    assert inside == OVERNIGHT_WINDOW


def test_keyset_pages_return_every_eligible_contact_exactly_once(
    conn: Connection, team: Team
) -> None:
    wanted = {make_contact(conn, team.id, phone="(202) 555-1234").id for _ in range(11)}
    for _ in range(3):
        make_contact(conn, team.id, phone="(202) 555-1234", do_not_call=True)
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"team_id": team.id, "limit": 4}
        if cursor is not None:
            params["cursor"] = cursor
        result = eligible(conn, **params)
        seen += [c.id for c in result.data]
        sizes.append(len(result.data))
        cursor = result.next_cursor
        if cursor is None:
            break
    assert sizes == [4, 4, 3]
    assert len(seen) == len(set(seen)) == 11
    assert set(seen) == wanted
    assert seen == sorted(seen)  # keyset order


def test_the_last_full_page_has_no_next_cursor(conn: Connection, team: Team) -> None:
    for _ in range(4):
        make_contact(conn, team.id, phone="(202) 555-1234")
    first = eligible(conn, team_id=team.id, limit=2)
    assert first.next_cursor is not None
    second = eligible(conn, team_id=team.id, limit=2, cursor=first.next_cursor)
    assert len(second.data) == 2
    assert second.next_cursor is None


def test_keyset_pages_stay_consistent_while_contacts_change(conn: Connection, team: Team) -> None:
    created = [make_contact(conn, team.id, phone="(202) 555-1234") for _ in range(6)]
    first = eligible(conn, team_id=team.id, limit=3)
    first_ids = [c.id for c in first.data]
    later = [c for c in created if c.id not in first_ids]
    update_contact(conn, team_id=team.id, contact_id=later[0].id, data={"do_not_call": True})
    update_contact(conn, team_id=team.id, contact_id=first_ids[0], data={"notes": "edited"})
    newcomer = make_contact(conn, team.id, phone="(202) 555-1234")
    rest = eligible(conn, team_id=team.id, limit=10, cursor=first.next_cursor)
    rest_ids = [c.id for c in rest.data]
    assert rest_ids == [later[1].id, later[2].id, newcomer.id]
    assert not set(rest_ids) & set(first_ids)


def test_a_cursor_this_service_did_not_issue_is_rejected_naming_cursor(
    conn: Connection, team: Team
) -> None:
    make_contact(conn, team.id, phone="(202) 555-1234")
    for cursor in ("not a cursor!", "AA", "%%%", "YQ==", "Zm9v\x00", "ÿÿÿÿ", "A"):
        with pytest.raises(ValidationFailed) as caught:
            eligible(conn, team_id=team.id, cursor=cursor)
        assert list(caught.value.details) == ["cursor"], cursor


@DB_HYPOTHESIS
@given(cursor=st.text(max_size=40))
def test_any_cursor_text_gives_a_page_or_a_validation_error_never_a_crash(
    conn: Connection, team: Team, cursor: str
) -> None:
    try:
        result = eligible(conn, team_id=team.id, cursor=cursor)
    except ValidationFailed as exc:
        errors = list(exc.details)
    else:
        errors = []
        assert all(c.team_id == team.id for c in result.data)
    assert errors in ([], ["cursor"])


def test_an_eligible_page_serialises_to_the_api_shape(conn: Connection, team: Team) -> None:
    for _ in range(2):
        make_contact(conn, team.id, phone="(202) 555-1234")
    body = json.loads(json.dumps(eligible(conn, team_id=team.id, limit=1).to_dict()))
    assert set(body) == {"data", "next_cursor"}
    assert len(body["data"]) == 1
    assert isinstance(body["next_cursor"], str)


def test_an_eligible_query_has_the_documented_defaults() -> None:
    # The window and zone come from the team's policy unless the query overrides them.
    query = EligibleQuery.parse({"teamId": "t"})
    assert (query.window_start, query.window_end, query.default_timezone) == (None, None, None)
    assert (query.limit, query.at, query.cursor) == (100, None, None)
    assert EligibleQuery.parse({"teamId": "t", "limit": 1000}).limit == 1000


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"at": "2026-01-15T15:00:00"}, "at"),
        ({"at": "yesterday"}, "at"),
        ({"windowStart": "9am"}, "window_start"),
        ({"window_start": "9:00"}, "window_start"),
        ({"windowEnd": "24:00"}, "window_end"),
        ({"defaultTimezone": "Mars/Base"}, "default_timezone"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"team_id": "nul\x00"}, "team_id"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_an_invalid_eligible_parameter_is_rejected_naming_it(
    params: dict[str, Any], field: str
) -> None:
    details = query_errors(EligibleQuery, {"team_id": "t", **params})
    assert list(details) == [field]


def test_a_naive_at_is_rejected_with_a_message_asking_for_an_offset() -> None:
    details = query_errors(EligibleQuery, {"team_id": "t", "at": datetime(2026, 1, 15, 15)})
    assert "UTC offset" in details["at"]


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # whole seconds: no fraction written
        datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC),  # trailing zeros kept: .500000
        datetime(1901, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_a_stream_document_is_what_the_contact_model_writes(
    conn: Connection, team: Team, moment: datetime
) -> None:
    # On PostgreSQL the database writes each row's JSON (contacts/stream_sql.py): its
    # datetimes must read as pydantic writes them, and the rest as the model dumps it.
    contact = make_contact(conn, team.id, phone="(202) 555-1234", notes='a "b" \\ c')
    conn.execute(
        update(contacts)
        .where(contacts.c.id == contact.id)
        .values(created_at=moment, updated_at=moment, last_called_at=moment)
    )
    page = eligible(conn, team_id=team.id)
    stored = get_contact(conn, team_id=team.id, contact_id=contact.id)
    assert [json.loads(text) for text in page.documents] == [stored.model_dump(mode="json")]
    assert page.data == [stored]
    assert json.loads(page.to_json()) == page.to_dict()


def test_a_contact_moved_to_a_new_place_mid_walk_is_judged_by_its_new_clock(
    conn: Connection, team: Team
) -> None:
    # The walk's later pages reuse the places it read first (contacts/query.py); a contact
    # that moves to a place not among them is judged afresh, as the endpoint would.
    created = [
        make_contact(conn, team.id, phone="(202) 555-1234", timezone="America/New_York")
        for _ in range(6)
    ]
    first = eligible(conn, team_id=team.id, limit=2)
    later = [c.id for c in created if c.id not in {c.id for c in first.data}]
    moves = {later[0]: "America/Chicago", later[1]: "Asia/Tokyo"}  # 09:00 and midnight
    for contact_id, zone in moves.items():
        update_contact(conn, team_id=team.id, contact_id=contact_id, data={"timezone": zone})
    rest = eligible(conn, team_id=team.id, limit=10, cursor=first.next_cursor)
    assert [c.id for c in rest.data] == [later[0], *later[2:]]
