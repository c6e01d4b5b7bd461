"""A first end-to-end pass over the store on both backends."""

from __future__ import annotations

from sqlalchemy import Engine

from contact_sync.query import ContactQuery, list_contacts
from contact_sync.teams import Team
from tests.conftest import make_contact


def test_a_created_contact_is_listed_and_found_by_phone_digits(engine: Engine, team: Team) -> None:
    created = make_contact(engine, team.id, phone="(202) 555-1234", email="Ada@Example.COM")
    assert created.phone == "+12025551234"
    assert created.email == "Ada@example.com"
    with engine.connect() as conn:
        page = list_contacts(conn, ContactQuery(team_id=team.id, search="202-555"))
    assert [c.id for c in page.data] == [created.id]
    assert page.total == 1
