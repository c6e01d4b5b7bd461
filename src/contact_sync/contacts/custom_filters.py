"""The ``cf.`` filters as SQL, on PostgreSQL and SQLite (docs/design.md §13).

Each filter asks the typed side table ``custom_field_values``
(``contacts/field_values``) whether the contact has a value of the field's
type meeting it: the kinds the type reads (a number ``n``, a date ``d``, a
select any string, a multi_select's contains its elements ``e``...), so a
budget stored as the text ``"$7k"`` before the field was defined is no
number. Ranges compare ``num`` as numbers and ``txt`` (canonical dates and
UTC date-times) in byte order, which is their time order. The same
conditions run on both databases; only equality on a string longer than the
side table indexes reads ``custom_fields`` itself (JSONB containment on
PostgreSQL, ``json_extract`` on SQLite), row by row within the team.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Numeric,
    Select,
    Text,
    and_,
    case,
    cast,
    distinct,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from contact_sync.contacts.field_values import MAX_INDEXED, STRING_KINDS, string_kind
from contact_sync.db.tables import contacts, custom_field_values, teams
from contact_sync.fields.definitions import FieldDefinition
from contact_sync.fields.filters import PREFIX, CustomFilter, is_custom_parameter
from contact_sync.fields.store import definitions_for

# The JSON types a field's values have (PostgreSQL's jsonb_typeof / SQLite's json_type).
_PG_TYPES = {"number": ("number",), "integer": ("number",), "boolean": ("boolean",)}
_LITE_TYPES = {
    "number": ("integer", "real"),
    "integer": ("integer", "real"),
    "boolean": ("true", "false"),
}
_ARRAY = "multi_select"
# The side table's kinds (contacts/field_values) that hold a value of each type.
_SIDE_KINDS = {
    "number": ("n",),
    "integer": ("n",),
    "boolean": ("b",),
    "date": ("d",),
    "datetime": ("t",),
    "multi_select": ("a",),
}
# Canonical dates and date-times (fields/coerce): ISO text, UTC for date-times.
_PG_SHAPES = {
    "date": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    "datetime": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?\+00:00$",
}
_D = "[0-9]"
_LITE_SHAPES = {
    "date": f"{_D * 4}-{_D * 2}-{_D * 2}",
    "datetime": f"{_D * 4}-{_D * 2}-{_D * 2}T{_D * 2}:{_D * 2}:{_D * 2}*+00:00",
}
_COMPARE: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "gte": operator.ge,
    "gt": operator.gt,
    "lte": operator.le,
    "lt": operator.lt,
}


def filter_definitions(
    conn: Connection, team_id: str, names: Iterable[str]
) -> tuple[dict[str, FieldDefinition], str]:
    """The team's own definitions of the keys the ``cf.`` parameters ``names`` name, and the
    team's phone region: what ``ContactQuery.parse`` reads them against (one query, none
    without a ``cf.`` parameter; a second only when a phone field is named)."""
    keys = {name[len(PREFIX) :].split(".")[0] for name in names if is_custom_parameter(name)}
    if not keys:
        return {}, "US"
    definitions = definitions_for(conn, team_id=team_id, keys=keys)
    region = "US"
    if any(d.type == "phone" for d in definitions.values()):
        found = conn.execute(select(teams.c.default_region).where(teams.c.id == team_id)).scalar()
        region = found or region
    return definitions, region


def custom_conditions(
    filters: Iterable[CustomFilter], dialect: str, team_id: str
) -> list[ColumnElement[bool]]:
    """One WHERE condition per filter (they combine with AND) on the team's contacts.

    Each asks the side table ``custom_field_values`` (``contacts/field_values``)
    on both databases; only equality on a string too long for its index reads
    ``custom_fields`` itself.
    """
    document = _postgresql if dialect == "postgresql" else _sqlite
    return [document(item) if _too_long(item) else _side(item, team_id) for item in filters]


# The side table


def _too_long(item: CustomFilter) -> bool:
    return item.operator in ("eq", "in") and any(
        isinstance(value, str) and len(value) > MAX_INDEXED for value in item.values
    )


def _has(team_id: str, *conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """The contact has a side row of the team meeting ``conditions`` (``IS TRUE``).

    ``IS TRUE`` keeps PostgreSQL from turning the ``EXISTS`` into a join: it
    becomes a hashed subplan (the team's matches of the key, from an index-only
    scan, hashed once; each contact looked up in it), or a probe per contact
    when that is cheaper. As a join, the planner's estimate of the matches (every
    key shares the value columns, so it is often ten times too low) chose to
    fetch every match from the heap: 55 ms for 3,000 matches.
    """
    rows = custom_field_values.c
    found = exists(
        select(literal_column("1")).where(
            rows.team_id == team_id, rows.contact_id == contacts.c.id, *conditions
        )
    )
    return found.is_(true())


Conditions = tuple[ColumnElement[bool], ...]


def _wanted(item: CustomFilter) -> list[Any]:
    """The options a multi_select's ``eq`` asks for (the contact must have them all)."""
    return item.values[0] if isinstance(item.values[0], list) else [item.values[0]]


