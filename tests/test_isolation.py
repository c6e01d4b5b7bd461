"""Team isolation (issue #6): every way for team A to read or change team B's data fails.

Two teams, A (the attacker, "Acme Solar") and B (the target, "Rival Roofing"), each
with a company, three contacts (one with every field set, patched once and called
once; one do-not-call without a phone; one whose number both teams have), change
history, an applied event and a dead letter. Each test tries one way in, with A's API
key or A's team id and B's ids and values:

- every HTTP route, enumerated from the app, so that a new route without a case here
  fails ``test_every_route_has_isolation_cases``;
- every filter of the contacts list and of the eligible stream (also enumerated from
  the query models);
- every field of a ``call.completed`` event, through a real worker process;
- every CLI path (enumerated from the parser).

Each ends by checking that B's rows in every table are exactly what they were, compared
as the database's own text of every column, and that no row links the two teams.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, Text, cast, delete, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from contact_sync.accounts.teams import Team, create_team, hash_key, issue_api_key
from contact_sync.api import create_app
from contact_sync.calls.apply import apply_payloads
from contact_sync.cli.main import build_parser, main
from contact_sync.clock import utcnow
from contact_sync.contacts.companies import create_company
from contact_sync.contacts.query import ContactQuery, EligibleQuery, list_eligible
from contact_sync.contacts.store import create_contact, update_contact
from contact_sync.db.tables import (
    api_keys,
    calling_policies,
    calling_policy_changes,
    companies,
    contact_history,
    contacts,
    custom_field_definitions,
    dead_letters,
    processed_events,
    teams,
)
from contact_sync.fields import store as field_store
from contact_sync.settings import Settings, get_settings
from tests.brokers import BROKERS, Broker, broker_for
from tests.factories import call_event, contact_row
from tests.test_api import COMPANIES, CONTACTS, ELIGIBLE, Api, assert_error
from tests.workers import start_worker, stop_worker

CONTACT = f"{CONTACTS}/{{contact_id}}"
HISTORY = f"{CONTACTS}/{{contact_id}}/history"
CALLS = f"{CONTACTS}/{{contact_id}}/calls"
ELIGIBILITY = f"{CONTACTS}/{{contact_id}}/eligibility"
LETTERS = "/api/crm/dead-letters"
LETTER = f"{LETTERS}/{{dead_letter_id}}"
REPLAY = f"{LETTER}/replay"
DISCARD = f"{LETTER}/discard"
NO_LETTER = "Dead letter not found"
POLICY = "/api/crm/calling-policy"
POLICY_HISTORY = f"{POLICY}/history"
COMPANY = f"{COMPANIES}/{{company_id}}"
FIELDS = "/api/crm/custom-fields"
FIELD = f"{FIELDS}/{{key}}"
FIELD_SCHEMA = f"{FIELDS}/schema"
TEAM_SETTINGS = "/api/crm/team-settings"
UPSERT = f"{CONTACTS}/upsert"
BATCH_UPSERT = f"{CONTACTS}/batch/upsert"
COMPANY_NOT_FOUND = "Not found"
# The scheduler's stream, at 18:00 UTC on a winter day: 10:00 in Los Angeles (B's
# star), 12:00 in Chicago (A's star), 13:00 in New York (the shared contacts' number).
AT = "2026-11-20T18:00:00Z"
SHARED_PHONE = "+12025550100"  # a number that a contact of each team has
NOT_FOUND = "Contact not found"
FOREIGN_COMPANY = "Company does not belong to this team"

# --------------------------------------------------------------------------- the two teams

PEOPLE: dict[str, dict[str, Any]] = {
    "a": {
        "company": "Acme Co",
        "star": {
            "first_name": "Ada",
            "last_name": "Acme",
            "email": "ada@acme.example",
            "phone": "+13125550111",
            "phone_secondary": "+13125550112",
            "job_title": "Engineer",
            "lead_status": "qualified",
            "source": "website",
            "timezone": "America/Chicago",
            "preferred_contact_method": "phone",
            "notes": "Acme notes",
            "tags": ["acme-tag"],
            "custom_fields": {"acme_key": "mine"},
        },
        "quiet": {
            "first_name": "Al",
            "last_name": "Acme",
            "email": "al@acme.example",
            "do_not_call": True,
            "lead_status": "customer",
        },
    },
    "b": {
        "company": "Rival Co",
        "star": {
            "first_name": "Rhea",
            "last_name": "Rival",
            "email": "rhea@rival.example",
            "phone": "+14155550101",
            "phone_secondary": "+14155550102",
            "job_title": "Owner",
            "lead_status": "vip_rival",
            "source": "referral",
            "timezone": "America/Los_Angeles",
            "preferred_contact_method": "email",
            "notes": "Rival secret notes",
            "tags": ["rival-tag"],
            "custom_fields": {"rival_key": "rival-secret"},
        },
        "quiet": {
            "first_name": "Bo",
            "last_name": "Rival",
            "email": "bo@rival.example",
            "do_not_call": True,
            "lead_status": "churned",
        },
    },
}
SHARED = {"first_name": "Sam", "last_name": "Shared", "phone": SHARED_PHONE}


@dataclass
class Side:
    """One team and what it owns."""

    team: Team
    key: str
    key_id: str
    company_id: str
    star: str
    quiet: str
    shared: str
    applied_event: dict[str, Any]
    letter_id: str
    letter_event: dict[str, Any]

    @property
    def contact_ids(self) -> list[str]:
        return [self.star, self.quiet, self.shared]


def _side(engine: Engine, team: Team, people: dict[str, Any]) -> Side:
    with engine.begin() as conn:
        key = issue_api_key(conn, team_id=team.id)
        company = create_company(conn, team_id=team.id, name=people["company"])
        star = create_contact(
            conn,
            team_id=team.id,
            data={**people["star"], "company_id": company.id},
            api_key_id=key.key_id,
        )
        update_contact(
            conn, team_id=team.id, contact_id=star.id, data={"job_title": "Boss"}, api_key_id=None
        )
        quiet = create_contact(conn, team_id=team.id, data=people["quiet"])
        shared = create_contact(conn, team_id=team.id, data=SHARED)
        applied = call_event(
            team.id,
            contact_id=star.id,
            campaign_id=f"cmp_{team.id}",
            extraction={"custom_fields": {"budget": 1000}, "summary": "said hello"},
        )
        lost = call_event(team.id, contact_id=f"ct_missing_{uuid.uuid4().hex[:8]}")
        # Both teams define "interest" (labelled with their company's name); B also "rival_field".
        interest = {"key": "interest", "type": "select", "options": [{"value": "solar"}]}
        field_store.define(conn, team_id=team.id, data={**interest, "label": people["company"]})
        if people is PEOPLE["b"]:
            field = {"key": "rival_field", "label": "Rival", "type": "text"}
            field_store.define(conn, team_id=team.id, data=field)
        outcomes = apply_payloads(conn, [applied, lost])
    assert [o.outcome for o in outcomes] == ["applied", "dead_lettered"], outcomes
    with engine.connect() as conn:
        letter_id = conn.execute(
            select(dead_letters.c.id).where(dead_letters.c.event_id == lost["event_id"])
        ).scalar_one()
    return Side(
        team,
        key.api_key,
        key.key_id,
        company.id,
        star.id,
        quiet.id,
        shared.id,
        applied,
        letter_id,
        lost,
    )


# When a key was last used changes with every use of the key (at most once a minute): it
# is not data a request may or may not change. ``test_requests_of_a_never_mark_b_key_used``
# checks that A's requests never set B's.
NOT_DATA = {api_keys.c.last_used_at}


def _text_rows(conn: Connection, table: Any, where: ColumnElement[bool]) -> list[tuple[Any, ...]]:
    """Every column of the matching rows as the database itself prints it."""
    columns = [
        cast(column, Text).label(column.name) for column in table.c if column not in NOT_DATA
    ]
    order = [cast(column, Text) for column in table.primary_key.columns]
    return [tuple(row) for row in conn.execute(select(*columns).where(where).order_by(*order))]


def snapshot(engine: Engine, side: Side) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table that belongs to, or names, the team or its contacts."""
    team_id = side.team.id
    ids = side.contact_ids
    where = {
        teams: teams.c.id == team_id,
        api_keys: api_keys.c.team_id == team_id,
        companies: companies.c.team_id == team_id,
        contacts: or_(contacts.c.team_id == team_id, contacts.c.id.in_(ids)),
        contact_history: or_(
            contact_history.c.team_id == team_id, contact_history.c.contact_id.in_(ids)
        ),
        # The inbox is keyed by team (README): another team's row with one of this
        # team's event ids is that team's own event.
        processed_events: or_(
            processed_events.c.team_id == team_id, processed_events.c.contact_id.in_(ids)
        ),
        dead_letters: or_(dead_letters.c.team_id == team_id, dead_letters.c.id == side.letter_id),
        calling_policies: calling_policies.c.team_id == team_id,
        calling_policy_changes: calling_policy_changes.c.team_id == team_id,
        custom_field_definitions: custom_field_definitions.c.team_id == team_id,
    }
    with engine.connect() as conn:
        return {table.name: _text_rows(conn, table, test) for table, test in where.items()}


def assert_no_cross_team_links(engine: Engine) -> None:
    """No row of one team points at a row of another."""
    with engine.connect() as conn:
        assert not conn.execute(
            select(contacts.c.id)
            .join(companies, contacts.c.company_id == companies.c.id)
            .where(companies.c.team_id != contacts.c.team_id)
        ).all(), "a contact belongs to another team's company"
        assert not conn.execute(
            select(contact_history.c.id)
            .join(contacts, contact_history.c.contact_id == contacts.c.id)
            .where(contact_history.c.team_id != contacts.c.team_id)
        ).all(), "a history record is filed under another team"
        assert not conn.execute(
            select(processed_events.c.event_id)
            .join(contacts, processed_events.c.contact_id == contacts.c.id)
            .where(processed_events.c.team_id != contacts.c.team_id)
        ).all(), "an inbox row names another team's contact"


