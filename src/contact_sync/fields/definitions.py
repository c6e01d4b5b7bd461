"""Custom-field definitions: what a team says its fields are (docs/design.md §13).

Pure: the shape of a definition and the validation of the bodies that create
and change one. Every part is bounded (options, aliases, labels, pattern),
so a definition stays small enough to load for every batch of events.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from contact_sync.errors import ContactSyncError, ValidationFailed
from contact_sync.fields.patterns import UnsafePattern, check_pattern
from contact_sync.storable import MAX_INTEGER, MIN_INTEGER, is_storable_text

FieldType = Literal[
    "text",
    "number",
    "integer",
    "boolean",
    "date",
    "datetime",
    "select",
    "multi_select",
    "email",
    "phone",
    "url",
]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
CHOICE_TYPES = frozenset({"select", "multi_select"})
NUMERIC_TYPES = frozenset({"number", "integer"})
MAX_DEFINITIONS = 100  # per team
MAX_OPTIONS = 200
MAX_ALIASES = 20
MAX_LABEL = 100
MAX_DESCRIPTION = 1000
MAX_OPTION_VALUE = 64
# ``GET /custom-fields/schema`` is the extraction schema, so no field may be called that.
RESERVED_KEYS = frozenset({"schema"})
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
_NAMES = {
    "key": "key",
    "label": "label",
    "type": "type",
    "description": "description",
    "options": "options",
    "min": "min",
    "max": "max",
    "pattern": "pattern",
    "aiExtractable": "ai_extractable",
    "ai_extractable": "ai_extractable",
}
PATCHABLE = frozenset(
    {"label", "description", "options", "min", "max", "pattern", "ai_extractable"}
)


class TypeChange(ContactSyncError):
    """A change of a defined field's type (409): stored values would silently change meaning."""


class AlreadyDefined(ContactSyncError):
    """A ``POST`` of a key the team has defined already (409)."""


def match_form(text: str) -> str:
    """How options are compared: case-insensitive, runs of spaces as one, trimmed."""
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class Option:
    """One choice of a select: its stored value, its label and other words for it."""

    value: str
    label: str
    aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The API's form."""
        return {"value": self.value, "label": self.label, "aliases": list(self.aliases)}


@dataclass(frozen=True)
class FieldDefinition:
    """A defined custom field: its type and the constraints its values meet."""

    key: str
    label: str
    type: FieldType
    description: str | None = None
    options: tuple[Option, ...] = ()
    minimum: int | float | None = None
    maximum: int | float | None = None
    pattern: str | None = None
    ai_extractable: bool = True
    # Built once per definition (a batch loads each once), not per value: each accepted
    # word in match form to its option's value, and each value's position.
    words: Mapping[str, str] = field(init=False, repr=False, compare=False, hash=False)
    positions: Mapping[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "words", _choices(self.options))
        positions = {option.value: index for index, option in enumerate(self.options)}
        object.__setattr__(self, "positions", positions)

    def to_dict(self) -> dict[str, Any]:
        """The API's form (snake_case)."""
        return {
            "key": self.key,
            "label": self.label,
            "type": self.type,
            "description": self.description,
            "options": [o.to_dict() for o in self.options] if self.type in CHOICE_TYPES else None,
            "min": self.minimum,
            "max": self.maximum,
            "pattern": self.pattern,
            "ai_extractable": self.ai_extractable,
        }


