"""Each vocabulary has one definition, and whatever else spells it agrees with it.

The lead statuses live in ``lead_status.py``; the dead-letter reasons and the
event outcomes in ``events.py``. The scheduler's index (a migration, frozen as
written) and the SQL the code sends are checked against them here, and the
source is read for every reason and outcome it can emit.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text

from contact_sync.accounts.teams import Team
from contact_sync.api.dead_letter_routes import DeadLetterQuery
from contact_sync.calls.events import EVENT_OUTCOMES, REASONS
from contact_sync.contacts import lead_status
from contact_sync.contacts.query import EligibleQuery, list_eligible
from tests.factories import make_contact

# 10:00 in New York on a Thursday: the stream's window is open for +1 202 numbers.
WEEKDAY_MORNING = datetime(2026, 1, 15, 15, tzinfo=UTC)
SRC = Path(__file__).resolve().parents[1] / "src" / "contact_sync"
Params = dict[str, set[int | str]]  # per callable name, its typed parameters
_QUOTED = re.compile(r"'((?:[^']|'')*)'")


def _statuses_after(marker: str, sql: str) -> list[str]:
    """The quoted strings of ``sql`` after ``marker``, sorted: the statuses a predicate names."""
    assert marker in sql, sql
    tail = sql[sql.index(marker) :]
    return sorted(value.replace("''", "'") for value in _QUOTED.findall(tail))


def _index_definition(conn: Connection, name: str) -> str:
    if conn.dialect.name == "postgresql":
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
    else:
        query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
    definition: str = conn.execute(text(query), {"name": name}).scalar_one()
    return definition


def test_the_lead_status_rules_name_known_statuses() -> None:
    assert set(lead_status.STICKY) <= set(lead_status.KNOWN)
    assert set(lead_status.KNOWN) >= lead_status.SETTABLE_BY_CALLS
    assert {lead_status.IMPLICIT_FROM, lead_status.IMPLICIT_TO} <= set(lead_status.KNOWN)
    assert len(set(lead_status.KNOWN)) == len(lead_status.KNOWN)


def test_the_migrated_callable_index_leaves_out_exactly_the_sticky_statuses(
    engine: Engine,
) -> None:
    with engine.connect() as conn:
        definition = _index_definition(conn, "ix_contacts_callable")
    assert "do_not_call" in definition
    assert "phone IS NOT NULL" in definition
    assert _statuses_after("lead_status", definition) == sorted(lead_status.STICKY)


def _eligible_statement(engine: Engine, team_id: str) -> tuple[str, Any]:
    """The SQL and parameters ``list_eligible`` sends."""
    sent: list[tuple[str, Any]] = []

    def record(_conn: object, _cursor: object, statement: str, parameters: Any, *_: object) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as conn:
            list_eligible(conn, EligibleQuery(team_id=team_id, at=WEEKDAY_MORNING))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    # The statement that reads the page's rows (the others read the policy, the team's
    # places and the attempts).
    [select_sent] = [sent_one for sent_one in sent if "ORDER BY contacts.id" in sent_one[0]]
    return select_sent


def test_the_eligible_query_leaves_out_exactly_the_sticky_statuses(
    engine: Engine, team: Team
) -> None:
    make_contact(engine, team.id, phone="+12025551000")  # a place open at that time
    statement, _ = _eligible_statement(engine, team.id)
    assert _statuses_after("lead_status NOT IN", statement) == sorted(lead_status.STICKY)


def test_only_contacts_in_a_sticky_status_are_left_out_of_the_eligible_stream(
    engine: Engine, team: Team
) -> None:
    made = {
        status: make_contact(engine, team.id, phone=f"+1202555{1000 + n}", lead_status=status)
        for n, status in enumerate(lead_status.KNOWN)
    }
    with engine.connect() as conn:
        page = list_eligible(conn, EligibleQuery(team_id=team.id, at=WEEKDAY_MORNING))
    eligible = {contact.lead_status for contact in page.data}
    assert eligible == set(made) - set(lead_status.STICKY)


@pytest.fixture
def seqscan_off(pg_engine: Engine) -> Iterator[Connection]:
    with pg_engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))
        yield conn
        conn.rollback()


def test_postgresql_answers_the_eligible_query_from_the_callable_index(
    pg_engine: Engine, pg_team: Team, seqscan_off: Connection
) -> None:
    # The planner uses a partial index only when it can prove the query's
    # condition implies the index's: a status list that differs loses it.
    for n in range(5):
        make_contact(pg_engine, pg_team.id, phone=f"+1202555{2000 + n}")
    statement, parameters = _eligible_statement(pg_engine, pg_team.id)
    # Only the partial index gives the team's rows in id order: without a sort, the
    # planner must use it, and can only if the predicate implies the index's. (With
    # sorts allowed, a table other tests left dead rows in can make a bitmap scan of
    # another team_id index and a sort of five rows look cheaper.)
    seqscan_off.execute(text("SET enable_sort = off"))
    plan = seqscan_off.exec_driver_sql("EXPLAIN " + statement, parameters).scalars().all()
    assert any("ix_contacts_callable" in line for line in plan), "\n".join(plan)


# --- what the source emits ---------------------------------------------------------------


def _modules() -> Iterator[ast.Module]:
    for path in sorted(SRC.rglob("*.py")):
        if "migrations" not in path.parts:
            yield ast.parse(path.read_text(encoding="utf-8"), str(path))


def _names_in(annotation: ast.expr | None) -> set[str]:
    if annotation is None:
        return set()
    return {node.id for node in ast.walk(annotation) if isinstance(node, ast.Name)} | {
        node.attr for node in ast.walk(annotation) if isinstance(node, ast.Attribute)
    }


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> list[ast.arg]:
    """What a call of ``node`` binds: a function's arguments, a class's ``__init__``'s
    (without ``self``) or, for a dataclass, its fields as arguments."""
    if not isinstance(node, ast.ClassDef):
        return [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
    for statement in node.body:
        if isinstance(statement, ast.FunctionDef) and statement.name == "__init__":
            return _parameters(statement)[1:]
    return [
        ast.arg(statement.target.id, statement.annotation)
        for statement in node.body
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
    ]


def _typed_parameters(module: ast.Module, types: set[str]) -> Params:
    """Per function or class of ``module``, its parameters (by position and name) of ``types``."""
    found: Params = {}
    callables = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in ast.walk(module):
        if isinstance(node, callables) and node.name != "__init__":
            typed = found.setdefault(node.name, set())
            for index, arg in enumerate(_parameters(node)):
                if _names_in(arg.annotation) & types:
                    typed.update({index, arg.arg})
    return found


def _typed_callee(call: ast.Call, local: Params, anywhere: Params) -> set[int | str]:
    """The typed parameters of the called function: a module's own name is its own."""
    if isinstance(call.func, ast.Name):
        name = call.func.id
        return local[name] if name in local else anywhere.get(name, set())
    if isinstance(call.func, ast.Attribute):
        return anywhere.get(call.func.attr, set())
    return set()