@dataclass
class World:
    """Team A (the attacker), team B (the target) and B's rows as they were."""

    engine: Engine
    a: Side
    b: Side
    values: dict[str, str] = field(default_factory=dict)
    before: dict[str, dict[str, list[tuple[Any, ...]]]] = field(default_factory=dict)

    def fill(self, template: Any) -> Any:
        """``template`` with every ``<name>`` string replaced by the world's value."""
        if isinstance(template, str) and template.startswith("<") and template.endswith(">"):
            return self.values[template[1:-1]]
        if isinstance(template, dict):
            return {key: self.fill(value) for key, value in template.items()}
        if isinstance(template, list):
            return [self.fill(value) for value in template]
        return template

    def secrets(self) -> set[str]:
        """What A must never read: B's ids and the values only B's rows hold."""
        b = self.b
        star = PEOPLE["b"]["star"]
        return {
            b.star,
            b.quiet,
            b.shared,
            b.company_id,
            b.letter_id,
            b.key,
            b.key_id,
            b.applied_event["event_id"],
            b.applied_event["call_id"],
            b.letter_event["event_id"],
            PEOPLE["b"]["company"],
            "Rival",
            "rival.example",
            star["phone"],
            star["phone"][2:],
            star["phone_secondary"],
            star["phone_secondary"][2:],
            star["notes"],
            star["lead_status"],
            "rival_key",
            "rival-secret",
            "rival-tag",
        }

    def assert_untouched(self, *names: str) -> None:
        """The sides named (default B) are exactly as they were; no cross-team links."""
        for name in names or ("b",):
            assert snapshot(self.engine, getattr(self, name)) == self.before[name], name
        assert_no_cross_team_links(self.engine)


def build_world(engine: Engine, team: Team, other_team: Team) -> World:
    a = _side(engine, team, PEOPLE["a"])
    b = _side(engine, other_team, PEOPLE["b"])
    with engine.connect() as conn:
        b_cursor = list_eligible(
            conn, EligibleQuery.parse({"team_id": b.team.id, "limit": 1, "at": AT})
        )
    assert b_cursor.next_cursor is not None
    values: dict[str, str] = {}
    for name, side in (("a", a), ("b", b)):
        values |= {
            f"{name}.team": side.team.id,
            f"{name}.company": side.company_id,
            f"{name}.star": side.star,
            f"{name}.quiet": side.quiet,
            f"{name}.shared": side.shared,
            f"{name}.letter": side.letter_id,
            f"{name}.star.phone": PEOPLE[name]["star"]["phone"],
            f"{name}.star.phone_secondary": PEOPLE[name]["star"]["phone_secondary"],
            f"{name}.star.email": PEOPLE[name]["star"]["email"],
        }
    values["b.cursor"] = b_cursor.next_cursor
    world = World(engine, a, b, values)
    world.before = {"a": snapshot(engine, a), "b": snapshot(engine, b)}
    return world


@pytest.fixture
def world(engine: Engine, team: Team, other_team: Team) -> World:
    """The two teams, on PostgreSQL and on SQLite."""
    return build_world(engine, team, other_team)


@pytest.fixture
def http(world: World, redis_url: str) -> Iterator[Api]:
    """The real app; ``key`` is A's, ``other_key`` is B's."""
    url = world.engine.url.render_as_string(hide_password=False)
    settings = Settings(database_url=url, broker_url=redis_url, api_rate_limit_per_second=0)
    app = create_app(settings, engine=world.engine)
    with TestClient(app) as client:
        yield Api(
            client,
            world.a.team,
            world.a.key,
            world.a.key_id,
            world.b.team,
            world.b.key,
            world.engine,
        )


def assert_no_leak(world: World, request_text: str, response: httpx.Response) -> None:
    """Nothing of B's appears in the answer unless A itself sent it."""
    for secret in world.secrets():
        if secret not in request_text:
            assert secret not in response.text, (secret, response.text)


# --------------------------------------------------------------------------- every HTTP route


@dataclass(frozen=True)
class Probe:
    """One request with A's key and the one answer it may get."""

    name: str
    method: str
    route: str  # the path template exactly as the app declares it
    status: int
    path: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None


NEW = {"firstName": "Eve", "lastName": "Attacker"}
B_CONTACTS = ("b.star", "b.quiet", "b.shared")
# B's other ids, where a contact id is expected.
NOT_CONTACTS = ("b.company", "b.team", "b.letter")

