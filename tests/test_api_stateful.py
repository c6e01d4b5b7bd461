"""Stateful Schemathesis: sequences of calls that follow the document's links.

Where ``tests/test_api_fuzz.py`` sends each operation random input (so most ids
are unknown and answer 404), here Schemathesis' state machine chains calls with
real ids along the OpenAPI links the app documents (``api/routes.py``): create a
company, a contact in it, read it, update it at the version its ``ETag`` names,
list the team's or the company's contacts, read the history, delete, page the
eligible stream... Input is valid by the document and mostly realistic where the
document cannot say what is valid (phone numbers, zone names), so that state
builds up; the hooks below say how.

Each scenario runs on the real app on PostgreSQL with a team of its own and a
real key, so every contact the team has was made by that scenario and a model
of them (``Model``) can say what each answer must be. Every answer gets the
stateless suite's checks (no 5xx, status code, content type, headers and body
conform) and Schemathesis' stateful ones (a created resource is reachable, a
deleted one is gone), and then:

- a contact id answers 2xx exactly while the contact lives in this team, and the
  same body every time (a read shows the last write, nothing else moves it);
- a create is version 1; an update is the same version and body (a no-op) or the
  next version with some field changed; a read right after a write shows it; an
  update whose ``If-Match`` or body ``version`` names another version is 412
  with the current one, never applied;
- a delete makes the contact 404, history included;
- the history has one record per version, newest first;
- lists and the eligible stream show only live contacts, as they are; a list
  unfiltered or by company counts and pages every match; the eligible ones are
  callable; a company list is the companies made.

``bench/fuzz_api.py --stateful`` runs the same machine with a bigger budget.
"""

from __future__ import annotations

import os
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.hooks import HookContext
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)
from sqlalchemy import Engine

from contact_sync.accounts.teams import create_team, issue_api_key
from contact_sync.api import create_app
from contact_sync.db.engine import make_engine
from contact_sync.settings import Settings

# bench/fuzz_api.py --stateful raises these for a deeper run.
SCENARIOS = int(os.environ.get("CONTACT_SYNC_FUZZ_SCENARIOS", "40"))
STEPS = int(os.environ.get("CONTACT_SYNC_FUZZ_STEPS", "25"))

# test_api_fuzz.py's checks, less the two that send extra requests to test a
# property of one operation alone (auth enforced, unknown methods refused), plus
# Schemathesis' stateful ones (a contact just created is there; a deleted one is not).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    use_after_free,
    ensure_resource_availability,
]

# The engine is swapped in per test (app.state.engine); loading the document
# needs no database.
# No rate limit: the fuzzer sends many requests a second with one key.
APP = create_app(
    Settings(database_url="sqlite://", api_rate_limit_per_second=0), engine=make_engine("sqlite://")
)
CLIENT = TestClient(APP)

PREFIX = "/api/crm"
CONTACTS = f"{PREFIX}/contacts"
ONE_CONTACT = f"{CONTACTS}/{{contact_id}}"
HISTORY = f"{ONE_CONTACT}/history"
ELIGIBLE = f"{CONTACTS}/eligible"
UPSERT = f"{CONTACTS}/upsert"
BATCH_UPSERT = f"{CONTACTS}/batch/upsert"
COMPANIES = f"{PREFIX}/companies"
ONE_COMPANY = f"{COMPANIES}/{{company_id}}"

# Query parameters of the list that narrow it (either spelling).
LIST_FILTERS = {
    spelling
    for name in ("company_id", "search", "lead_status", "do_not_call", "has_phone", "tag")
    for spelling in (
        name,
        "".join(w if i == 0 else w.title() for i, w in enumerate(name.split("_"))),
    )
}
NOT_CALLABLE = {"converted", "customer", "churned", "do_not_contact"}


# Valid input only: test_api_fuzz.py sends the invalid kinds; here state should build up.
# The document's own links only: the ones Schemathesis would infer add little (lists to
# their items) and pick among matches at random, so a failure could not be replayed.
SCHEMA = schemathesis.openapi.from_asgi(
    "/openapi.json",
    APP,
    config=schemathesis.Config.from_dict(
        {
            "generation": {"mode": "positive"},
            "phases": {"stateful": {"inference": {"algorithms": []}}},
        }
    ),
)


