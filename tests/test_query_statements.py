"""A list call issues a fixed number of statements, whatever the page size (no N+1)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, event

from contact_sync.accounts.teams import Team, create_team
from contact_sync.contacts.query import ContactQuery, EligibleQuery, list_contacts, list_eligible
from tests.factories import insert_call, make_contact, store_policy


@pytest.fixture
def team(conn: Connection) -> Team:
    """A US team, in the test's transaction."""
    return create_team(conn, name="Acme Solar")


@contextmanager
def counting(conn: Connection) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(conn, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(conn, "before_cursor_execute", record)


def test_a_list_page_takes_one_query_and_one_count_whatever_its_size(
    conn: Connection, team: Team
) -> None:
    for i in range(30):
        make_contact(conn, team.id, phone=f"+1202555{1000 + i}", tags=["a"])
    for limit in (5, 25):
        with counting(conn) as statements:
            page = list_contacts(conn, ContactQuery(team_id=team.id, limit=limit, offset=2))
        assert len(page.data) == limit
        assert page.total == 30
        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 2


def test_an_eligible_page_takes_a_fixed_number_of_queries_whatever_its_size(
    conn: Connection, team: Team
) -> None:
    # The policy, the team's places, the rows, the attempts of those called within the
    # lookback: never one per contact.
    at = datetime(2026, 1, 15, 15, tzinfo=UTC)  # 10:00 in New York, a Thursday
    for i in range(40):
        contact = make_contact(conn, team.id, phone=f"+1202555{2000 + i}")
        ended = at - (timedelta(days=3) if i % 2 else timedelta(hours=5))
        insert_call(conn, team.id, contact.id, ended_at=ended)
    for limit in (10, 30):
        with counting(conn) as statements:
            page = list_eligible(conn, EligibleQuery(team_id=team.id, limit=limit, at=at))
        assert len(page.data) == limit
        assert page.next_cursor is not None
        # 4 on the first page; later pages of a walk whose places need no filter skip that.
        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) <= 4


def test_an_eligible_page_is_one_statement_however_many_rows_are_refused(
    conn: Connection, team: Team
) -> None:
    # Three contacts in four were called an hour ago with no answer (a 4-hour delay):
    # PostgreSQL decides them inside the rows' statement (contacts/stream_sql.py); SQLite
    # reads them in chunks sized to the share refused, so a few more.
    store_policy(conn, team.id, retry_after={"no_answer": "4h"})
    at = datetime(2026, 1, 15, 15, tzinfo=UTC)  # 10:00 in New York, a Thursday
    eligible = []
    for i in range(80):
        contact = make_contact(conn, team.id, phone=f"+1202555{3000 + i}")
        if i % 4:
            insert_call(conn, team.id, contact.id, ended_at=at - timedelta(hours=1))
        else:
            eligible.append(contact.id)
    with counting(conn) as statements:
        page = list_eligible(conn, EligibleQuery(team_id=team.id, limit=15, at=at))
    assert [contact.id for contact in page.data] == sorted(eligible)[:15]
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # The policy, the places ahead, the rows (and on SQLite the chunks' attempts).
    assert len(selects) == 3 if conn.dialect.name == "postgresql" else len(selects) >= 4