PROBES: list[Probe] = [
    # POST /contacts: the team and the company come from the body.
    Probe("create in B by teamId", "POST", CONTACTS, 403, body={**NEW, "teamId": "<b.team>"}),
    Probe("create in B by team_id", "POST", CONTACTS, 403, body={**NEW, "team_id": "<b.team>"}),
    Probe(
        "create with B's company",
        "POST",
        CONTACTS,
        403,
        body={**NEW, "companyId": "<b.company>"},
        error=FOREIGN_COMPANY,
    ),
    Probe(
        "create with B's company_id",
        "POST",
        CONTACTS,
        403,
        body={**NEW, "company_id": "<b.company>"},
        error=FOREIGN_COMPANY,
    ),
    Probe(
        "create in A with B's company",
        "POST",
        CONTACTS,
        403,
        body={**NEW, "teamId": "<a.team>", "companyId": "<b.company>"},
        error=FOREIGN_COMPANY,
    ),
    Probe(
        "create in B with B's company",
        "POST",
        CONTACTS,
        403,
        body={**NEW, "teamId": "<b.team>", "companyId": "<b.company>"},
    ),
    Probe("create with B's contact id", "POST", CONTACTS, 422, body={**NEW, "id": "<b.star>"}),
    Probe(
        "create in B by body, A by query",
        "POST",
        CONTACTS,
        422,
        params={"teamId": "<a.team>"},
        body={**NEW, "teamId": "<b.team>"},
    ),
    # Allowed, and only in A: B's values are just values.
    Probe(
        "create in A with B's phone and email",
        "POST",
        CONTACTS,
        201,
        body={
            **NEW,
            "phone": "<b.star.phone>",
            "phoneSecondary": "<b.star.phone_secondary>",
            "email": "<b.star.email>",
        },
    ),
    Probe(
        "create with B's team in the query only",
        "POST",
        CONTACTS,
        422,
        params={"teamId": "<b.team>", "companyId": "<b.company>"},
        body=NEW,
    ),
    # GET /contacts: the list (every filter is in test_list_filters_*).
    Probe("list B by teamId", "GET", CONTACTS, 403, params={"teamId": "<b.team>"}),
    Probe("list B by team_id", "GET", CONTACTS, 403, params={"team_id": "<b.team>"}),
    Probe(
        "list B with B's company",
        "GET",
        CONTACTS,
        403,
        params={"teamId": "<b.team>", "companyId": "<b.company>"},
    ),
    Probe("list B's company as a team", "GET", CONTACTS, 403, params={"teamId": "<b.company>"}),
    Probe(
        "list B by teamId, A by team_id",
        "GET",
        CONTACTS,
        422,
        params={"teamId": "<b.team>", "team_id": "<a.team>"},
    ),
    # Both spellings at once is one parameter given twice: refused, whichever team.
    Probe(
        "list A by teamId, B by team_id",
        "GET",
        CONTACTS,
        422,
        params={"teamId": "<a.team>", "team_id": "<b.team>"},
    ),
    Probe("list with B's company", "GET", CONTACTS, 200, params={"companyId": "<b.company>"}),
    # GET /contacts/eligible.
    Probe("eligible of B by teamId", "GET", ELIGIBLE, 403, params={"teamId": "<b.team>"}),
    Probe("eligible of B by team_id", "GET", ELIGIBLE, 403, params={"team_id": "<b.team>"}),
    Probe(
        "eligible of B with B's cursor",
        "GET",
        ELIGIBLE,
        403,
        params={"teamId": "<b.team>", "cursor": "<b.cursor>"},
    ),
    Probe("eligible with B's cursor", "GET", ELIGIBLE, 200, params={"cursor": "<b.cursor>"}),
    # GET /contacts/{id}.
    *(
        Probe(f"get {ref}", "GET", CONTACT, 404, path={"contact_id": f"<{ref}>"}, error=NOT_FOUND)
        for ref in (*B_CONTACTS, *NOT_CONTACTS)
    ),
    Probe(
        "get B's contact naming B's team",
        "GET",
        CONTACT,
        422,
        path={"contact_id": "<b.star>"},
        params={"teamId": "<b.team>", "team_id": "<b.team>"},
    ),
    Probe(
        "get A's contact naming B's team",
        "GET",
        CONTACT,
        422,
        path={"contact_id": "<a.star>"},
        params={"teamId": "<b.team>"},
    ),
    # PATCH /contacts/{id}: B's contacts, with every kind of body and version.
    *(
        Probe(
            f"patch {ref} {label}",
            "PATCH",
            CONTACT,
            404,
            path={"contact_id": f"<{ref}>"},
            body=body,
            headers=headers,
            error=NOT_FOUND,
        )
        for ref in B_CONTACTS
        for label, body, headers in (
            ("name", {"firstName": "Mine"}, {}),
            ("no-op", {}, {}),
            ("to A's company", {"companyId": "<a.company>"}, {}),
            ("to B's company", {"companyId": "<b.company>"}, {}),
            ("clearing", {"phone": None, "email": None, "customFields": {"rival_key": None}}, {}),
            ("do-not-call off", {"doNotCall": False}, {}),
            ("with If-Match", {"notes": "x"}, {"If-Match": '"2"'}),
            ("with If-Match *", {"notes": "x"}, {"If-Match": "*"}),
            ("with version", {"notes": "x", "version": 2}, {}),
        )
    ),
    *(
        Probe(
            f"patch {ref}",
            "PATCH",
            CONTACT,
            404,
            path={"contact_id": f"<{ref}>"},
            body={"notes": "x"},
            error=NOT_FOUND,
        )
        for ref in NOT_CONTACTS
    ),
    # PATCH of A's own contact towards B.
    Probe(
        "patch A's contact to B's company",
        "PATCH",
        CONTACT,
        403,
        path={"contact_id": "<a.star>"},
        body={"companyId": "<b.company>"},
        error=FOREIGN_COMPANY,
    ),
    Probe(
        "patch A's contact to B's company_id",
        "PATCH",
        CONTACT,
        403,
        path={"contact_id": "<a.star>"},
        body={"company_id": "<b.company>", "notes": "moved"},
        error=FOREIGN_COMPANY,
    ),
    # team_id is immutable: not a field of a patch at all (422 naming it, own team too).
    Probe(
        "patch A's contact into B",
        "PATCH",
        CONTACT,
        422,
        path={"contact_id": "<a.star>"},
        body={"teamId": "<b.team>"},
    ),
    Probe(
        "patch A's contact into B by team_id",
        "PATCH",
        CONTACT,
        422,
        path={"contact_id": "<a.star>"},
        body={"team_id": "<b.team>"},
    ),
    Probe(
        "patch A's contact to B's id",
        "PATCH",
        CONTACT,
        422,
        path={"contact_id": "<a.star>"},
        body={"id": "<b.star>"},
    ),
    Probe(
        "patch A's contact with B's phone and email",
        "PATCH",
        CONTACT,
        200,
        path={"contact_id": "<a.shared>"},
        body={"phoneSecondary": "<b.star.phone>", "email": "<b.star.email>"},
    ),
    # DELETE /contacts/{id}.
    *(
        Probe(f"delete {ref}", "DELETE", CONTACT, 404, path={"contact_id": f"<{ref}>"})
        for ref in (*B_CONTACTS, *NOT_CONTACTS)
    ),
    Probe(
        "delete B's contact naming B's team",
        "DELETE",
        CONTACT,
        422,
        path={"contact_id": "<b.star>"},
        params={"teamId": "<b.team>"},
    ),
    # GET /contacts/{id}/history.
    *(
        Probe(
            f"history of {ref}",
            "GET",
            HISTORY,
            404,
            path={"contact_id": f"<{ref}>"},
            error=NOT_FOUND,
        )
        for ref in (*B_CONTACTS, *NOT_CONTACTS)
    ),
    Probe(
        "history of B's contact naming B's team",
        "GET",
        HISTORY,
        422,
        path={"contact_id": "<b.star>"},
        params={"teamId": "<b.team>"},
    ),
    Probe("history of A's contact", "GET", HISTORY, 200, path={"contact_id": "<a.star>"}),
    Probe(
        "a page of the history of B's contact",
        "GET",
        HISTORY,
        404,
        path={"contact_id": "<b.star>"},
        params={"limit": "1", "offset": "1"},
        error=NOT_FOUND,
    ),
    Probe(
        "a page of the history of A's contact",
        "GET",
        HISTORY,
        200,
        path={"contact_id": "<a.star>"},
        params={"limit": "1", "offset": "1"},
    ),
    # GET /contacts/{id}/calls (the calls ledger, docs/design.md §11).
    *(
        Probe(
            f"calls of {ref}",
            "GET",
            CALLS,
            404,
            path={"contact_id": f"<{ref}>"},
            error=NOT_FOUND,
        )
        for ref in (*B_CONTACTS, *NOT_CONTACTS)
    ),
    Probe(
        "calls of B's contact naming B's team",
        "GET",
        CALLS,
        422,
        path={"contact_id": "<b.star>"},
        params={"teamId": "<b.team>"},
    ),
    Probe("calls of A's contact", "GET", CALLS, 200, path={"contact_id": "<a.star>"}),
    Probe(
        "a page of the calls of B's contact",
        "GET",
        CALLS,
        404,
        path={"contact_id": "<b.star>"},
        params={"limit": "1", "offset": "0"},
        error=NOT_FOUND,
    ),
    # GET /contacts/{id}/eligibility (docs/design.md §12).
    *(
        Probe(
            f"eligibility of {ref}",
            "GET",
            ELIGIBILITY,
            404,
            path={"contact_id": f"<{ref}>"},
            params={"at": AT},
            error=NOT_FOUND,
        )
        for ref in (*B_CONTACTS, *NOT_CONTACTS)
    ),
    Probe(
        "eligibility of B's contact naming B's team",
        "GET",
        ELIGIBILITY,
        422,
        path={"contact_id": "<b.star>"},
        params={"teamId": "<b.team>"},
    ),
    Probe(
        "eligibility of A's contact",
        "GET",
        ELIGIBILITY,
        200,
        path={"contact_id": "<a.star>"},
        params={"at": AT},
    ),
    # POST /companies.
    Probe(
        "company in B by teamId",
        "POST",
        COMPANIES,
        403,
        body={"name": "Mine", "teamId": "<b.team>"},
    ),
    Probe(
        "company in B by team_id",
        "POST",
        COMPANIES,
        403,
        body={"name": "Mine", "team_id": "<b.team>"},
    ),
    Probe(
        "company in B's company",
        "POST",
        COMPANIES,
        403,
        body={"name": "Mine", "teamId": "<b.company>"},
    ),
    Probe(
        "company with B's company id",
        "POST",
        COMPANIES,
        422,
        body={"name": "Mine", "id": "<b.company>"},
    ),
    # GET /companies.
    Probe("companies of B by teamId", "GET", COMPANIES, 403, params={"teamId": "<b.team>"}),
    Probe("companies of B by team_id", "GET", COMPANIES, 403, params={"team_id": "<b.team>"}),
    Probe(
        "companies of A by B's company", "GET", COMPANIES, 422, params={"companyId": "<b.company>"}
    ),
    Probe("companies of A", "GET", COMPANIES, 200, params={"search": "Co", "limit": "500"}),
    Probe(
        "companies of B searched",
        "GET",
        COMPANIES,
        403,
        params={"teamId": "<b.team>", "search": "Rival"},
    ),
    # GET, PATCH and DELETE /companies/{id}: B's company, B's other ids, A's own.
    *(
        Probe(
            f"{method.lower()} company {ref}",
            method,
            COMPANY,
            404,
            path={"company_id": f"<{ref}>"},
            body=body,
            error=COMPANY_NOT_FOUND,
        )
        for method, body in (("GET", None), ("PATCH", {"name": "Mine"}), ("DELETE", None))
        for ref in ("b.company", "b.team", "b.star")
    ),
    Probe(
        "get B's company naming B's team",
        "GET",
        COMPANY,
        422,
        path={"company_id": "<b.company>"},
        params={"teamId": "<b.team>"},
    ),
    Probe("get A's company", "GET", COMPANY, 200, path={"company_id": "<a.company>"}),
    Probe(
        "rename A's company into B",
        "PATCH",
        COMPANY,
        422,
        path={"company_id": "<a.company>"},
        body={"name": "Moved", "teamId": "<b.team>"},
    ),
    Probe(
        "rename A's company to B's id",
        "PATCH",
        COMPANY,
        422,
        path={"company_id": "<a.company>"},
        body={"name": "Moved", "id": "<b.company>"},
    ),
    Probe(
        "rename A's company",
        "PATCH",
        COMPANY,
        200,
        path={"company_id": "<a.company>"},
        body={"name": "Acme Renamed"},
    ),
    Probe(
        "delete A's company while its contact belongs to it",
        "DELETE",
        COMPANY,
        409,
        path={"company_id": "<a.company>"},
    ),
    # GET /dead-letters: the key's team's only.
    Probe("dead letters of B by teamId", "GET", LETTERS, 403, params={"teamId": "<b.team>"}),
    Probe("dead letters of B by team_id", "GET", LETTERS, 403, params={"team_id": "<b.team>"}),
    Probe(
        "dead letters of B, open, by reason",
        "GET",
        LETTERS,
        403,
        params={"teamId": "<b.team>", "reason": "contact_not_found", "open": "true"},
    ),
    Probe("dead letters by B's letter id", "GET", LETTERS, 422, params={"id": "<b.letter>"}),
    Probe(
        "dead letters with B's reason", "GET", LETTERS, 200, params={"reason": "contact_not_found"}
    ),
    # GET /dead-letters/{id}, replay and discard: B's letter and B's other ids.
    *(
        Probe(
            f"{label} {ref}",
            method,
            route,
            404,
            path={"dead_letter_id": f"<{ref}>"},
            error=NO_LETTER,
        )
        for label, method, route in (
            ("get letter", "GET", LETTER),
            ("replay", "POST", REPLAY),
            ("discard", "POST", DISCARD),
        )
        for ref in ("b.letter", "b.star", "b.team", "b.company")
    ),
    *(
        Probe(
            f"{label} B's letter naming B's team",
            method,
            route,
            403,
            path={"dead_letter_id": "<b.letter>"},
            params={"teamId": "<b.team>"},
        )
        for label, method, route in (
            ("get", "GET", LETTER),
            ("replay", "POST", REPLAY),
            ("discard", "POST", DISCARD),
        )
    ),
    Probe("get A's letter", "GET", LETTER, 200, path={"dead_letter_id": "<a.letter>"}),
    Probe("replay A's letter", "POST", REPLAY, 200, path={"dead_letter_id": "<a.letter>"}),
    Probe("discard A's letter", "POST", DISCARD, 200, path={"dead_letter_id": "<a.letter>"}),
    # The calling policy: the key's team only; B's team named anywhere is 403.
    Probe("get B's policy", "GET", POLICY, 403, params={"teamId": "<b.team>"}),
    Probe("B's policy history", "GET", POLICY_HISTORY, 403, params={"team_id": "<b.team>"}),
    Probe(
        "replace B's policy by query",
        "PUT",
        POLICY,
        403,
        params={"teamId": "<b.team>"},
        body={"maxAttemptsPerDay": 1},
    ),
    *(
        Probe(
            f"replace B's policy by body {name}",
            "PUT",
            POLICY,
            403,
            body={name: "<b.team>", "maxAttemptsPerDay": 1},
        )
        for name in ("teamId", "team_id")
    ),
    Probe("get A's policy", "GET", POLICY, 200),
    Probe("A's policy history", "GET", POLICY_HISTORY, 200),
    Probe("replace A's policy", "PUT", POLICY, 200, body={"maxAttemptsPerDay": 2}),
    # Custom fields (docs/design.md §13): the key's team only; B's key is 404 as no key is.
    Probe(
        "define in B by teamId",
        "POST",
        FIELDS,
        422,
        body={"key": "x", "label": "X", "type": "text", "teamId": "<b.team>"},
    ),
    Probe(
        "define A's key again",
        "POST",
        FIELDS,
        409,
        body={"key": "interest", "label": "I", "type": "text"},
    ),
    Probe(
        "define in A",
        "POST",
        FIELDS,
        201,
        body={"key": "rival_field", "label": "Mine", "type": "number"},
    ),
    Probe("fields of B by teamId", "GET", FIELDS, 422, params={"teamId": "<b.team>"}),
    Probe("fields of A", "GET", FIELDS, 200),
    Probe("schema of B by teamId", "GET", FIELD_SCHEMA, 422, params={"teamId": "<b.team>"}),
    Probe("schema of A", "GET", FIELD_SCHEMA, 200),
    *(
        Probe(f"{label} B's field", method, FIELD, 404, path={"key": "rival_field"}, body=body)
        for label, method, body in (
            ("get", "GET", None),
            ("patch", "PATCH", {"label": "Mine"}),
            ("delete", "DELETE", None),
        )
    ),
    Probe("get A's field", "GET", FIELD, 200, path={"key": "interest"}),
    Probe("patch A's field", "PATCH", FIELD, 200, path={"key": "interest"}, body={"label": "A"}),
    Probe("settings of B by teamId", "GET", TEAM_SETTINGS, 422, params={"teamId": "<b.team>"}),
    Probe("settings of A", "GET", TEAM_SETTINGS, 200),
    Probe(
        "set settings of B by teamId",
        "PUT",
        TEAM_SETTINGS,
        422,
        body={"teamId": "<b.team>", "minConfidence": 0.9},
    ),
    Probe("set settings of A", "PUT", TEAM_SETTINGS, 200, body={"minConfidence": 0.7}),
    # Upsert (docs/design.md §14): matches within the key's team only.
    Probe("upsert in B by teamId", "POST", UPSERT, 403, body={**NEW, "teamId": "<b.team>"}),
    Probe("upsert in B by team_id", "POST", UPSERT, 403, body={**NEW, "team_id": "<b.team>"}),
    Probe(
        "upsert with B's company",
        "POST",
        UPSERT,
        403,
        body={**NEW, "companyId": "<b.company>"},
        error=FOREIGN_COMPANY,
    ),
    Probe("upsert with B's contact id", "POST", UPSERT, 422, body={**NEW, "id": "<b.star>"}),
    Probe(
        "upsert with B's phone and email creates in A",
        "POST",
        UPSERT,
        201,
        body={**NEW, "phone": "<b.star.phone>", "email": "<b.star.email>"},
    ),
    Probe(
        "upsert with the number both teams have updates A's contact",
        "POST",
        UPSERT,
        200,
        body={**NEW, "phone": SHARED_PHONE, "matchOn": ["phone"]},
    ),
    Probe(
        "batch upsert in B by teamId",
        "POST",
        BATCH_UPSERT,
        422,
        body={"teamId": "<b.team>", "items": [NEW]},
    ),
    Probe(
        "batch upsert of items naming B's team and company, and the shared number",
        "POST",
        BATCH_UPSERT,
        200,
        body={
            "items": [
                {**NEW, "teamId": "<b.team>"},
                {**NEW, "team_id": "<b.team>"},
                {**NEW, "companyId": "<b.company>"},
                {**NEW, "phone": SHARED_PHONE, "jobTitle": "Mine"},
            ],
            "matchOn": ["phone"],
        },
    ),
]