def _one_of(*values: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
# Values the service accepts where JSON Schema only says "string": phone numbers,
# addresses, zone names, slugs (and spellings it normalises).
REALISTIC: dict[str, st.SearchStrategy[Any]] = {
    "firstName": _one_of("Ada", " Grace ", "Émile"),
    "lastName": _one_of("Lovelace", "Hopper", "O'Brien"),
    "email": _one_of(None, "ada@example.com", "Grace.Hopper@EXAMPLE.org"),
    "phone": _one_of(None, "+12025550100", "(202) 555-0143", "+44 20 7183 8750"),
    "phoneSecondary": _one_of(None, "+12025550199", "202.555.0177"),
    "jobTitle": st.none() | _TEXT,
    "leadStatus": _one_of(None, "new", "Qualified", "do-not-contact", "customer", "contacted"),
    "source": _one_of(None, "web", "referral"),
    "timezone": _one_of(None, "America/New_York", "Europe/London", "Pacific/Chatham"),
    "preferredContactMethod": _one_of(None, "phone", "SMS", "email"),
    "doNotCall": st.booleans(),
    "notes": st.none() | _TEXT,
    "customFields": st.none()
    | st.dictionaries(
        _one_of("roof_age", "budget", "Source-2"),
        st.none() | st.integers(-5, 50) | _TEXT,
        max_size=3,
    ),
    "tags": st.none() | st.lists(_one_of("vip", " solar ", "roof", "VIP"), max_size=4),
}
NAMES = ("firstName", "lastName")


@SCHEMA.hook
def flatmap_body(ctx: HookContext, body: Any) -> st.SearchStrategy[Any]:
    """Contact bodies: often realistic, merged into the generated one or alone.

    Generated strings are almost never a phone number or a zone name, so without
    this nearly every create and update would be a 422 and no state would build up.
    """
    operation = ctx.operation
    if operation is None or operation.path not in (CONTACTS, ONE_CONTACT):
        return st.just(body)
    if operation.method.upper() == "POST":
        optional = {k: v for k, v in REALISTIC.items() if k not in NAMES}
        alone = st.fixed_dictionaries({k: REALISTIC[k] for k in NAMES}, optional=optional)
    else:
        alone = st.fixed_dictionaries({}, optional={**REALISTIC, "version": st.integers(1, 4)})
    if not isinstance(body, dict):
        return alone | st.just(body)
    return alone | alone.map(lambda realistic: {**body, **realistic}) | st.just(body)


@SCHEMA.hook
def flatmap_headers(ctx: HookContext, headers: Any) -> st.SearchStrategy[Any]:
    """A generated ``If-Match`` is almost never a version: often name one, or none."""
    operation = ctx.operation
    if operation is None or operation.path != ONE_CONTACT or "If-Match" not in (headers or {}):
        return st.just(headers)
    rest = {k: v for k, v in headers.items() if k != "If-Match"}
    tags = _one_of('"1"', '"2"', "3", 'W/"2"', "*").map(lambda tag: {**rest, "If-Match": tag})
    return st.just(rest) | tags | st.just(headers)


ELIGIBLE_REALISTIC = {
    "at": st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)).map(
        datetime.isoformat
    ),
    "defaultTimezone": _one_of("America/New_York", "Asia/Kolkata", "Pacific/Chatham"),
}


@SCHEMA.hook
def flatmap_query(ctx: HookContext, query: Any) -> st.SearchStrategy[Any]:
    """The stream's instant, zone and cursor are rarely valid as generated: often realistic."""
    operation = ctx.operation
    if operation is None or operation.path != ELIGIBLE or not isinstance(query, dict):
        return st.just(query)
    rest = {k: v for k, v in query.items() if k not in (*ELIGIBLE_REALISTIC, "cursor")}
    realistic = st.fixed_dictionaries({}, optional=ELIGIBLE_REALISTIC)
    return realistic.map(lambda values: {**rest, **values}) | st.just(query)


@dataclass
class Model:
    """What one scenario's team holds, as the answers so far have shown it."""

    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    companies: set[str] = field(default_factory=set)