def _choices(options: tuple[Option, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for option in options:
        for word in (option.value, option.label, *option.aliases):
            found.setdefault(match_form(word), option.value)
    return found


def _text(value: Any, name: str, limit: int, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValidationFailed({name: "Must be a string"})
    if not is_storable_text(value):
        raise ValidationFailed({name: "Must be valid Unicode text without NUL characters"})
    text: str = value.strip()
    if not text:
        if required:
            raise ValidationFailed({name: "Must not be empty"})
        return None
    if len(text) > limit:
        raise ValidationFailed({name: f"Must be at most {limit} characters"})
    return text


def check_key(value: Any) -> str:
    """A definition's key: the custom-field slug of docs/design.md §2, not a reserved word."""
    if not isinstance(value, str) or not _KEY.match(value):
        raise ValidationFailed({"key": "Key must be a slug of at most 64 characters"})
    if value in RESERVED_KEYS:
        raise ValidationFailed({"key": f"Key {value!r} is reserved"})
    return value


def _option(item: Any, index: int) -> Option:
    name = f"options.{index}"
    if not isinstance(item, dict):
        raise ValidationFailed({name: "Must be an object with value, label and aliases"})
    unknown = set(item) - {"value", "label", "aliases"}
    if unknown:
        raise ValidationFailed({f"{name}.{sorted(unknown)[0][:64]}": "Unknown field"})
    value = _text(item.get("value"), f"{name}.value", MAX_OPTION_VALUE)
    assert value is not None
    label = _text(item.get("label", value), f"{name}.label", MAX_LABEL) or value
    raw_aliases = item.get("aliases", [])
    if raw_aliases is None:
        raw_aliases = []
    if not isinstance(raw_aliases, list) or len(raw_aliases) > MAX_ALIASES:
        raise ValidationFailed(
            {f"{name}.aliases": f"Must be an array of at most {MAX_ALIASES} strings"}
        )
    aliases = [_text(a, f"{name}.aliases", MAX_LABEL) for a in raw_aliases]
    return Option(value, label, tuple(dict.fromkeys(a for a in aliases if a)))


def parse_options(value: Any) -> tuple[Option, ...]:
    """A select's options: 1 to 200, no word (value, label, alias) naming two of them."""
    if not isinstance(value, list) or not value:
        raise ValidationFailed({"options": "A select needs an array of 1 or more options"})
    if len(value) > MAX_OPTIONS:
        raise ValidationFailed({"options": f"At most {MAX_OPTIONS} options"})
    options = tuple(_option(item, index) for index, item in enumerate(value))
    owner: dict[str, str] = {}
    for option in options:
        for word in dict.fromkeys(
            match_form(w) for w in (option.value, option.label, *option.aliases)
        ):
            if owner.setdefault(word, option.value) != option.value:
                raise ValidationFailed(
                    {
                        "options": f"{word[:64]!r} names two options ({owner[word]!r} and "
                        f"{option.value!r})"
                    }
                )
    return options


def _bound(value: Any, name: str, kind: str) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed({name: "Must be a number"})
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationFailed({name: "Must be a finite number"})
    if isinstance(value, int) and not MIN_INTEGER <= value <= MAX_INTEGER:
        raise ValidationFailed({name: "Must lie between -2^63 and 2^63-1"})
    if kind == "integer":
        if isinstance(value, float) and not value.is_integer():
            raise ValidationFailed({name: "Must be a whole number for an integer field"})
        return int(value)
    return value


def _renamed(data: Any) -> dict[str, Any]:
    """The body with snake_case names; an unknown or doubled name is 422."""
    if not isinstance(data, dict):
        raise ValidationFailed({"body": "Must be a JSON object"})
    body: dict[str, Any] = {}
    for name, value in data.items():
        snake = _NAMES.get(name)
        if snake is None:
            raise ValidationFailed({str(name)[:64]: "Unknown field"})
        if snake in body:
            raise ValidationFailed({snake: "Must be given once"})
        body[snake] = value
    return body


def _checked(definition: FieldDefinition, given: Mapping[str, Any]) -> FieldDefinition:
    """Each constraint fits the type: options for selects, min/max for numbers, pattern for text."""
    kind = definition.type
    if kind not in CHOICE_TYPES and given.get("options") is not None:
        raise ValidationFailed({"options": f"A {kind} field takes no options"})
    if kind not in NUMERIC_TYPES:
        for name in ("min", "max"):
            if given.get(name) is not None:
                raise ValidationFailed({name: f"A {kind} field takes no {name}"})
    if kind != "text" and given.get("pattern") is not None:
        raise ValidationFailed({"pattern": f"A {kind} field takes no pattern"})
    low, high = definition.minimum, definition.maximum
    if low is not None and high is not None and low > high:
        raise ValidationFailed({"min": "Must not be greater than max"})
    return definition


def _pattern(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return check_pattern(value)
    except UnsafePattern as exc:
        raise ValidationFailed({"pattern": str(exc)}) from None


def _ai(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationFailed({"ai_extractable": "Must be true or false"})
    return value


def parse_definition(data: Any) -> FieldDefinition:
    """The body of ``POST /custom-fields`` as a definition, or ``ValidationFailed``."""
    body = _renamed(data)
    missing = {name: "Field required" for name in ("key", "label", "type") if name not in body}
    if missing:
        raise ValidationFailed(missing)
    kind = body["type"]
    if kind not in FIELD_TYPES:
        raise ValidationFailed({"type": "Type must be one of " + ", ".join(FIELD_TYPES)})
    label = _text(body["label"], "label", MAX_LABEL)
    assert label is not None
    definition = FieldDefinition(
        key=check_key(body["key"]),
        label=label,
        type=kind,
        description=_text(body.get("description"), "description", MAX_DESCRIPTION, required=False),
        options=parse_options(body.get("options")) if kind in CHOICE_TYPES else (),
        minimum=_bound(body.get("min"), "min", kind),
        maximum=_bound(body.get("max"), "max", kind),
        pattern=_pattern(body.get("pattern")),
        ai_extractable=_ai(body.get("ai_extractable", True)),
    )
    return _checked(definition, body)


def _kept_options(current: FieldDefinition, options: tuple[Option, ...]) -> tuple[Option, ...]:
    """New options must keep every current value: stored values must keep naming one."""
    values = {o.value for o in options}
    for option in current.options:
        if option.value not in values:
            raise ValidationFailed(
                {"options": f"Option {option.value!r} cannot be removed (values may use it)"}
            )
    return options


def apply_patch(current: FieldDefinition, data: Any) -> FieldDefinition:
    """``current`` changed by a ``PATCH`` body; a type change is ``TypeChange``."""
    body = _renamed(data)
    if "type" in body and body["type"] != current.type:
        raise TypeChange(f"The type of {current.key!r} cannot change (it is {current.type})")
    if "key" in body and body["key"] != current.key:
        raise ValidationFailed({"key": "The key cannot change"})
    changes: dict[str, Any] = {}
    if "label" in body:
        changes["label"] = _text(body["label"], "label", MAX_LABEL)
    if "description" in body:
        changes["description"] = _text(
            body["description"], "description", MAX_DESCRIPTION, required=False
        )
    if "options" in body and current.type in CHOICE_TYPES:
        changes["options"] = _kept_options(current, parse_options(body["options"]))
    for name, attribute in (("min", "minimum"), ("max", "maximum")):
        if name in body:
            changes[attribute] = _bound(body[name], name, current.type)
    if "pattern" in body:
        changes["pattern"] = _pattern(body["pattern"])
    if "ai_extractable" in body:
        changes["ai_extractable"] = _ai(body["ai_extractable"])
    return _checked(replace(current, **changes), body)


def spec_json(definition: FieldDefinition) -> dict[str, Any]:
    """The stored ``spec`` column: the constraints, exact (JSON keeps a 64-bit bound whole)."""
    return {
        "options": [o.to_dict() for o in definition.options],
        "min": definition.minimum,
        "max": definition.maximum,
        "pattern": definition.pattern,
    }


def definition_from_stored(values: Mapping[Any, Any]) -> FieldDefinition:
    """A stored row's values as a definition (they were validated on the way in)."""
    spec = values["spec"] or {}
    return FieldDefinition(
        key=values["key"],
        label=values["label"],
        type=values["type"],
        description=values["description"],
        options=tuple(
            Option(o["value"], o["label"], tuple(o.get("aliases", ())))
            for o in spec.get("options") or ()
        ),
        minimum=spec.get("min"),
        maximum=spec.get("max"),
        pattern=spec.get("pattern"),
        ai_extractable=bool(values["ai_extractable"]),
    )