# Routes anyone may call: no key, and nothing of any team in them.
PUBLIC_ROUTES = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/redoc"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),  # counts by route and status, open dead letters by reason
}


def app_routes() -> set[tuple[str, str]]:
    """Every (method, path) the app serves (HEAD only rides along with GET).

    FastAPI 0.165 keeps an included router as one lazy entry of ``app.routes``;
    ``iter_route_contexts`` flattens it (older versions list every route already).
    """
    app = create_app(Settings(database_url="sqlite://"))
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    found = set()
    for route in flatten(app.routes) if flatten else app.routes:
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                found.add((method, str(getattr(route, "path", ""))))
    return found


def api_routes() -> list[tuple[str, str]]:
    """The (method, path) of every route that needs a key."""
    return sorted(route for route in app_routes() if route[1].startswith("/api/"))


class Cases:
    """Runs every row of a table in one test (one world for all) and reports every row
    that fails, by name, rather than stopping at the first."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.ran = 0

    @contextmanager
    def case(self, name: str) -> Iterator[None]:
        self.ran += 1
        try:
            yield
        except AssertionError as exc:
            self.failed.append(f"[{name}] {exc}")

    def done(self) -> None:
        assert self.ran
        assert not self.failed, f"{len(self.failed)} of {self.ran} cases failed:\n\n" + (
            "\n\n".join(self.failed)
        )


def test_every_route_has_isolation_cases() -> None:
    """A route added later without a case here (or a public route not vetted) fails."""
    covered = {(p.method, p.route) for p in PROBES}
    assert app_routes() == covered | PUBLIC_ROUTES
    assert not covered & PUBLIC_ROUTES
    # Each keyed route has at least one case that must be refused.
    refused = {(p.method, p.route) for p in PROBES if p.status >= 400}
    assert refused == covered
    assert len({p.name for p in PROBES}) == len(PROBES)


def send(http: Api, world: World, probe: Probe) -> httpx.Response:
    url = probe.route.format(**world.fill(probe.path))
    headers = {"Authorization": f"Bearer {http.key}", **probe.headers}
    content = None
    if probe.body is not None:
        content = json.dumps(world.fill(probe.body))
        headers["Content-Type"] = "application/json"
    response: httpx.Response = http.client.request(
        probe.method, url, params=world.fill(probe.params), content=content, headers=headers
    )
    return response


def _check_probe(world: World, http: Api, probe: Probe) -> None:
    response = send(http, world, probe)
    request = json.dumps([world.fill(probe.path), world.fill(probe.params), world.fill(probe.body)])
    assert_no_leak(world, request, response)
    if probe.status >= 400:
        assert_error(response, probe.status, probe.error)
        world.assert_untouched("a", "b")  # a refusal writes nothing, not even in A
        return
    assert response.status_code == probe.status, response.text
    body = response.json()
    for row in body.get("data", [body]):
        if "team_id" in row:  # a contact or a company, never of B
            assert row["team_id"] == world.a.team.id, row
        if row.get("contact_id") is not None:  # a history record, a replay that applied
            assert row["contact_id"] in world.a.contact_ids, row
        assert row.get("id") not in world.secrets(), row
    world.assert_untouched()


@pytest.mark.parametrize("route", api_routes(), ids=" ".join)
def test_requests_of_a_with_b_ids_are_refused_or_stay_in_a(
    world: World, http: Api, route: tuple[str, str]
) -> None:
    """Every case of ``PROBES`` for the route, on one world."""
    cases = Cases()
    for probe in PROBES:
        if (probe.method, probe.route) == route:
            with cases.case(probe.name):
                _check_probe(world, http, probe)
            if probe.status < 400:  # allowed: it wrote in A
                world.before["a"] = snapshot(world.engine, world.a)
    cases.done()


def _everything_of_b(world: World, path: str) -> tuple[str, dict[str, str], Any]:
    """The URL with B's contact in every path parameter, B's ids in every query
    parameter and body field that takes an id."""
    names = re.findall(r"{(\w+)}", path)
    url = path.format(
        **{name: world.b.letter_id if name == "dead_letter_id" else world.b.star for name in names}
    )
    ids = {
        "teamId": world.b.team.id,
        "team_id": world.b.team.id,
        "companyId": world.b.company_id,
        "company_id": world.b.company_id,
        "contactId": world.b.star,
        "contact_id": world.b.star,
        "id": world.b.star,
    }
    params = {**ids, "cursor": world.values["b.cursor"]}
    body = {**ids, **NEW, "name": "Mine"}
    return url, params, body


def test_any_route_given_only_b_ids_is_refused(world: World, http: Api) -> None:
    """Generated from the app: a new route is tried before anyone writes its case."""
    cases = Cases()
    for method, path in api_routes():
        with cases.case(f"{method} {path}"):
            url, params, body = _everything_of_b(world, path)
            response = http.client.request(
                method, url, params=params, json=body, headers=http.json_headers()
            )
            assert response.status_code in (403, 404, 422), response.text
            assert_no_leak(world, "", response)
            world.assert_untouched("a", "b")
    cases.done()


def test_b_contact_ids_answer_exactly_as_unknown_ids_do(world: World, http: Api) -> None:
    """No oracle: A cannot tell B's contact from an id that does not exist."""
    unknown = str(uuid.uuid4())
    cases = Cases()
    for method, path in api_routes():
        if "{contact_id}" not in path:
            continue
        for body in (None, {"firstName": "Mine"}, {"companyId": world.a.company_id}, {}):
            with cases.case(f"{method} {path} {body}"):
                answers = []
                for contact_id in (world.b.star, unknown):
                    response = http.client.request(
                        method,
                        path.format(contact_id=contact_id),
                        content=None if body is None else json.dumps(body),
                        headers=http.json_headers(),
                    )
                    answers.append((response.status_code, response.text))
                assert answers[0] == answers[1]
                assert answers[0][0] in (404, 422)
    cases.done()
    world.assert_untouched("a", "b")