def _expected_version(case: schemathesis.Case) -> int | None:
    """The version an update is conditional on: ``If-Match``, else the body's ``version``."""
    headers = {k.lower(): v for k, v in (case.headers or {}).items()}
    text = str(headers.get("if-match", "*")).strip().removeprefix("W/").strip('"')
    if text.isascii() and text.isdigit():
        return int(text)
    body = case.body if isinstance(case.body, dict) else {}
    version = body.get("version")
    return version if type(version) is int else None


class ApiWorkflow(SCHEMA.as_state_machine()):  # type: ignore[misc]
    """The document's state machine, on a fresh team per scenario, checked against ``Model``."""

    engine: ClassVar[Engine]
    # Each failure as first seen, with the calls that led to it (see the test).
    failures: ClassVar[list[str]] = []

    def setup(self) -> None:
        with self.engine.begin() as conn:
            # Team names are unique: one per scenario.
            team = create_team(conn, name=f"Stateful Team {uuid.uuid4().hex}")
            key = issue_api_key(conn, team_id=team.id)
        self.team_id = team.id
        self.headers = {"Authorization": f"Bearer {key.api_key}"}
        self.model = Model()
        self.calls: list[str] = []

    def before_call(self, case: schemathesis.Case) -> None:
        # A generated team id is another team's (403, which test_api_fuzz.py covers):
        # name this scenario's team instead, so that the request does something.
        for container in (case.query, case.body):
            if isinstance(container, dict):
                for name in ("teamId", "team_id"):
                    if isinstance(container.get(name), str):
                        container[name] = self.team_id
        # A generated contact id (a call that starts a scenario, or a link from an
        # empty list) is unknown, so 404: mostly swap it for one this scenario has
        # seen, live or deleted, chosen by the generated one so a replay picks the same.
        path = case.path_parameters or {}
        seen = [*self.model.contacts, *sorted(self.model.deleted)]
        if "contact_id" in path and seen and path["contact_id"] not in seen:
            pick = zlib.crc32(str(path["contact_id"]).encode("utf-8", "surrogatepass"))
            if pick % (len(seen) + 1) < len(seen):
                path["contact_id"] = seen[pick % (len(seen) + 1)]

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"headers": self.headers}

    def validate_response(
        self,
        response: Response,
        case: schemathesis.Case,
        additional_checks: Any = None,
        **kwargs: Any,
    ) -> None:
        query = f"?{urlencode(case.query, doseq=True)}" if case.query else ""
        call = f"{case.method.upper()} {case.formatted_path}{query}"
        self.calls.append(f"{call} -> {response.status_code}")
        try:
            case.validate_response(
                response,
                checks=CHECKS,
                headers=self.headers,
                transport_kwargs=kwargs,
                recorder=self.recorder,
            )
            self.check_model(case, response)
        except Exception as exc:
            curl = case.as_curl_command(headers=self.headers)
            failure = f"{type(exc).__name__}: {exc}"
            self.failures.append("\n".join([failure, "", "calls:", *self.calls, "", curl]))
            raise

    # --- the model ------------------------------------------------------------

    def read(self, path: str) -> Any:
        """A read outside the machine (not recorded), to see what a write left."""
        return CLIENT.get(path, headers=self.headers)

    def reads_back(self, contact: dict[str, Any], what: str) -> None:
        """A read right after a write shows what the write answered, and its history."""
        read = self.read(ONE_CONTACT.format(contact_id=contact["id"]))
        assert read.status_code == 200, f"{what}, then GET: {read.status_code}"
        assert read.json() == contact, f"{what}, then GET: {read.json()}"
        history = self.read(HISTORY.format(contact_id=contact["id"]))
        assert history.status_code == 200, f"{what}, then its history: {history.status_code}"
        self.check_history(contact, history.json(), f"{what}, then its history")

    def check_history(
        self,
        contact: dict[str, Any],
        body: dict[str, Any],
        what: str,
        query: dict[str, Any] | None = None,
    ) -> None:
        """One record per version, newest first (the page ``query`` asks for of them)."""
        limit = int((query or {}).get("limit", 50))
        offset = int((query or {}).get("offset", 0))
        versions = [record["version_after"] for record in body["data"]]
        expected = list(range(contact["version"], 0, -1))[offset : offset + limit]
        assert versions == expected, f"{what}: versions {versions}, not {expected}"
        assert body["total"] == contact["version"], f"{what}: total {body['total']}"
        assert {record["contact_id"] for record in body["data"]} <= {contact["id"]}, what

    def live(self, contact_id: str, status: int, what: str) -> dict[str, Any] | None:
        """The model's contact, after checking that ``status`` agrees with it existing."""
        known = self.model.contacts.get(contact_id)
        if 200 <= status < 300:
            assert known is not None, f"{what} answered {status} for a contact this team lacks"
        elif status == 404:
            assert known is None, f"{what} answered 404 for a live contact of this team"
        return known

    def check_contact(self, body: dict[str, Any], what: str) -> None:
        assert body["team_id"] == self.team_id, f"{what} showed another team's contact"
        company = body["company_id"]
        assert company is None or company in self.model.companies, f"{what}: unknown company"

    def check_model(self, case: schemathesis.Case, response: Response) -> None:
        method, path, status = case.method.upper(), case.operation.path, response.status_code
        what = f"{method} {case.formatted_path}"
        contact_id = (case.path_parameters or {}).get("contact_id")
        body: Any = response.json() if response.content else None
        if path == CONTACTS and method == "POST" and status == 201:
            assert body["version"] == 1, f"{what}: a new contact is version 1"
            assert body["id"] not in self.model.contacts
            assert body["id"] not in self.model.deleted
            self.check_contact(body, what)
            self.model.contacts[body["id"]] = body
            self.reads_back(body, what)
        elif path == UPSERT and method == "POST" and status in (200, 201):
            self.check_upserted(body, status == 201, what)
        elif path == BATCH_UPSERT and method == "POST" and status == 200:
            for item in body["data"]:
                if item["status"] == "failed":
                    assert item["contact_id"] is None, f"{what}: {item}"
                    continue
                read = self.read(ONE_CONTACT.format(contact_id=item["contact_id"]))
                assert read.status_code == 200, f"{what}: item {item['index']} not found"
                self.check_upserted(read.json(), item["status"] == "created", what)
        elif path == ONE_CONTACT and method == "GET":
            known = self.live(contact_id, status, what)
            if status == 200:
                assert body == known, f"{what} differs from the contact's last answer"
        elif path == ONE_CONTACT and method == "PATCH":
            self.check_patch(case, response, what)
        elif path == ONE_CONTACT and method == "DELETE":
            self.live(contact_id, status, what)
            if status == 204:
                del self.model.contacts[contact_id]
                self.model.deleted.add(contact_id)
                for after in (ONE_CONTACT, HISTORY):
                    again = self.read(after.format(contact_id=contact_id))
                    assert again.status_code == 404, f"{what}, then {after}: {again.status_code}"
        elif path == HISTORY and method == "GET":
            known = self.live(contact_id, status, what)
            if status == 200 and known is not None:
                self.check_history(known, body, what, case.query)
        elif path in (CONTACTS, ELIGIBLE) and method == "GET" and status == 200:
            for item in body["data"]:
                assert self.model.contacts.get(item["id"]) == item, f"{what} listed {item['id']}"
            if path == ELIGIBLE:
                for item in body["data"]:
                    assert not item["do_not_call"], f"{what}: {item['id']}"
                    assert item["phone"], f"{what}: {item['id']}"
                    assert item["lead_status"] not in NOT_CALLABLE, f"{what}: {item['id']}"
            else:
                self.check_list(case.query or {}, body, what)
        elif path == COMPANIES and method == "POST" and status == 201:
            assert body["team_id"] == self.team_id
            self.model.companies.add(body["id"])
        elif path == COMPANIES and method == "GET" and status == 200:
            listed = {item["id"] for item in body["data"]}
            assert listed <= self.model.companies, what
            narrowed = {"search", "limit", "offset"} & set(case.query or {})
            if not narrowed:
                assert listed == self.model.companies, what
            if "search" not in (case.query or {}):
                assert body["total"] == len(self.model.companies), what
        elif path == ONE_COMPANY:
            company_id = (case.path_parameters or {}).get("company_id")
            if 200 <= status < 300:
                assert company_id in self.model.companies, f"{what} answered {status}"
            elif status == 404:
                assert company_id not in self.model.companies, f"{what} answered 404"
            if method == "DELETE" and status == 204:
                self.model.companies.discard(company_id)

    def check_upserted(self, contact: dict[str, Any], created: bool, what: str) -> None:
        """A contact an upsert created (new, version 1) or matched (one of the model's)."""
        if created:
            assert contact["id"] not in self.model.contacts, f"{what}: created a known id"
            assert contact["id"] not in self.model.deleted, f"{what}: created a deleted id"
        else:
            before = self.live(contact["id"], 200, what)
            assert before is not None
            assert contact["version"] - before["version"] in (0, 1), f"{what}: {contact}"
        self.check_contact(contact, what)
        self.model.contacts[contact["id"]] = contact
        self.reads_back(contact, what)

    def check_list(self, query: dict[str, Any], body: dict[str, Any], what: str) -> None:
        """Unfiltered, or by company only: the page counts and slices every match."""
        filters = LIST_FILTERS & set(query)
        if filters - {"companyId"}:
            return
        company = query.get("companyId")
        matches = [
            contact
            for contact in self.model.contacts.values()
            if "companyId" not in query or contact["company_id"] == company
        ]
        assert body["total"] == len(matches), f"{what}: total {body['total']}, not {len(matches)}"
        expected = max(0, min(body["limit"], len(matches) - body["offset"]))
        assert len(body["data"]) == expected, f"{what}: {len(body['data'])} on the page"

    def check_patch(self, case: schemathesis.Case, response: Response, what: str) -> None:
        contact_id = (case.path_parameters or {})["contact_id"]
        status = response.status_code
        before = self.live(contact_id, status, what)
        expected = _expected_version(case)
        if before is None:
            return
        current = before["version"]
        if status == 412:
            body = response.json()
            assert body["current_version"] == current, f"{what}: {body}"
            assert response.headers["etag"] == [f'"{current}"'], what
            assert expected is not None, f"{what}: 412 without a version"
            assert expected != current, f"{what}: 412 at the current version"
        elif status == 200:
            after = response.json()
            assert expected is None or expected == current, f"{what} applied at {expected}"
            if after["version"] == current:
                assert after == before, f"{what}: a no-op changed the contact"
            else:
                assert after["version"] == current + 1, f"{what}: {current} -> {after['version']}"
                fixed = {"version", "updated_at"}
                changed = {k for k in after if k not in fixed and after[k] != before[k]}
                assert changed, f"{what}: a new version with nothing changed"
            self.check_contact(after, what)
            self.model.contacts[contact_id] = after
            self.reads_back(after, what)