def _equal(item: CustomFilter) -> Conditions:
    rows = custom_field_values.c
    key = rows.key == item.key
    if item.type in ("number", "integer"):
        numbers = [literal(value, Numeric) for value in item.values]
        return key, rows.kind == "n", rows.num.in_(numbers)
    if item.type == "boolean":
        words = ["true" if value else "false" for value in item.values]
        return key, rows.kind == "b", rows.txt.in_(words)
    if item.type == _ARRAY:
        options = _wanted(item) if item.operator == "eq" else list(item.values)
        return key, rows.kind == "e", rows.txt.in_(options)
    kinds = sorted({string_kind(value) for value in item.values})
    return key, rows.kind.in_(kinds), rows.txt.in_(list(item.values))


def _matching(item: CustomFilter) -> Conditions:
    """The side rows that make a contact match (``exists=false``: those it must not have)."""
    rows = custom_field_values.c
    key = rows.key == item.key
    if item.operator == "exists":
        return key, rows.kind.in_(_SIDE_KINDS.get(item.type, STRING_KINDS))
    if item.operator in _COMPARE:
        compare = _COMPARE[item.operator]
        if item.type in ("number", "integer"):
            bound = cast(literal(item.values[0], Numeric), Numeric)
            return key, compare(rows.num, _bound(bound))
        kind = "d" if item.type == "date" else "t"
        text = cast(literal(item.values[0], Text), Text)
        return key, rows.kind == kind, compare(rows.txt, _bound(text))
    return _equal(item)


def _side(item: CustomFilter, team: str) -> ColumnElement[bool]:
    if item.operator == "exists" and not item.values[0]:
        return not_(_has(team, *_matching(item)))
    if item.type == _ARRAY and item.operator == "eq" and len(_wanted(item)) > 1:
        rows = custom_field_values.c
        key = rows.key == item.key
        return and_(*(_has(team, key, rows.kind == "e", rows.txt == o) for o in _wanted(item)))
    return _has(team, *_matching(item))


def count_alone(filters: Sequence[CustomFilter], team_id: str) -> Select[Any] | None:
    """The number of the team's contacts matching one ``cf.`` filter, read from the side
    table alone (an index-only count of the key's matches), when that is exact.

    It is for a query with no other condition than its team: the side table
    holds rows of existing contacts only, in their own team. Not for
    ``exists=false``, a multi_select holding several options, or a value too
    long for the index: ``None``, and the caller counts the contacts.
    """
    if len(filters) != 1 or _too_long(filters[0]):
        return None
    item = filters[0]
    if item.operator == "exists" and not item.values[0]:
        return None
    if item.type == _ARRAY and item.operator == "eq" and len(_wanted(item)) > 1:
        return None
    rows = custom_field_values.c
    found = func.count(distinct(rows.contact_id))
    return select(found).where(rows.team_id == team_id, *_matching(item))