def test_b_letter_ids_and_letters_of_no_team_answer_exactly_as_unknown_ids_do(
    world: World, http: Api
) -> None:
    """No oracle for dead letters either: B's letter, a letter whose team could not be read
    (the operators'), and an id that does not exist get the same answer on every route."""
    with world.engine.begin() as conn:
        [parked] = apply_payloads(conn, [{"event_id": "evt_of_no_team"}])
        nobodys = conn.execute(
            select(dead_letters.c.id).where(dead_letters.c.event_id == "evt_of_no_team")
        ).scalar_one()
    assert (parked.outcome, parked.team_id) == ("dead_lettered", None)
    world.before["a"] = snapshot(world.engine, world.a)
    unknown = str(uuid.uuid4())
    cases = Cases()
    for method, path in api_routes():
        if "{dead_letter_id}" not in path:
            continue
        with cases.case(f"{method} {path}"):
            answers = set()
            for letter_id in (world.b.letter_id, nobodys, unknown):
                response = http.client.request(
                    method, path.format(dead_letter_id=letter_id), headers=http.json_headers()
                )
                answers.add((response.status_code, response.text))
            assert answers == {(404, json.dumps({"error": NO_LETTER}, separators=(",", ":")))}
    cases.done()
    world.assert_untouched("a", "b")
    with world.engine.connect() as conn:
        letter = conn.execute(select(dead_letters).where(dead_letters.c.id == nobodys)).one()
    assert (letter.attempts, letter.replayed_at, letter.discarded_at) == (1, None, None)


def test_requests_of_a_never_mark_b_key_used(world: World, http: Api) -> None:
    """``last_used_at`` is left out of the snapshots: it is checked here instead."""
    for method, path in api_routes():
        url, params, body = _everything_of_b(world, path)
        http.client.request(method, url, params=params, json=body, headers=http.json_headers())
    with world.engine.connect() as conn:
        rows = conn.execute(select(api_keys.c.team_id, api_keys.c.last_used_at))
        used = {row.team_id: row.last_used_at for row in rows}
    assert used[world.a.team.id] is not None
    assert used[world.b.team.id] is None


NEAR_MISSES: dict[str, Callable[[str], str]] = {
    "upper case": str.upper,
    "leading space": lambda s: f" {s}",
    "trailing space": lambda s: f"{s} ",
    "LIKE wildcard": lambda s: s[:-1] + "%25",
    "LIKE one character": lambda s: s[:-1] + "_",
    "prefix": lambda s: s[:8],
    "with a slash": lambda s: f"{s}/",
}


def test_near_misses_of_b_contact_ids_are_404(world: World, http: Api) -> None:
    cases = Cases()
    for ref in B_CONTACTS:
        for name, variant in NEAR_MISSES.items():
            with cases.case(f"{ref} {name}"):
                contact_id = variant(world.values[ref])
                for url in (f"{CONTACTS}/{contact_id}", f"{CONTACTS}/{contact_id}/history"):
                    assert http.get(url).status_code == 404
                assert http.patch(contact_id, {"notes": "x"}).status_code == 404
                assert http.delete(contact_id).status_code == 404
    cases.done()
    world.assert_untouched("a", "b")


def test_public_routes_hold_nothing_of_any_team(world: World, http: Api) -> None:
    cases = Cases()
    for method, path in sorted(PUBLIC_ROUTES):
        with cases.case(f"{method} {path}"):
            response = http.client.request(method, path)
            assert response.status_code == 200, response.text
            assert_no_leak(world, "", response)
            for own in (world.a.team.id, world.a.star, world.a.company_id):
                assert own not in response.text
    cases.done()


# --------------------------------------------------------------------------- keys


def _bad_keys(world: World) -> dict[str, str | None]:
    return {
        "none": None,
        "unknown": "cs_" + uuid.uuid4().hex,
        "B's key hash": hash_key(world.b.key),
        "A's key id": world.a.key_id,
        "B's team id": world.b.team.id,
        "A's key and B's key": f"{world.a.key}{world.b.key}",
        "A's key, one character short": world.a.key[:-1],
    }


def _probe_every_route(world: World, http: Api, authorization: str | None) -> None:
    for method, path in api_routes():
        url = path.format(
            contact_id=world.b.star,
            dead_letter_id=world.b.letter_id,
            company_id=world.b.company_id,
            key="rival_field",
        )
        headers = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        body = json.dumps({**NEW, "name": "Mine"}) if method in ("POST", "PATCH") else None
        response = http.client.request(method, url, content=body, headers=headers)
        assert_error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        assert_no_leak(world, "", response)


def test_a_key_that_is_not_a_current_key_is_401_on_every_route(world: World, http: Api) -> None:
    with world.engine.begin() as conn:
        revoked = issue_api_key(conn, team_id=world.b.team.id)
        conn.execute(
            update(api_keys).where(api_keys.c.id == revoked.key_id).values(revoked_at=utcnow())
        )
    world.before["b"] = snapshot(world.engine, world.b)
    for token in [*_bad_keys(world).values(), revoked.api_key]:
        _probe_every_route(world, http, None if token is None else f"Bearer {token}")
    world.assert_untouched("a", "b")


def test_the_key_of_a_deleted_team_is_401_on_every_route(world: World, http: Api) -> None:
    with world.engine.begin() as conn:
        gone = create_team(conn, name="Gone Away")
        key = issue_api_key(conn, team_id=gone.id).api_key
    assert http.get(CONTACTS, key=key).status_code == 200
    with world.engine.begin() as conn:
        conn.execute(delete(teams).where(teams.c.id == gone.id))
    _probe_every_route(world, http, f"Bearer {key}")
    # A's key naming the deleted team is refused like any other team.
    for url in (CONTACTS, ELIGIBLE, COMPANIES):
        assert_error(http.get(url, params={"teamId": gone.id}), 403)
    world.assert_untouched("a", "b")


# --------------------------------------------------------------------------- list filters


@dataclass(frozen=True)
class Filter:
    """Filters that would match B's rows (``b``, checked with B's key) and A's answer."""

    name: str
    params: dict[str, str]
    a: list[str] | None  # A's contacts in order; None: any of A's, in any order
    b: list[str] | None
    total: int | None = None  # A's total when it is not len(a)


ALL = ["shared", "quiet", "star"]  # newest first
LIST_FILTERS = [
    Filter("no filter", {}, ALL, ALL),
    Filter("own team", {"teamId": "<a.team>"}, ALL, None),
    Filter("B's company", {"companyId": "<b.company>"}, [], ["star"]),
    Filter("A's company", {"companyId": "<a.company>"}, ["star"], []),
    Filter("B's phone", {"search": "<b.star.phone>"}, [], ["star"]),
    Filter("B's phone, national", {"search": "(415) 555-0101"}, [], ["star"]),
    Filter("B's phone, digits", {"search": "4155550101"}, [], ["star"]),
    Filter("B's second phone", {"search": "415-555-0102"}, [], ["star"]),
    Filter("B's email", {"search": "<b.star.email>"}, [], ["star"]),
    Filter("B's email, upper case", {"search": "RHEA@RIVAL.EXAMPLE"}, [], ["star"]),
    Filter("B's email domain", {"search": "rival.example"}, [], ["quiet", "star"]),
    Filter("B's last name", {"search": "Rival"}, [], ["quiet", "star"]),
    Filter("B's full name", {"search": "rhea rival"}, [], ["star"]),
    Filter("a number both have", {"search": "202-555-0100"}, ["shared"], ["shared"]),
    Filter("a name both have", {"search": "Sam Shared"}, ["shared"], ["shared"]),
    Filter("LIKE wildcard", {"search": "%"}, None, None),
    Filter("LIKE one character", {"search": "_"}, None, None),
    Filter("B's status", {"leadStatus": "vip_rival"}, [], ["star"]),
    Filter("B's sticky status", {"leadStatus": "Churned"}, [], ["quiet"]),
    Filter("do not call", {"doNotCall": "true"}, ["quiet"], ["quiet"]),
    Filter("callable", {"doNotCall": "false"}, ["shared", "star"], ["shared", "star"]),
    Filter("with a phone", {"hasPhone": "true"}, ["shared", "star"], ["shared", "star"]),
    Filter("without a phone", {"hasPhone": "false"}, ["quiet"], ["quiet"]),
    Filter("B's tag", {"tag": "rival-tag"}, [], ["star"]),
    Filter("A's tag", {"tag": "acme-tag"}, ["star"], []),
    Filter("oldest first", {"sort": "created_at"}, ALL[::-1], ALL[::-1]),
    Filter("a page", {"limit": "1", "offset": "2"}, ["star"], ["star"], total=3),
    Filter("past A's last row", {"limit": "500", "offset": "3"}, [], [], total=3),
    Filter("the largest page", {"limit": "500", "offset": "0"}, ALL, ALL),
    Filter(
        "everything of B",
        {
            "companyId": "<b.company>",
            "search": "rhea",
            "leadStatus": "vip_rival",
            "doNotCall": "false",
            "hasPhone": "true",
            "limit": "500",
            "offset": "0",
        },
        [],
        ["star"],
    ),
]

ELIGIBLE_FILTERS = [
    Filter("at", {"at": AT}, ["star", "shared"], ["star", "shared"]),
    Filter("own team", {"teamId": "<a.team>", "at": AT}, ["star", "shared"], None),
    Filter(
        "B's morning",
        {"at": AT, "windowStart": "09:30", "windowEnd": "11:00"},
        [],
        ["star"],
    ),
    Filter(
        # The shared contacts have no timezone: their Washington number's zone (13:00) decides.
        "New York's lunch with a default zone",
        {
            "at": AT,
            "windowStart": "12:30",
            "windowEnd": "14:00",
            "defaultTimezone": "America/Los_Angeles",
        },
        ["shared"],
        ["shared"],
    ),
    Filter("B's cursor", {"cursor": "<b.cursor>", "limit": "1000"}, None, ["shared"]),
    Filter("one", {"limit": "1", "at": AT}, None, None),
]


def _ids(world: World, side: str, names: list[str]) -> list[str]:
    return [world.values[f"{side}.{name}"] for name in names]


