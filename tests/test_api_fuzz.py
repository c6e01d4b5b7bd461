"""Schemathesis over the app's own OpenAPI document: no input gives a 500, answers conform.

Stateless, every operation, a bounded number of examples so the suite stays fast;
``bench/fuzz_api.py`` runs the same checks with many more examples. The app is the
real one on PostgreSQL, called with a real team key; some generated requests name
a real contact (and a real company), so the write paths are fuzzed too, not only
the 404s of random ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from sqlalchemy import Engine

from contact_sync.accounts.teams import create_team, issue_api_key
from contact_sync.api import create_app
from contact_sync.contacts.companies import create_company
from contact_sync.contacts.store import create_contact
from contact_sync.db.engine import make_engine
from contact_sync.settings import Settings

# bench/fuzz_api.py raises this for a deeper run of the same test.
EXAMPLES = int(os.environ.get("CONTACT_SYNC_FUZZ_EXAMPLES", "20"))

# positive_data_acceptance and negative_data_rejection are left out on purpose:
# JSON Schema cannot say which phone numbers exist (phonenumbers), which names are
# IANA zones, or that a name must not be blank after trimming, so schema-valid
# data is rightly refused with 422 (and lenient inputs such as " Qualified " are
# rightly accepted). tests/test_api.py checks those answers one by one.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    ignored_auth,
    unsupported_method,
]

# The engine is swapped in per test (app.state.engine); loading the document
# needs no database.
# No rate limit: the fuzzer sends many requests a second with one key.
APP = create_app(
    Settings(database_url="sqlite://", api_rate_limit_per_second=0), engine=make_engine("sqlite://")
)


def _schema(
    generation: dict[str, object], phases: dict[str, object] | None = None
) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi(
        "/openapi.json",
        APP,
        config=schemathesis.Config.from_dict(
            {
                "generation": {"max-examples": EXAMPLES, **generation},
                # The coverage phase adds the boundary values of every parameter.
                "phases": phases or {"coverage": {"enabled": True}},
            }
        ),
    )


# Schemathesis cannot combine `given` (the real contact below) with the document's
# examples: those are sent on their own, by the next test.
SCHEMA = _schema({"mode": "all"}, {"examples": {"enabled": False}, "coverage": {"enabled": True}})
# Only the document's own examples (every field and parameter has one), as written;
# /healthz and /readyz take no input to exemplify.
DOCUMENTED = _schema(
    {"mode": "positive"},
    {"examples": {"enabled": True}, "coverage": {"enabled": False}, "fuzzing": {"enabled": False}},
).include(path_regex=r"^/api/")
# Valid query strings only, for the reads whose parameters the document describes
# exactly (NUL is refused in every text parameter, which the document leaves out).
READS = _schema({"mode": "positive", "allow-x00": False}).include(
    method="GET", path_regex=r"^/api/crm/(contacts|contacts/eligible|companies)$"
)
# Parameters of the eligible stream whose valid values JSON Schema cannot
# describe: an IANA zone name, a cursor this service issued, an instant whose
# local time exists in every zone (years 0001 and 9999 overflow).
UNDESCRIBED = ("defaultTimezone", "cursor", "at")


@dataclass(frozen=True)
class Target:
    """A team with a key, one contact and one company, on empty tables."""

    api_key: str
    contact_id: str
    company_id: str


@pytest.fixture
def target(pg_engine: Engine) -> Iterator[Target]:
    with pg_engine.begin() as conn:
        team = create_team(conn, name="Fuzz Team")
        key = issue_api_key(conn, team_id=team.id)
        company = create_company(conn, team_id=team.id, name="Fuzz Co")
        contact = create_contact(
            conn,
            team_id=team.id,
            data={"first_name": "Ada", "last_name": "Lovelace", "phone": "+12025550100"},
        )
    previous = APP.state.engine
    APP.state.engine = pg_engine
    yield Target(key.api_key, contact.id, company.id)
    APP.state.engine = previous


@SCHEMA.parametrize()
@SCHEMA.given(real_contact=st.booleans())
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_input_gives_a_server_error_and_every_answer_conforms(
    case: schemathesis.Case, real_contact: bool, target: Target
) -> None:
    if real_contact and case.path_parameters and "contact_id" in case.path_parameters:
        case.path_parameters["contact_id"] = target.contact_id
    case.call_and_validate(headers={"Authorization": f"Bearer {target.api_key}"}, checks=CHECKS)


@DOCUMENTED.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_documents_examples_give_no_server_error_and_every_answer_conforms(
    case: schemathesis.Case, target: Target
) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {target.api_key}"}, checks=CHECKS)


@READS.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_valid_query_string_of_the_reads_is_accepted(
    case: schemathesis.Case, target: Target
) -> None:
    for name in UNDESCRIBED:
        (case.query or {}).pop(name, None)
    case.call_and_validate(
        headers={"Authorization": f"Bearer {target.api_key}"},
        checks=[not_a_server_error, positive_data_acceptance, response_schema_conformance],
    )