@pytest.fixture
def workflow(pg_engine: Engine) -> Iterator[type[ApiWorkflow]]:
    previous = APP.state.engine
    APP.state.engine = pg_engine
    ApiWorkflow.engine = pg_engine
    ApiWorkflow.failures = []
    yield ApiWorkflow
    APP.state.engine = previous


def test_the_document_links_the_operations_a_client_chains() -> None:
    """The document's links resolve, and connect the flows of a client."""
    rules = {name for name in dir(ApiWorkflow) if "__" in name and not name.startswith("_")}
    contact_links = ("GetContact", "UpdateContact", "DeleteContact", "GetContactHistory")
    for source in ("POST_api_crm_contacts___201", "PATCH_api_crm_contacts_contact_id___200"):
        for link in (*contact_links, "ListTeamContacts", "ListCompanyContacts"):
            assert any(rule.startswith(f"{source}_{link}_") for rule in rules), (source, link)
    for link in ("ListCompanyContacts", "CreateContactInCompany", "ListTeamCompanies"):
        assert any(rule.startswith(f"POST_api_crm_companies___201_{link}_") for rule in rules)
    assert any("_NextEligiblePage_" in rule for rule in rules)


def test_call_sequences_keep_every_answer_consistent(workflow: type[ApiWorkflow]) -> None:
    try:
        workflow.run(
            settings=settings(
                max_examples=SCENARIOS,
                stateful_step_count=STEPS,
                deadline=None,
                # No shrinking: see below.
                phases=[Phase.reuse, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
        )
    except Flaky as exc:
        # Schemathesis decides at (true) random whether a step follows a link, so
        # Hypothesis cannot replay a failing sequence and reports only that: report
        # the failure as it was first seen instead.
        if not workflow.failures:
            raise
        raise AssertionError(workflow.failures[0]) from exc
