"""The ``cf.`` filters of the contacts list and the eligible stream (docs/design.md §13).

Pure: ``cf.KEY=``, ``cf.KEY.in=``, ``cf.KEY.gte|gt|lte|lt=`` and
``cf.KEY.exists=`` parsed against the team's definitions. Values go through
the one coercion (``fields/coerce``), so ``cf.budget.gte=$5k`` means 5000
and ``cf.product=Solar panels`` means ``solar``; the SQL is built elsewhere
(``contacts/custom_filters``). Everything is bounded: a request names at
most ``MAX_FILTERS`` filters and an ``.in`` at most ``MAX_IN_VALUES`` values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from contact_sync.errors import ValidationFailed
from contact_sync.fields.coerce import InvalidValue, coerce
from contact_sync.fields.definitions import FieldDefinition
from contact_sync.storable import is_storable_text

PREFIX = "cf."
MAX_FILTERS = 10
MAX_IN_VALUES = 100
MAX_PARAMETER = 4000  # characters of one value: 100 options of 64 characters and commas fit
MAX_NAME = 80  # how much of a hostile parameter name a 422 repeats
Operator = Literal["eq", "in", "gte", "gt", "lte", "lt", "exists"]
RANGE_OPERATORS = frozenset({"gte", "gt", "lte", "lt"})
ORDERED_TYPES = frozenset({"number", "integer", "date", "datetime"})
_OPERATORS: frozenset[str] = frozenset({"in", "exists"}) | RANGE_OPERATORS


@dataclass(frozen=True)
class CustomFilter:
    """One ``cf.`` condition: the field's key and type, the operator, canonical values.

    ``values`` holds one value for ``eq`` and the ranges, the options for
    ``in``, and ``(True,)`` or ``(False,)`` for ``exists``. A multi_select's
    ``eq`` value is the list of options the contact must all have.
    """

    key: str
    type: str
    operator: Operator
    values: tuple[Any, ...]


def is_custom_parameter(name: str) -> bool:
    """Whether a query parameter is a ``cf.`` filter (the routes let these through)."""
    return name.startswith(PREFIX)


def _split(name: str) -> tuple[str, Operator]:
    parts = name[len(PREFIX) :].split(".")
    if len(parts) == 1 and parts[0]:
        return parts[0], "eq"
    if len(parts) == 2 and parts[0] and parts[1] in _OPERATORS:
        operator: Operator = parts[1]  # type: ignore[assignment]
        return parts[0], operator
    raise InvalidValue("Must be cf.KEY or cf.KEY.in|gte|gt|lte|lt|exists")


def _unbounded(definition: FieldDefinition) -> FieldDefinition:
    # A filter asks about stored values: min/max restrict writes, not questions.
    return replace(definition, minimum=None, maximum=None)


def _one(definition: FieldDefinition, text: str, region: str) -> Any:
    if definition.type == "multi_select":
        chosen = coerce(definition, [text], region=region)
        return chosen[0]
    return coerce(definition, text, region=region)


def _values(
    definition: FieldDefinition, operator: Operator, text: str, region: str
) -> tuple[Any, ...]:
    if operator == "exists":
        if text not in ("true", "false"):
            raise InvalidValue("Must be true or false")
        return (text == "true",)
    if operator in RANGE_OPERATORS and definition.type not in ORDERED_TYPES:
        raise InvalidValue(f"A {definition.type} field has no order: use = or .in")
    if operator == "in":
        items = [item for item in text.split(",") if item.strip()]
        if not items or len(items) > MAX_IN_VALUES:
            raise InvalidValue(f"Must list 1 to {MAX_IN_VALUES} comma-separated values")
        return tuple(dict.fromkeys(_one(definition, item, region) for item in items))
    return (coerce(definition, text, region=region),)


def _filter(
    name: str, given: str | Sequence[str], definitions: Mapping[str, FieldDefinition], region: str
) -> CustomFilter:
    key, operator = _split(name)
    definition = definitions.get(key)
    if definition is None:
        raise InvalidValue("No such custom field is defined for this team")
    if isinstance(given, str):  # Python callers may give one value as it is
        given = [given]
    if len(given) != 1:
        raise InvalidValue("Must be given once")
    text = given[0]
    if len(text) > MAX_PARAMETER:
        raise InvalidValue(f"Must be at most {MAX_PARAMETER} characters")
    if not is_storable_text(text):
        raise InvalidValue("Must be valid Unicode text without NUL characters")
    values = _values(_unbounded(definition), operator, text, region)
    return CustomFilter(key, definition.type, operator, values)


def parse_custom_filters(
    parameters: Mapping[str, str | Sequence[str]],
    definitions: Mapping[str, FieldDefinition],
    *,
    region: str = "US",
) -> tuple[CustomFilter, ...]:
    """The ``cf.`` parameters (name to the values given, or one value) as filters, or
    ``ValidationFailed`` naming each bad parameter as sent (``cf.KEY`` or ``cf.KEY.op``).

    ``definitions`` are the team's own: another team's are never passed in.
    """
    names = [name for name in parameters if is_custom_parameter(name)]
    if len(names) > MAX_FILTERS:
        raise ValidationFailed({"cf": f"At most {MAX_FILTERS} cf. filters per request"})
    found: list[CustomFilter] = []
    problems: dict[str, str] = {}
    for name in names:
        shown = name[:MAX_NAME] if is_storable_text(name) else "cf"
        try:
            found.append(_filter(name, parameters[name], definitions, region))
        except InvalidValue as exc:
            problems[shown] = str(exc)
    if problems:
        raise ValidationFailed(problems)
    return tuple(found)