def _bound(value: ColumnElement[Any]) -> Any:
    """A range's bound as a one-value subquery, which the planner does not look into.

    ``num`` and ``txt`` hold every key's values: a bound read against their
    histograms estimates a filter on one key an order of magnitude wrong (measured:
    691 rows for 5,936), and the plan then fetches every match to sort it. With
    the bound hidden the planner takes its default third, which leads it to walk
    the contacts in order.
    """
    return select(value).scalar_subquery()


# PostgreSQL


def _document() -> Any:
    return type_coerce(contacts.c.custom_fields, JSONB)


def _contains(key: str, value: Any) -> ColumnElement[bool]:
    # The jsonb_path_ops GIN index answers @> (containment) with a constant operand.
    return _document().contains({key: value})  # type: ignore[no-any-return]


def _pg_typed(item: CustomFilter) -> ColumnElement[bool]:
    value = _document()[item.key]
    kinds = _PG_TYPES.get(item.type, ("array",) if item.type == _ARRAY else ("string",))
    guard: ColumnElement[bool] = func.jsonb_typeof(value).in_(kinds)
    shape = _PG_SHAPES.get(item.type)
    if shape is not None:
        text = _document()[item.key].astext
        guard = and_(guard, text.op("~")(literal(shape)))
    return guard


def _pg_range(item: CustomFilter) -> ColumnElement[bool]:
    compare = _COMPARE[item.operator]
    guard = _pg_typed(item)
    if item.type in ("number", "integer"):
        number = case((guard, _document()[item.key].astext.cast(Numeric)), else_=None)
        return compare(number, literal(item.values[0], Numeric))
    text = case((guard, _document()[item.key].astext), else_=None).collate("C")
    return compare(text, literal(item.values[0]))


def _pg_value(item: CustomFilter, value: Any) -> ColumnElement[bool]:
    if item.type == _ARRAY:
        return _contains(item.key, value if isinstance(value, list) else [value])
    return _contains(item.key, value)


def _postgresql(item: CustomFilter) -> ColumnElement[bool]:
    if item.operator == "exists":
        guard = _pg_typed(item)
        return guard if item.values[0] else not_(func.coalesce(guard, false()))
    if item.operator in _COMPARE:
        return _pg_range(item)
    return or_(*(_pg_value(item, value) for value in item.values))


# SQLite


def _path(key: str) -> str:
    return f'$."{key}"'  # keys are slugs: no quote to escape


def _lite_typed(item: CustomFilter) -> ColumnElement[bool]:
    kinds = _LITE_TYPES.get(item.type, ("array",) if item.type == _ARRAY else ("text",))
    guard: ColumnElement[bool] = func.json_type(contacts.c.custom_fields, _path(item.key)).in_(
        kinds
    )
    shape = _LITE_SHAPES.get(item.type)
    if shape is not None:
        text = func.json_extract(contacts.c.custom_fields, _path(item.key))
        guard = and_(guard, text.op("GLOB")(literal(shape)))
    return guard


def _lite_has(item: CustomFilter, value: Any) -> ColumnElement[bool]:
    """A multi_select holds ``value``."""
    element = func.json_each(contacts.c.custom_fields, _path(item.key)).table_valued("value")
    return exists(select(literal_column("1")).select_from(element).where(element.c.value == value))


def _lite_value(item: CustomFilter, value: Any) -> ColumnElement[bool]:
    if item.type == _ARRAY:
        wanted = value if isinstance(value, list) else [value]
        return and_(*(_lite_has(item, option) for option in wanted))
    if item.type == "boolean":
        return func.json_type(contacts.c.custom_fields, _path(item.key)) == (
            "true" if value else "false"
        )
    return func.json_extract(contacts.c.custom_fields, _path(item.key)) == literal(value)


def _sqlite(item: CustomFilter) -> ColumnElement[bool]:
    guard = _lite_typed(item)
    if item.operator == "exists":
        return guard if item.values[0] else not_(func.coalesce(guard, false()))
    if item.operator in _COMPARE:
        extracted = func.json_extract(contacts.c.custom_fields, _path(item.key))
        return and_(guard, _COMPARE[item.operator](extracted, literal(item.values[0])))
    return and_(guard, or_(*(_lite_value(item, value) for value in item.values)))