def _constants(node: ast.expr) -> set[str]:
    """The string constants ``node`` can evaluate to (through conditional expressions)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _constants(node.body) | _constants(node.orelse)
    return set()


def _emitted(types: set[str], key: str) -> set[str]:
    """Every string literal the source passes where ``types`` is expected or under ``key``.

    Arguments of parameters annotated with ``types``, ``key=`` keywords, ``{key: ...}``
    entries (log records, rows), comparisons with a ``key`` column (``table.c.key``)
    and the values of dicts annotated with ``types``.
    """
    modules = list(_modules())
    local = [_typed_parameters(module, types) for module in modules]
    anywhere: Params = {}
    for names in local:
        for name, params in names.items():
            anywhere.setdefault(name, set()).update(params)
    found: set[str] = set()
    for module, own in zip(modules, local, strict=True):
        # Examples in the OpenAPI document show other vocabularies (a skip's reason).
        examples = {
            id(inner)
            for node in ast.walk(module)
            if isinstance(node, ast.keyword) and node.arg == "examples"
            for inner in ast.walk(node.value)
        }
        for node in ast.walk(module):
            if id(node) in examples:
                continue
            if isinstance(node, ast.Call):
                params = _typed_callee(node, own, anywhere)
                for index, arg in enumerate(node.args):
                    if index in params:
                        found |= _constants(arg)
                for keyword in node.keywords:
                    if keyword.arg == key or keyword.arg in params:
                        found |= _constants(keyword.value)
            elif isinstance(node, ast.Dict):
                for dict_key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(dict_key, ast.Constant) and dict_key.value == key:
                        found |= _constants(value)
            elif (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.value, ast.Dict)
                and _names_in(node.annotation) & types
            ):
                for value in node.value.values:
                    found |= _constants(value)
            elif isinstance(node, ast.Compare) and _names_in(node.left) == {"c", key}:
                for value in node.comparators:
                    found |= _constants(value)
    return found


def test_every_dead_letter_reason_the_code_emits_is_in_the_one_list() -> None:
    assert _emitted({"Reason"}, "reason") == set(REASONS)


def test_every_event_outcome_the_code_emits_is_in_the_one_list() -> None:
    emitted = _emitted({"EventOutcome", "OutcomeName"}, "outcome")
    assert emitted <= set(EVENT_OUTCOMES)
    assert {"applied", "duplicate", "dead_lettered"} <= emitted


def test_the_dead_letter_list_filters_by_the_one_list_of_reasons() -> None:
    schema = DeadLetterQuery.model_json_schema()["properties"]["reason"]
    [branch] = [b for b in schema["anyOf"] if "enum" in b]
    assert tuple(branch["enum"]) == REASONS


# --- eligibility reasons (docs/design.md §12) -------------------------------------------


def test_the_reason_codes_are_the_designs_and_each_is_emitted_where_it_is_defined() -> None:
    from contact_sync.api.schemas import ReasonOut
    from contact_sync.scheduling.eligibility import PERMANENT, REASON_CODES

    assert REASON_CODES == (
        "do_not_call",
        "no_phone",
        "status_closed",
        "outside_window",
        "day_not_allowed",
        "holiday",
        "jurisdiction_window",
        "jurisdiction_day",
        "jurisdiction_attempt_cap",
        "max_attempts_total",
        "max_attempts_per_day",
        "retry_after",
    )
    assert {"do_not_call", "no_phone", "status_closed", "max_attempts_total"} == PERMANENT
    source = ast.parse((SRC / "scheduling" / "eligibility.py").read_text(encoding="utf-8"))
    emitted = [
        node.args[0].value
        for node in ast.walk(source)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "Reason"
        and isinstance(node.args[0], ast.Constant)
    ]
    assert sorted(emitted) == sorted(REASON_CODES)  # each code made once, and no other
    schema = ReasonOut.model_json_schema()["properties"]["code"]
    assert schema["enum"] == list(REASON_CODES)