def _naming_team(params: dict[str, str], key: str, side: Side) -> dict[str, str]:
    """``params`` asking for ``side``'s team (in the one spelling ``key``)."""
    return {k: v for k, v in params.items() if k not in ("teamId", "team_id")} | {key: side.team.id}


def _snake(params: dict[str, str]) -> dict[str, str]:
    return {re.sub(r"([A-Z])", r"_\1", k).lower(): v for k, v in params.items()}


def test_every_filter_has_isolation_cases() -> None:
    """A filter added to a query model later without a case here fails."""
    for model, cases in ((ContactQuery, LIST_FILTERS), (EligibleQuery, ELIGIBLE_FILTERS)):
        assert {name for case in cases for name in _snake(case.params)} == set(model.model_fields)


def _check_page(
    world: World, rows: list[dict[str, Any]], expected: list[str] | None, ordered: bool
) -> None:
    ids = [row["id"] for row in rows]
    assert all(row["team_id"] == world.a.team.id for row in rows), rows
    assert set(ids) <= set(world.a.contact_ids), rows
    if expected is not None:
        want = _ids(world, "a", expected)
        assert ids == (want if ordered else sorted(want)), rows


def _check_list(world: World, http: Api, case: Filter, params: dict[str, str]) -> None:
    if case.b is not None:  # the filter does reach B's rows, for B
        theirs = http.get(CONTACTS, params=params, key=http.other_key).json()
        assert [c["id"] for c in theirs["data"]] == _ids(world, "b", case.b), "B's control"
    response = http.get(CONTACTS, params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    _check_page(world, page["data"], case.a, ordered=True)
    if case.a is not None:
        assert page["total"] == (case.total if case.total is not None else len(case.a))
    else:
        assert page["total"] <= len(world.a.contact_ids)
    assert_no_leak(world, json.dumps(params), response)
    for team_key in ("teamId", "team_id"):
        assert_error(http.get(CONTACTS, params=_naming_team(params, team_key, world.b)), 403)


def _check_eligible(world: World, http: Api, case: Filter, params: dict[str, str]) -> None:
    if case.b is not None:
        theirs = http.eligible_ids(params, key=http.other_key)
        b_expected = _ids(world, "b", case.b)
        assert theirs == (b_expected if "cursor" in params else sorted(b_expected)), "control"
    response = http.get(ELIGIBLE, params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    _check_page(world, page["data"], case.a, ordered=False)
    if page["next_cursor"] is not None:  # the next page is A's too
        following = http.get(ELIGIBLE, params={**params, "cursor": page["next_cursor"]})
        _check_page(world, following.json()["data"], None, ordered=False)
    assert_no_leak(world, json.dumps(params), response)
    for team_key in ("teamId", "team_id"):
        assert_error(http.get(ELIGIBLE, params=_naming_team(params, team_key, world.b)), 403)


@pytest.mark.parametrize("spelling", ["camelCase", "snake_case"])
@pytest.mark.parametrize(
    ("table", "check"),
    [(LIST_FILTERS, _check_list), (ELIGIBLE_FILTERS, _check_eligible)],
    ids=["list", "eligible"],
)
def test_filters_with_a_key_never_return_b_rows(
    world: World,
    http: Api,
    table: list[Filter],
    check: Callable[[World, Api, Filter, dict[str, str]], None],
    spelling: str,
) -> None:
    """Each filter (and all together), in either spelling: only A's rows, A's total."""
    cases = Cases()
    for case in table:
        with cases.case(case.name):
            params = world.fill(case.params if spelling == "camelCase" else _snake(case.params))
            check(world, http, case, params)
    cases.done()
    world.assert_untouched("a", "b")


# --------------------------------------------------------------------------- CLI


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``contact-sync ARGV`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def cli_url(world: World, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The database of ``world`` for the CLI; the event commands copy flags to the
    environment, which is put back afterwards."""
    monkeypatch.setenv("CONTACT_SYNC_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def _subcommands(parser: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    found: dict[tuple[str, ...], Any] = {}
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                deeper = _subcommands(sub, (*prefix, name))
                found |= deeper or {(*prefix, name): sub}
    return found


# Every CLI path and where its isolation is tried (or why it takes no team's data).
CLI_PATHS = {
    ("contacts", "list"): "test_cli_contacts_list_for_a_never_prints_b_rows",
    ("dead-letters", "list"): "test_cli_dead_letters_list_keeps_each_letter_with_its_team",
    ("dead-letters", "replay"): "test_cli_replay_*",
    ("dead-letters", "discard"): "test_cli_discard_within_a_never_closes_b_letter",
    ("keys", "create"): "test_cli_keys_of_a_reach_a_only",
    ("keys", "list"): "test_cli_keys_of_a_reach_a_only",
    ("keys", "revoke"): "test_cli_keys_of_a_reach_a_only",
    ("policy", "show"): "tests/test_calling_policy.py::test_cli_policy_of_a_reaches_a_only",
    ("policy", "set"): "tests/test_calling_policy.py::test_cli_policy_of_a_reaches_a_only",
    ("policy", "history"): "tests/test_calling_policy.py::test_cli_policy_of_a_reaches_a_only",
    ("teams", "list"): "the operators' list of every team: names and key counts, no key",
    ("publish",): "test_events_of_a_naming_b_never_touch_b[cli publish]",
    ("worker",): "test_events_of_a_naming_b_never_touch_b (the worker runs the event path)",
    ("worker-health",): "reads the local worker's heartbeat file: no database, no team",
    ("api",): "the HTTP tests above (it serves create_app)",
    ("teams", "create"): "takes no id: it creates a new team and key",
    ("migrate",): "takes no id and touches no rows",
    ("demo",): "its own team in its own database",
    ("fields", "list"): "test_cli_fields_of_a_reach_a_only",
    ("fields", "define"): "test_cli_fields_of_a_reach_a_only",
    ("fields", "delete"): "test_cli_fields_of_a_reach_a_only",
    ("import",): "test_cli_import_into_a_of_b_values_never_touches_b",
}
LIST_FLAGS = {
    "companyId": "--company",
    "search": "--search",
    "leadStatus": "--lead-status",
    "doNotCall": "--do-not-call",
    "hasPhone": "--has-phone",
    "tag": "--tag",
    "sort": "--sort",
    "limit": "--limit",
    "offset": "--offset",
    "teamId": "--team",
}


def test_every_cli_path_is_accounted_for() -> None:
    parser = build_parser()
    paths = _subcommands(parser)
    assert set(paths) == set(CLI_PATHS)
    listing = paths[("contacts", "list")]
    flags = {
        option
        for action in listing._actions
        for option in action.option_strings
        if option.startswith("--")
    }
    global_flags = {"--database-url", "--broker-url"}  # every command takes them
    assert flags - {"--help", "--json", *global_flags} == set(LIST_FLAGS.values())


def test_cli_contacts_list_for_a_never_prints_b_rows(
    world: World, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every filter of the contacts list as flags, with ``--json`` and as a table."""
    cases = Cases()
    for case in LIST_FILTERS:
        with cases.case(case.name):
            params = world.fill({"teamId": "<a.team>", **case.params})
            flags = [item for k, v in params.items() for item in (LIST_FLAGS[k], v)]
            argv = ["--database-url", cli_url, "contacts", "list", *flags]
            code, out, err = run([*argv, "--json"], capsys)
            assert code == 0, err
            page = json.loads(out)
            _check_page(world, page["data"], case.a, ordered=True)
            if case.a is not None:
                assert page["total"] == (case.total if case.total is not None else len(case.a))
            code, table, err = run(argv, capsys)
            assert code == 0, err
            for secret in world.secrets():
                if secret not in " ".join(flags):
                    assert secret not in out, secret
                    assert secret not in table, secret
    cases.done()
    world.assert_untouched("a", "b")


def test_cli_contacts_list_of_an_id_of_b_that_is_not_a_team_is_empty(
    world: World, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for team_ref in ("b.company", "b.star", "b.letter"):
        argv = ["--database-url", cli_url, "contacts", "list", "--team", world.values[team_ref]]
        code, out, err = run([*argv, "--json"], capsys)
        assert code == 0, err
        assert (json.loads(out)["data"], json.loads(out)["total"]) == ([], 0), team_ref


def _hostile_letter(world: World, **fields: Any) -> tuple[dict[str, Any], str]:
    """An event of A naming B's contact, dead-lettered in process; with its letter id."""
    event = call_event(world.a.team.id, **{"contact_id": world.b.star, **fields})
    with world.engine.begin() as conn:
        [outcome] = apply_payloads(conn, [event])
    assert (outcome.outcome, outcome.reason) == ("dead_lettered", "contact_not_found")
    with world.engine.connect() as conn:
        letter = conn.execute(
            select(dead_letters).where(dead_letters.c.event_id == event["event_id"])
        ).one()
    assert letter.team_id == world.a.team.id
    world.before["a"] = snapshot(world.engine, world.a)
    return event, letter.id


def test_cli_dead_letters_list_keeps_each_letter_with_its_team(
    world: World, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--team``, ``dead-letters list`` is the operators' view of every team
    (docs/design.md §8). What must hold is that each letter stays filed under its own team."""
    _, hostile_id = _hostile_letter(world)
    code, out, err = run(["--database-url", cli_url, "dead-letters", "list", "--json"], capsys)
    assert code == 0, err
    listed = {letter["id"]: letter for letter in json.loads(out)}
    assert set(listed) == {world.a.letter_id, world.b.letter_id, hostile_id}
    for letter in listed.values():
        assert letter["team_id"] == letter["payload"]["team_id"]
    assert listed[hostile_id]["team_id"] == world.a.team.id
    assert listed[world.b.letter_id]["payload"] == world.b.letter_event
    world.assert_untouched("a", "b")


def test_cli_replay_of_a_letter_of_a_naming_b_contact_stays_dead(
    world: World, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, letter_id = _hostile_letter(world, phone=PEOPLE["b"]["star"]["phone"])
    code, out, _ = run(["--database-url", cli_url, "dead-letters", "replay", letter_id], capsys)
    assert code == 1
    assert out.startswith(f"{letter_id}: dead_lettered (contact_not_found")
    world.assert_untouched()


def test_cli_replay_applies_a_letter_to_its_own_team_only(
    world: World, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A's event for the number both teams have, parked as ambiguous (A has it twice),
    replayed once A fixed its data: it lands on A's contact, never on B's."""
    with world.engine.begin() as conn:
        twin = create_contact(conn, team_id=world.a.team.id, data=SHARED)
    event = call_event(
        world.a.team.id, phone=SHARED_PHONE, extraction={"custom_fields": {"budget": 7}}
    )
    with world.engine.begin() as conn:
        [outcome] = apply_payloads(conn, [event])
    assert outcome.reason == "ambiguous_contact"
    with world.engine.begin() as conn:
        update_contact(conn, team_id=world.a.team.id, contact_id=twin.id, data={"phone": None})
        letter_id = conn.execute(
            select(dead_letters.c.id).where(dead_letters.c.event_id == event["event_id"])
        ).scalar_one()
    code, out, err = run(["--database-url", cli_url, "dead-letters", "replay", letter_id], capsys)
    assert (code, out.strip()) == (0, f"{letter_id}: applied"), err
    assert contact_row(world.engine, world.a.shared).custom_fields == {"budget": 7}
    world.assert_untouched()


def test_cli_replay_all_applies_each_letter_within_its_own_team(
    world: World, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, by_id = _hostile_letter(world)
    _, by_phone = _hostile_letter(world, contact_id=world.b.quiet, phone=SHARED_PHONE)
    code, out, _ = run(["--database-url", cli_url, "dead-letters", "replay", "--all"], capsys)
    assert code == 1
    results = dict(line.split(": ", 1) for line in out.splitlines())
    assert set(results) == {world.a.letter_id, world.b.letter_id, by_id, by_phone}
    assert all(r.startswith("dead_lettered (contact_not_found") for r in results.values())
    # Replaying B's own letter is B's business (attempts and times move); its contacts,
    # companies and history do not, and the letter keeps its team and payload.
    after = snapshot(world.engine, world.b)
    for table in ("teams", "api_keys", "companies", "contacts", "contact_history"):
        assert after[table] == world.before["b"][table], table
    with world.engine.connect() as conn:
        letter = conn.execute(
            select(dead_letters).where(dead_letters.c.id == world.b.letter_id)
        ).one()
    assert (letter.team_id, letter.payload) == (world.b.team.id, world.b.letter_event)
    assert_no_cross_team_links(world.engine)


def test_cli_replay_by_b_event_id_within_a_finds_nothing(
    world: World, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    event_id = world.b.letter_event["event_id"]
    argv = ["--database-url", cli_url, "dead-letters", "replay", "--event-id", event_id]
    code, out, err = run([*argv, "--team", world.a.team.id], capsys)
    assert (code, out) == (3, "")
    assert err == f"contact-sync: no dead letter of event {event_id} in team {world.a.team.id}\n"
    world.assert_untouched("a", "b")


def test_cli_discard_within_a_never_closes_b_letter(
    world: World, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--database-url", cli_url, "dead-letters", "discard", world.b.letter_id]
    code, out, err = run([*argv, "--team", world.a.team.id], capsys)
    assert (code, out) == (3, "")
    assert err.startswith("contact-sync: not found")
    world.assert_untouched("a", "b")


def test_cli_keys_of_a_reach_a_only(
    world: World, http: Api, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key made for A reads A's rows only; A's list shows A's keys only; revoking A's
    keys leaves B's working and B's rows as they were."""
    code, out, err = run(
        ["--database-url", cli_url, "keys", "create", "--team", world.a.team.id], capsys
    )
    assert code == 0, err
    made = json.loads(out)
    listed = http.get(CONTACTS, key=made["api_key"]).json()
    assert sorted(c["id"] for c in listed["data"]) == sorted(world.a.contact_ids)
    assert_error(http.get(CONTACT.format(contact_id=world.b.star), key=made["api_key"]), 404)
    assert_error(http.get(CONTACTS, params={"teamId": world.b.team.id}, key=made["api_key"]), 403)

    code, out, err = run(
        ["--database-url", cli_url, "keys", "list", "--team", world.a.team.id, "--json"], capsys
    )
    assert code == 0, err
    assert {key["id"] for key in json.loads(out)} == {world.a.key_id, made["key_id"]}
    assert_no_leak(world, "", httpx.Response(200, text=out))

    for key_id in (world.a.key_id, made["key_id"]):
        assert run(["--database-url", cli_url, "keys", "revoke", key_id], capsys)[0] == 0
    assert_error(http.get(CONTACTS, key=made["api_key"]), 401)
    assert http.get(CONTACTS, key=world.b.key).status_code == 200
    world.assert_untouched()


def test_cli_fields_of_a_reach_a_only(
    world: World, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A's list shows A's definitions only; deleting B's key as A is not found; defining
    B's key as A makes A's own; B's definitions stay as they were."""
    base = ["--database-url", cli_url, "fields"]
    code, out, err = run([*base, "list", "--team", world.a.team.id, "--json"], capsys)
    assert code == 0, err
    assert [f["key"] for f in json.loads(out)] == ["interest"]
    assert_no_leak(world, "", httpx.Response(200, text=out))
    code, _, err = run([*base, "delete", "--team", world.a.team.id, "rival_field"], capsys)
    assert code == 3, err
    argv = ["define", "--team", world.a.team.id, "--key", "rival_field", "--type", "text"]
    code, out, err = run([*base, *argv], capsys)
    assert code == 0, err
    assert json.loads(out)["label"] == "rival_field"
    world.assert_untouched()


def test_cli_import_into_a_of_b_values_never_touches_b(
    world: World, cli_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file imported into A that carries B's numbers, addresses, ids and company: rows
    that match B's contacts by number or address create A's own; B's company id fails
    its row naming ``companyId``; the shared number updates A's contact only."""
    b_star = PEOPLE["b"]["star"]
    path = tmp_path / "b-values.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["firstName", "lastName", "phone", "email", "companyId", "cf.rival_key"])
        writer.writerow(["Mine", "ByPhone", b_star["phone"], "", "", "taken"])
        writer.writerow(["Mine", "BySecondary", b_star["phone_secondary"], "", "", ""])
        writer.writerow(["Mine", "ByEmail", "", b_star["email"].upper(), "", ""])
        writer.writerow(["Mine", "ByCompany", "", "", world.b.company_id, ""])
        writer.writerow(["Sam", "Shared", SHARED_PHONE, "", "", ""])
        writer.writerow([world.b.star, world.b.quiet, "", "", "", ""])
    errors = tmp_path / "errors.csv"
    argv = ["--database-url", cli_url, "import", str(path), "--team", world.a.team.id]
    code, out, err = run([*argv, "--errors", str(errors)], capsys)
    assert (code, out.splitlines()[-1]) == (2, "created=4 updated=0 unchanged=1 failed=1"), err
    [_, problem] = errors.read_text(encoding="utf-8").splitlines()
    assert problem.startswith("5,companyId,")
    assert world.b.company_id not in problem
    world.assert_untouched()


# --------------------------------------------------------------------------- event ids


def test_an_event_of_a_reusing_b_event_id_applies_in_a_and_leaves_b_alone(
    world: World,
) -> None:
    """The inbox is keyed by ``(team_id, event_id)`` (README): A's event that carries
    B's id is A's own event. It applies to A's contact; B keeps its row and contact."""
    event = call_event(
        world.a.team.id,
        event_id=world.b.applied_event["event_id"],
        contact_id=world.a.star,
        minutes=30,
        extraction={"custom_fields": {"budget": 1}},
    )
    with world.engine.begin() as conn:
        [outcome] = apply_payloads(conn, [event])
    assert (outcome.outcome, outcome.contact_id) == ("applied", world.a.star)
    assert contact_row(world.engine, world.a.star).custom_fields["budget"] == 1
    world.assert_untouched("b")


def test_an_invalid_event_of_a_reusing_b_dead_letter_event_id_leaves_b_letter_alone(
    world: World,
) -> None:
    """A redelivery of a bad event bumps its open letter; an event of another team that
    happens to carry the same id is not a redelivery and must not rewrite B's letter."""
    event = {**world.b.letter_event, "team_id": world.a.team.id, "occurred_at": "2026-01-01"}
    with world.engine.begin() as conn:
        [outcome] = apply_payloads(conn, [event])
    assert (outcome.outcome, outcome.reason) == ("dead_lettered", "invalid_payload")
    world.assert_untouched()
    with world.engine.connect() as conn:
        [mine] = conn.execute(
            select(dead_letters).where(
                dead_letters.c.event_id == event["event_id"],
                dead_letters.c.team_id == world.a.team.id,
            )
        ).all()
    assert mine.payload == event


def test_a_valid_event_of_a_reusing_b_dead_letter_event_id_cannot_swallow_b_replay(
    world: World, cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """B's parked event, once B fixed the cause, must still apply on replay, whatever
    A sent with the same event id in between."""
    # B's event, ambiguous within B: B has the shared number twice.
    with world.engine.begin() as conn:
        twin = create_contact(conn, team_id=world.b.team.id, data=SHARED)
    b_event = call_event(
        world.b.team.id, phone=SHARED_PHONE, extraction={"custom_fields": {"budget": 9}}
    )
    with world.engine.begin() as conn:
        [parked] = apply_payloads(conn, [b_event])
    assert parked.reason == "ambiguous_contact"
    # A's event with the same id, valid in A: A's own event, applied in A.
    a_event = call_event(
        world.a.team.id,
        event_id=b_event["event_id"],
        contact_id=world.a.star,
        extraction={"tags": ["a-own"]},
    )
    with world.engine.begin() as conn:
        [outcome] = apply_payloads(conn, [a_event])
    assert (outcome.outcome, outcome.contact_id) == ("applied", world.a.star)
    # B fixes its data and replays its letter: it applies to B's contact.
    with world.engine.begin() as conn:
        update_contact(conn, team_id=world.b.team.id, contact_id=twin.id, data={"phone": None})
        letter_id = conn.execute(
            select(dead_letters.c.id)
            .where(dead_letters.c.team_id == world.b.team.id)
            .where(dead_letters.c.event_id == b_event["event_id"])
        ).scalar_one()
    code, out, err = run(["--database-url", cli_url, "dead-letters", "replay", letter_id], capsys)
    assert (code, out.strip()) == (0, f"{letter_id}: applied"), err
    assert contact_row(world.engine, world.b.shared).custom_fields == {"budget": 9}
    assert_no_cross_team_links(world.engine)


# --------------------------------------------------------------------------- events (worker)

# A Redis database no other test module uses (7: test_worker, 8: hostile, 9: metrics,
# 10: grouping and faults, 11: bench); on RabbitMQ, the run's virtual host.
BROKER_DB = 13
TASK_BATCH = "contact_sync.apply_call_completed_batch"


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path
    broker: Broker
    broker_url: str

    def outcomes(self) -> dict[str, tuple[str, str | None]]:
        """(outcome, reason) by event id, from the worker's structured log."""
        found = {}
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line still being written
            if record.get("event_id") and record.get("outcome"):
                found[record["event_id"]] = (record["outcome"], record.get("reason"))
        return found

    def wait_for(self, event_ids: list[str], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            seen = self.outcomes()
            if all(event_id in seen for event_id in event_ids):
                return {event_id: seen[event_id] for event_id in event_ids}
            assert self.process.poll() is None, self.log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, self.log_path.read_text()[-4000:]
            time.sleep(0.05)


@pytest.fixture(scope="module", params=BROKERS)
def worker(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """One real ``contact-sync worker`` for every event case of this module, on each broker."""
    broker = broker_for(request, request.param, BROKER_DB)
    log_path = tmp_path_factory.mktemp("isolation-worker") / "worker.log"
    process = start_worker(postgres_url, broker.url, log_path)
    try:
        yield Worker(process, log_path, broker, broker.url)
    finally:
        stop_worker(process)
        broker.flush()
        broker.close()


@pytest.fixture
def pg_world(pg_engine: Engine, pg_team: Team, pg_other_team: Team) -> World:
    return build_world(pg_engine, pg_team, pg_other_team)


Expect = tuple[str, str | None]
APPLIED: Expect = ("applied", None)
NOT_IN_TEAM: Expect = ("dead_lettered", "contact_not_found")


def _a(world: World, **fields: Any) -> dict[str, Any]:
    return call_event(world.a.team.id, **fields)


def _naming_b(world: World) -> dict[str, Any]:
    """A's event about A's own contact whose every other field names B."""
    b_star = PEOPLE["b"]["star"]
    return _a(
        world,
        contact_id=world.a.star,
        call_id=world.b.applied_event["call_id"],
        campaign_id=world.b.applied_event["campaign_id"],
        extraction={
            "extractor_version": "v3",
            "contact": {
                "email": b_star["email"],
                "first_name": b_star["first_name"],
                "last_name": b_star["last_name"],
                "phone_secondary": b_star["phone"],
                "job_title": "Spy",
                "timezone": b_star["timezone"],
                # not fields of an extraction: named in `skipped`, never applied
                "company_id": world.b.company_id,
                "team_id": world.b.team.id,
                "id": world.b.star,
                "contact_id": world.b.star,
                "phone": b_star["phone"],
            },
            "custom_fields": {"contact_id": world.b.star, "company_id": world.b.company_id},
            "lead_status": "qualified",
            "do_not_call": True,
            "tags": ["rival-tag"],
            "summary": f"about {world.b.star}",
        },
    )


def _new_a_contact(phone: str) -> Callable[[World, str | None], None]:
    def check(world: World, contact_id: str | None) -> None:
        assert contact_id not in world.a.contact_ids
        row = contact_row(world.engine, contact_id or "")
        assert (row.team_id, row.phone, row.source) == (world.a.team.id, phone, "inbound-call")

    return check


def _is(ref: str) -> Callable[[World, str | None], None]:
    def check(world: World, contact_id: str | None) -> None:
        assert contact_id == world.values[ref]

    return check


def _kept_a_company(world: World, contact_id: str | None) -> None:
    assert contact_id == world.a.star
    row = contact_row(world.engine, world.a.star)
    assert row.company_id == world.a.company_id
    assert row.email == PEOPLE["a"]["star"]["email"]  # a person's value beats a call's


@dataclass(frozen=True)
class EventCase:
    """A's events (built from the world), what each must come to, and a check of A's side."""

    events: Callable[[World], list[dict[str, Any]]]
    expect: list[Expect]
    check: Callable[[World, str | None], None] | None = None
    batch: bool = False
    cli: bool = False


B_PHONE = PEOPLE["b"]["star"]["phone"]
EVENT_CASES: dict[str, EventCase] = {
    "B's contact_id": EventCase(lambda w: [_a(w, contact_id=w.b.star)], [NOT_IN_TEAM]),
    "B's do-not-call contact_id": EventCase(
        lambda w: [_a(w, contact_id=w.b.quiet, extraction={"do_not_call": False})],
        [NOT_IN_TEAM],
    ),
    "B's contact_id and B's phone": EventCase(
        lambda w: [_a(w, contact_id=w.b.star, phone=B_PHONE)], [NOT_IN_TEAM]
    ),
    "B's contact_id and A's phone": EventCase(
        lambda w: [_a(w, contact_id=w.b.star, phone=PEOPLE["a"]["star"]["phone"])],
        [NOT_IN_TEAM],
    ),
    "B's company id as contact_id": EventCase(
        lambda w: [_a(w, contact_id=w.b.company_id)], [NOT_IN_TEAM]
    ),
    "B's contact_id under an unknown team": EventCase(
        lambda w: [call_event("team_unknown", contact_id=w.b.star)], [NOT_IN_TEAM]
    ),
    "B's phone": EventCase(
        lambda w: [_a(w, phone=B_PHONE, extraction={"lead_status": "qualified"})],
        [APPLIED],
        _new_a_contact(B_PHONE),
    ),
    "B's phone, national format": EventCase(
        lambda w: [_a(w, phone="(415) 555-0101")], [APPLIED], _new_a_contact(B_PHONE)
    ),
    "B's second phone": EventCase(
        lambda w: [_a(w, phone=PEOPLE["b"]["star"]["phone_secondary"])],
        [APPLIED],
        _new_a_contact(PEOPLE["b"]["star"]["phone_secondary"]),
    ),
    "a number both teams have": EventCase(
        lambda w: [_a(w, phone=SHARED_PHONE, extraction={"tags": ["x"]})],
        [APPLIED],
        _is("a.shared"),
    ),
    "every extraction field naming B": EventCase(
        lambda w: [_naming_b(w)], [APPLIED], _kept_a_company
    ),
    "B's applied event id": EventCase(
        lambda w: [
            _a(
                w,
                event_id=w.b.applied_event["event_id"],
                contact_id=w.a.star,
                extraction={"tags": ["a-own"]},
            )
        ],
        [APPLIED],
        _is("a.star"),
    ),
    "B's dead-lettered event id, invalid": EventCase(
        lambda w: [{**w.b.letter_event, "team_id": w.a.team.id, "occurred_at": "2026-01-01"}],
        [("dead_lettered", "invalid_payload")],
    ),
    "B's dead-lettered event id, valid": EventCase(
        lambda w: [
            _a(
                w,
                event_id=w.b.letter_event["event_id"],
                contact_id=w.a.star,
                extraction={"tags": ["a-own"]},
            )
        ],
        [APPLIED],
        _is("a.star"),
    ),
    "a batch of all of them": EventCase(
        lambda w: [
            _a(w, contact_id=w.b.star),
            _a(w, contact_id=w.b.quiet, phone=B_PHONE),
            _a(w, phone=SHARED_PHONE),
            _naming_b(w),
        ],
        [NOT_IN_TEAM, NOT_IN_TEAM, APPLIED, APPLIED],
        batch=True,
    ),
    "cli publish": EventCase(
        lambda w: [_a(w, contact_id=w.b.star), _a(w, phone=SHARED_PHONE)],
        [NOT_IN_TEAM, APPLIED],
        cli=True,
    ),
}


def _publish_with_cli(worker: Worker, events: list[dict[str, Any]], folder: Path) -> None:
    path = folder / "events.jsonl"
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    broker = ["--broker-url", worker.broker_url]
    result = subprocess.run(
        [sys.executable, "-m", "contact_sync.cli.main", "publish", str(path), "--quiet", *broker],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EVENT_CASES))
def test_events_of_a_naming_b_never_touch_b(
    pg_world: World, worker: Worker, name: str, tmp_path: Path
) -> None:
    world, case = pg_world, EVENT_CASES[name]
    events = case.events(world)
    if case.cli:
        _publish_with_cli(worker, events, tmp_path)
    elif case.batch:
        worker.broker.push_task([events], TASK_BATCH)
    else:
        for event in events:
            worker.broker.push_task([event])
    got = worker.wait_for([event["event_id"] for event in events])
    assert list(got.values()) == case.expect

    world.assert_untouched()
    with world.engine.connect() as conn:
        for event, (outcome, _) in zip(events, case.expect, strict=True):
            if outcome == "applied":
                row = conn.execute(
                    select(processed_events).where(
                        processed_events.c.event_id == event["event_id"],
                        processed_events.c.team_id == world.a.team.id,
                    )
                ).one()
                assert row.team_id == world.a.team.id
                assert row.contact_id not in world.b.contact_ids
                if case.check is not None:
                    case.check(world, row.contact_id)
            elif outcome == "dead_lettered":
                letter = conn.execute(
                    select(dead_letters).where(
                        dead_letters.c.event_id == event["event_id"],
                        dead_letters.c.id != world.b.letter_id,
                    )
                ).one()
                assert letter.team_id == event["team_id"]
                assert letter.payload == event
