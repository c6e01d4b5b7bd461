"""The read module: the contacts list and the scheduler's eligible stream.

Both the HTTP API and the campaign scheduler use these objects, so the
filters mean the same everywhere. Every query is scoped to one team.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from functools import cached_property
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel
from sqlalchemy import (
    Connection,
    Select,
    String,
    Text,
    any_,
    bindparam,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql.elements import ColumnElement

from contact_sync.clock import utcnow
from contact_sync.contacts.custom_filters import count_alone, custom_conditions
from contact_sync.contacts.lead_status import STICKY
from contact_sync.contacts.model import Contact, field_errors, iana_timezones, normalise_lead_status
from contact_sync.contacts.phones import search_digits
from contact_sync.contacts.store import (
    CONTACT_COLUMNS,
    contact_from_json,
    contacts_from_rows,
    contacts_json,
)
from contact_sync.contacts.stream_sql import (
    Shape,
    contact_document,
    eligible_statement,
    places_parameter,
    shape_parameters,
)
from contact_sync.db.engine import json_text
from contact_sync.db.tables import contacts
from contact_sync.errors import ValidationFailed
from contact_sync.fields.definitions import FieldDefinition
from contact_sync.fields.filters import CustomFilter, is_custom_parameter, parse_custom_filters
from contact_sync.scheduling.check import attempts_of
from contact_sync.scheduling.eligibility import (
    NO_ATTEMPTS,
    Moment,
    OpenPlace,
    rules_for,
    walk_moment,
)
from contact_sync.scheduling.policies import load_policy
from contact_sync.storable import is_unicode

# The contacts list's orders: the default (newest first) is listed first.
SORTS = tuple(
    f"{sign}{key}" for key in ("created_at", "updated_at", "last_name") for sign in ("-", "")
)


def _status(value: str | None) -> str | None:
    return None if value is None else normalise_lead_status(value)


def _no_nul(value: str | None) -> str | None:
    # PostgreSQL text cannot hold U+0000 and no database a lone surrogate:
    # reject them as bad input, not a 500.
    if value is not None and "\x00" in value:
        raise ValueError("Must not contain NUL characters")
    if value is not None and not is_unicode(value):
        raise ValueError("Must be valid Unicode text")
    return value


class _Query(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    # The ``cf.`` filters (docs/design.md §13), parsed against the team's definitions.
    _custom: tuple[CustomFilter, ...] = PrivateAttr(default=())

    @property
    def custom_filters(self) -> tuple[CustomFilter, ...]:
        """The ``cf.`` filters, combined with the others by AND."""
        return self._custom

    @classmethod
    def parse(
        cls,
        data: dict[str, Any],
        *,
        definitions: dict[str, FieldDefinition] | None = None,
        region: str = "US",
        custom: tuple[CustomFilter, ...] = (),
    ) -> Any:
        """Validate, raising ``ValidationFailed`` naming each bad parameter.

        ``cf.`` parameters (name to the list of values given) are read against
        ``definitions``, the team's own; or ``custom`` gives them parsed already.
        """
        plain = {k: v for k, v in data.items() if not is_custom_parameter(k)}
        named = {k: v for k, v in data.items() if is_custom_parameter(k)}
        problems: dict[str, str] = {}
        try:
            query = cls.model_validate(plain)
        except ValidationError as exc:
            problems = _query_errors(exc)
        if named:
            try:
                custom = parse_custom_filters(named, definitions or {}, region=region)
            except ValidationFailed as exc:
                problems |= exc.details
        if problems:
            raise ValidationFailed(problems)
        query._custom = custom
        return query


def _query_errors(exc: ValidationError) -> dict[str, str]:
    details = field_errors(exc)
    return {_SNAKE.get(key, key): message for key, message in details.items()}


class ContactQuery(_Query):
    """Filters of the contacts list; unset filters match everything."""

    team_id: str = Field(
        min_length=1,
        max_length=64,
        description="The key's own team (the default); another is 403.",
        examples=["0193a5c4-7e2b-7c41-9a3e-5d8f2b1c6e70"],
    )
    company_id: str | None = Field(
        default=None,
        max_length=64,
        description="Only the contacts of this company.",
        examples=["0193a5c5-3b81-7e90-a4d2-6f1e8c3b5d27"],
    )
    search: str | None = Field(
        default=None,
        max_length=200,
        description="A case-insensitive substring of the full name or email, or digits of a phone.",
        examples=["lovelace"],
    )
    lead_status: Annotated[str | None, AfterValidator(_status)] = Field(
        default=None, description="Only contacts with this status.", examples=["qualified"]
    )
    do_not_call: StrictBool | None = Field(
        default=None,
        description="Only contacts with (`true`) or without the flag.",
        examples=[False],
    )
    has_phone: StrictBool | None = Field(
        default=None, description="Only contacts with (`true`) or without a phone.", examples=[True]
    )
    tag: tuple[str, ...] = Field(
        default=(),
        max_length=20,
        description="Repeatable: only contacts that have every tag given (exact match).",
        examples=[["vip"]],
    )
    sort: str = Field(
        default="-created_at",
        description="`created_at`, `updated_at` or `last_name`, with `-` "
        "for descending; ties are ordered by `id`.",
        examples=["-updated_at"],
        json_schema_extra={"enum": list(SORTS)},
    )
    limit: int = Field(
        default=50, ge=1, le=500, description="The page size, 1 to 500.", examples=[50]
    )
    offset: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="How many matches to skip (at most 10,000,000).",
        examples=[0],
    )

    @field_validator("tag", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            for tag in value:
                if not isinstance(tag, str) or not tag.strip() or len(tag.strip()) > 64:
                    raise ValueError("Each tag must be 1 to 64 characters")
                _no_nul(tag)
            return tuple(dict.fromkeys(tag.strip() for tag in value))
        return value

    @field_validator("sort")
    @classmethod
    def _sort(cls, value: str) -> str:
        if value not in SORTS:
            raise ValueError(f"Must be one of {', '.join(SORTS)}")
        return value

    @field_validator("search")
    @classmethod
    def _strip_search(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("Search must not contain NUL characters")
        _no_nul(value)
        return value.strip() or None if value is not None else None

    @field_validator("team_id", "company_id")
    @classmethod
    def _reject_nul(cls, value: str | None) -> str | None:
        return _no_nul(value)


@dataclass(frozen=True)
class ContactPage:
    """One page of the list and the count of all matches before pagination."""

    data: list[Contact]
    total: int
    limit: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        """The API's ``{data, total, limit, offset}``."""
        return {
            "data": [c.model_dump(mode="json") for c in self.data],
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
        }


def _search_condition(text: str) -> ColumnElement[bool]:
    needle = text.lower()
    # Literal ' ' and '' (not bound parameters) keep these expressions equal to
    # the trigram index's, also under psycopg's generic prepared plans.
    space: ColumnElement[str] = literal_column("' '")
    empty: ColumnElement[str] = literal_column("''")
    full_name = func.lower(contacts.c.first_name + space + contacts.c.last_name)
    email = func.lower(func.coalesce(contacts.c.email, empty))
    # autoescape makes % and _ in the input literal characters.
    conditions = [
        full_name.contains(needle, autoescape=True),
        email.contains(needle, autoescape=True),
    ]
    digits = search_digits(text)
    if digits:
        conditions += [
            func.coalesce(contacts.c.phone, empty).contains(digits, autoescape=True),
            func.coalesce(contacts.c.phone_secondary, empty).contains(digits, autoescape=True),
        ]
    return or_(*conditions)


def _has_tag(tag: str, dialect: str) -> ColumnElement[bool]:
    """The contact's tags include ``tag`` (JSONB containment on PostgreSQL, else json_each)."""
    if dialect == "postgresql":
        return type_coerce(contacts.c.tags, JSONB).contains([tag])
    element = func.json_each(contacts.c.tags).table_valued("value")
    return exists(select(literal_column("1")).select_from(element).where(element.c.value == tag))


def _filters(query: ContactQuery, dialect: str) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [contacts.c.team_id == query.team_id]
    where.extend(_has_tag(tag, dialect) for tag in query.tag)
    if query.company_id is not None:
        where.append(contacts.c.company_id == query.company_id)
    if query.lead_status is not None:
        where.append(contacts.c.lead_status == query.lead_status)
    if query.do_not_call is not None:
        where.append(contacts.c.do_not_call.is_(query.do_not_call))
    if query.has_phone is not None:
        where.append(
            contacts.c.phone.is_not(None) if query.has_phone else contacts.c.phone.is_(None)
        )
    if query.search:
        where.append(_search_condition(query.search))
    where.extend(custom_conditions(query.custom_filters, dialect, query.team_id))
    return where


def _order(sort: str) -> tuple[ColumnElement[Any], ...]:
    """The ``sort`` as ORDER BY terms, always ending in ``id`` so that pages never overlap."""
    key = sort.removeprefix("-")
    column: ColumnElement[Any] = (
        func.lower(contacts.c.last_name) if key == "last_name" else contacts.c[key]
    )
    if sort.startswith("-"):
        return (column.desc(), contacts.c.id.desc())
    return (column.asc(), contacts.c.id.asc())


def list_contacts(conn: Connection, query: ContactQuery) -> ContactPage:
    """One page of the team's contacts in ``query.sort`` order, with the exact total."""
    where = _filters(query, conn.dialect.name)
    order = _order(query.sort)
    page: Select[Any]
    if query.custom_filters:
        return _custom_page(conn, query, where, order)
    if query.offset > 0:
        # Deferred join: skip rows in an index-only scan of the keys, then read
        # only the page's rows (an offset of 5,000 otherwise reads 5,050 rows).
        keys = (
            select(contacts.c.id)
            .where(*where)
            .order_by(*order)
            .limit(query.limit)
            .offset(query.offset)
            .subquery("page_keys")
        )
        page = (
            select(*CONTACT_COLUMNS)
            .join_from(keys, contacts, contacts.c.id == keys.c.id)
            .order_by(*order)
        )
    else:
        page = select(*CONTACT_COLUMNS).where(*where).order_by(*order).limit(query.limit)
    rows = conn.execute(page).all()
    if query.offset == 0 and len(rows) < query.limit:
        total = len(rows)  # the page holds every match: no count needed
    else:
        total = conn.execute(select(func.count()).select_from(contacts).where(*where)).scalar_one()
    return ContactPage(contacts_from_rows(rows), total, query.limit, query.offset)


def _custom_page(
    conn: Connection,
    query: ContactQuery,
    where: list[ColumnElement[bool]],
    order: tuple[ColumnElement[Any], ...],
) -> ContactPage:
    """A page with ``cf.`` filters: its keys, then its rows, then the total.

    The filters look each of the team's keys up in their matches, hashed once
    from the side table (``contacts/custom_filters``), walking the keys in the
    page's order by an index-only scan that stops at the page's end; only the
    page's rows are read from the table. A lone ``cf.`` filter is counted from
    the side table alone; any other query counts the team's keys that match.
    """
    keys = select(contacts.c.id).where(*where).order_by(*order)
    ids = list(conn.execute(keys.limit(query.limit).offset(query.offset)).scalars())
    rows: list[Any] = []
    if ids:
        page = select(*CONTACT_COLUMNS).where(contacts.c.id.in_(ids)).order_by(*order)
        rows = list(conn.execute(page).all())
    if query.offset == 0 and len(ids) < query.limit:
        return ContactPage(contacts_from_rows(rows), len(ids), query.limit, query.offset)
    counting = count_alone(query.custom_filters, query.team_id) if _only_custom(query) else None
    if counting is None:
        counting = select(func.count()).select_from(contacts).where(*where)
    total = conn.execute(counting).scalar_one()
    return ContactPage(contacts_from_rows(rows), total, query.limit, query.offset)


def _only_custom(query: ContactQuery) -> bool:
    """No condition but the team and the ``cf.`` filters."""
    others = (query.company_id, query.search, query.lead_status)
    flags = (query.do_not_call, query.has_phone)
    return all(v is None for v in (*others, *flags)) and not query.tag


class HistoryQuery(_Query):
    """A page of a contact's history."""

    limit: int = Field(
        default=50, ge=1, le=500, description="The page size, 1 to 500.", examples=[50]
    )
    offset: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="How many matches to skip (at most 10,000,000).",
        examples=[0],
    )


class CompanyQuery(_Query):
    """Filters of the companies list."""

    team_id: str = Field(
        min_length=1,
        max_length=64,
        description="The key's own team (the default); another is 403.",
        examples=["0193a5c4-7e2b-7c41-9a3e-5d8f2b1c6e70"],
    )
    search: str | None = Field(
        default=None,
        max_length=200,
        description="A case-insensitive substring of the name.",
        examples=["solar"],
    )
    limit: int = Field(
        default=50, ge=1, le=500, description="The page size, 1 to 500.", examples=[50]
    )
    offset: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="How many matches to skip (at most 10,000,000).",
        examples=[0],
    )

    @field_validator("team_id", "search")
    @classmethod
    def _reject_nul(cls, value: str | None) -> str | None:
        return _no_nul(value)


def _clock(value: Any) -> Any:
    if isinstance(value, str):
        try:
            hours, minutes = value.split(":")
            if len(hours) != 2 or len(minutes) != 2:
                raise ValueError
            return time(int(hours), int(minutes))
        except ValueError:
            raise ValueError("Must be a time of day as HH:MM") from None
    return value


def _zone(value: str) -> str:
    if value not in _all_timezones():
        raise ValueError("Must be a valid IANA timezone such as America/New_York")
    return value


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("Must include a UTC offset, such as 2026-11-20T15:00:00Z")
    if value is not None and not 1900 <= value.year <= 9000:
        # Converting a time near year 1 or 9999 to another zone overflows.
        raise ValueError("Must be a time between the years 1900 and 9000")
    return value


class EligibleQuery(_Query):
    """The scheduler's question: whom of this team may we call at ``at`` (default: now)?"""

    team_id: str = Field(
        min_length=1,
        max_length=64,
        description="The key's own team (the default); another is 403.",
        examples=["0193a5c4-7e2b-7c41-9a3e-5d8f2b1c6e70"],
    )
    at: Annotated[datetime | None, AfterValidator(_aware)] = Field(
        default=None,
        description="The moment to ask about, with a UTC offset. Default: the current time "
        "(or the `at` of the walk the `cursor` continues).",
        examples=["2026-11-20T15:00:00Z"],
    )
    window_start: time | None = Field(
        default=None,
        description="Overrides the start of the team policy's window for this query only, in "
        "each contact's local time (HH:MM); still clamped to 08:00-21:00.",
        examples=["09:00"],
    )
    window_end: time | None = Field(
        default=None,
        description="Overrides the end of the team policy's window for this query only (HH:MM, "
        "exclusive); a start later than the end spans midnight.",
        examples=["17:00"],
    )
    default_timezone: Annotated[str | None, AfterValidator(_zone)] = Field(
        default=None,
        description="Overrides the policy's IANA zone for contacts that have none and whose "
        "number names none, for this query only.",
        examples=["America/Chicago"],
    )
    limit: int = Field(
        default=100, ge=1, le=1000, description="The page size, 1 to 1000.", examples=[100]
    )
    cursor: str | None = Field(
        default=None,
        max_length=300,
        description="The previous slice's `next_cursor`, to continue the stream at its `at`.",
        examples=["MDE5M2E1YzYtMWY0MC03ZDJhfDIwMjYtMTEtMjBUMTU6MDA6MDBa"],
    )

    @field_validator("window_start", "window_end", mode="before")
    @classmethod
    def _parse_clock(cls, value: Any) -> Any:
        return _clock(value)

    @field_validator("team_id")
    @classmethod
    def _reject_nul(cls, value: str | None) -> str | None:
        return _no_nul(value)


class EligibilityQuery(_Query):
    """One contact's eligibility at ``at`` (default: now)."""

    at: Annotated[datetime | None, AfterValidator(_aware)] = Field(
        default=None,
        description="The moment to ask about, with a UTC offset. Default: the current time.",
        examples=["2026-11-20T15:00:00Z"],
    )


@dataclass(frozen=True)
class EligiblePage:
    """A slice of the eligible stream; ``next_cursor`` is None at the end.

    ``documents`` are the contacts as the API's JSON text, each what
    ``Contact.model_dump(mode="json")`` writes: on PostgreSQL the database
    writes them (contacts/stream_sql.py), so ``to_json`` hands the response
    text with no Python object per row or value (docs/design.md §12); ``data``
    builds the ``Contact`` objects for Python callers that want them.
    """

    documents: Sequence[str]
    next_cursor: str | None

    @cached_property
    def data(self) -> list[Contact]:
        """The page's contacts as ``Contact`` objects."""
        return [contact_from_json(json.loads(text)) for text in self.documents]

    def to_dict(self) -> dict[str, Any]:
        """The API's ``{data, next_cursor}`` as values."""
        data = [json.loads(text) for text in self.documents]
        return {"data": data, "next_cursor": self.next_cursor}

    def to_json(self) -> bytes:
        """The API's ``{data, next_cursor}`` as UTF-8 JSON, joined from the documents."""
        cursor = json.dumps(self.next_cursor)
        return f'{{"data":[{",".join(self.documents)}],"next_cursor":{cursor}}}'.encode()


def _all_timezones() -> frozenset[str]:
    return iana_timezones()


_CURSOR_SEPARATOR = "|"


def _encode_cursor(contact_id: str, at: datetime) -> str:
    text = f"{contact_id}{_CURSOR_SEPARATOR}{at.astimezone(UTC).isoformat()}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, datetime]:
    """The last id of the previous slice and the walk's ``at``; only cursors we issued pass."""
    invalid = ValidationFailed({"cursor": "Cursor is not one this service issued"})
    try:
        padded = (cursor + "=" * (-len(cursor) % 4)).encode("ascii")
        decoded = base64.b64decode(padded, altchars=b"-_", validate=True).decode("ascii")
        contact_id, separator, moment = decoded.partition(_CURSOR_SEPARATOR)
        at = datetime.fromisoformat(moment)
    except (ValueError, UnicodeError):
        raise invalid from None
    # Only what we encoded round-trips: printable ASCII, re-encoding to the same text.
    if (
        not separator
        or not decoded.isprintable()
        or at.tzinfo is None
        or _encode_cursor(contact_id, at) != cursor
    ):
        raise invalid
    return contact_id, at


def _sql_list(values: tuple[str, ...]) -> str:
    """``('a', 'b')``: SQL string literals, quotes doubled."""
    quoted = ", ".join("'" + value.replace("'", "''") + "'" for value in values)
    return f"({quoted})"


# Literal SQL (no bound parameters) so the planner matches the partial index
# ix_contacts_callable even under prepared statements with generic plans.
_CALLABLE: ColumnElement[bool] = literal_column(
    "contacts.do_not_call = false AND contacts.phone IS NOT NULL AND "
    f"contacts.lead_status NOT IN {_sql_list(STICKY)}"
)
# Where a contact is: what its clock and calendar reasons depend on (besides `at`).
_PLACE = (contacts.c.timezone, contacts.c.phone_zone, contacts.c.phone_state)


def _walk_at(query: EligibleQuery) -> tuple[datetime, str | None]:
    """The walk's ``at`` (the query's, else the cursor's, else now) and the id to continue after."""
    if query.cursor is None:
        return (query.at or utcnow()), None
    after, at = _decode_cursor(query.cursor)
    if query.at is not None and query.at != at:
        raise ValidationFailed({"cursor": "Cursor belongs to a walk at another `at`"})
    return at, after


def _place_key() -> ColumnElement[str]:
    # Bound, not literal: the SQL then quotes nothing but the sticky statuses
    # (tests/test_vocabulary.py reads them from it).
    sep: ColumnElement[str] = literal("|", String)
    empty: ColumnElement[str] = literal("", String)
    timezone, phone_zone, phone_state = (func.coalesce(column, empty) for column in _PLACE)
    return timezone + sep + phone_zone + sep + phone_state


def _places_ahead(conn: Connection, team_id: str, after: str | None) -> list[Any]:
    """The places of the team's callable contacts after ``after``, each with its count."""
    where = [contacts.c.team_id == team_id, _CALLABLE]
    if after is not None:
        where.append(contacts.c.id > after)
    return list(conn.execute(select(*_PLACE, func.count()).where(*where).group_by(*_PLACE)).all())


def _key_text(place: Any) -> str:
    """A place as ``_place_key`` writes it."""
    return "|".join(part or "" for part in place[:3])


def _places_open(
    conn: Connection, team_id: str, moment: Moment, after: str | None
) -> list[str] | None:
    """The places (zone, number zone, state) of the team's callable contacts still ahead
    in the walk where the clock allows a call at ``at``, as keys of ``_place_key``;
    None when rows need no filter by place.

    A team has few distinct places; deciding them in Python with the same
    evaluator and filtering rows by them keeps the stream's rows to those the
    clock allows, on both databases. The filter costs a comparison with every
    open place per row (a prepared statement's array is not hashed), so it is
    used only when the clock closes more than ``_FILTER_SHARE`` of the rows
    ahead; else rows come straight from the partial index
    ``ix_contacts_callable`` in id order and ``Moment.allows`` refuses the few
    closed ones (it checks every row's place). Once the rows ahead were found
    to need no filter, later pages of the walk do not ask again.
    """
    if team_id in moment.unfiltered:
        return None
    places = _places_ahead(conn, team_id, after)
    allowed = [place for place in places if moment.clock_allows((place[0], place[1], place[2]))]
    closed = sum(place[3] for place in places) - sum(place[3] for place in allowed)
    if closed <= _FILTER_SHARE * sum(place[3] for place in places):
        moment.unfiltered.add(team_id)
        return None
    return [_key_text(place) for place in allowed]


_FILTER_SHARE = 0.25


def _in_places(dialect: str, open_places: list[str]) -> ColumnElement[bool]:
    """The row's place is one of ``open_places``: one parameter whatever their number."""
    key = _place_key()
    if dialect == "postgresql":
        return key == any_(bindparam("open_places", open_places, type_=ARRAY(Text)))
    element = func.json_each(bindparam("open_places", json.dumps(open_places))).table_valued(
        "value"
    )
    return key.in_(select(element.c.value))


def list_eligible(conn: Connection, query: EligibleQuery) -> EligiblePage:
    """Contacts of the team eligible at ``at``, in keyset (id) order, stable under changes.

    The evaluator (scheduling/eligibility) judges each place's clock once a
    walk. On PostgreSQL one statement a page then applies the attempt rules and
    returns only eligible rows, as JSON text (contacts/stream_sql.py); elsewhere
    callable rows are read in chunks and the evaluator decides each one
    (``_eligible_in_chunks``). Both give exactly what the single-contact
    endpoint calls eligible (docs/design.md §12).
    """
    at, after = _walk_at(query)
    rules = rules_for(
        load_policy(conn, query.team_id),
        window_start=query.window_start,
        window_end=query.window_end,
        default_timezone=query.default_timezone,
    )
    moment = walk_moment(rules, at)
    custom = custom_conditions(query.custom_filters, conn.dialect.name, query.team_id)
    found = _eligible_in_sql(conn, query, moment, after, custom)
    if found is not None:
        documents = [row.document for row in found[: query.limit]]
    else:
        found = _eligible_in_chunks(conn, query, moment, after, custom)
        documents = [json_text(values) for values in contacts_json(found[: query.limit])]
    more = len(found) > query.limit
    return EligiblePage(documents, _encode_cursor(found[query.limit - 1].id, at) if more else None)


def _eligible_in_sql(
    conn: Connection,
    query: EligibleQuery,
    moment: Moment,
    after: str | None,
    custom: Sequence[ColumnElement[bool]],
) -> list[Any] | None:
    """The page and one more row, decided by one statement (PostgreSQL; else None)."""
    if conn.dialect.name != "postgresql":
        return None
    shape = Shape.of(moment.rules)
    first = after is None
    statement = _stream_statement(shape, first, custom) if custom else _stream(shape, first)
    known = None if first else moment.memo.get(("places", query.team_id))
    values = {**shape_parameters(moment), "team_id": query.team_id, "after": after}
    for fresh in (known is None, True):
        if fresh:
            known = _known_places(conn, query.team_id, moment, after)
        assert known is not None
        if not any(known.values()):
            return []
        places = places_parameter(moment, known)
        if places is None:
            return None
        parameters = {**values, "places": places, "size": query.limit + 1}
        rows = list(conn.execute(statement, parameters).all())
        if not any(row.unseen_place for row in rows):
            return rows
    return None  # places changed under two reads in a row: the chunked path decides


def _known_places(
    conn: Connection, team_id: str, moment: Moment, after: str | None
) -> dict[str, OpenPlace | None]:
    """Every place of the team's callable contacts ahead in the walk, open (what the
    attempt rules read of it) or closed (None), kept for the walk's later pages.

    A later page reuses them: a row in a place not among them (a contact
    changed since) comes back marked, and the page is read again with the
    places read afresh, so the answer stays exact.
    """
    known = {
        _key_text(place): moment.open_place((place[0], place[1], place[2]))
        for place in _places_ahead(conn, team_id, after)
    }
    moment.memo[("places", team_id)] = known
    return known


def _stream_statement(shape: Shape, first: bool, custom: Sequence[ColumnElement[bool]] = ()) -> Any:
    """The rows statement of a walk's first page, or of those after a keyset id."""
    team = bindparam("team_id", type_=String)
    where = [contacts.c.team_id == team, _CALLABLE, *custom]
    if not first:
        where.append(contacts.c.id > bindparam("after"))
    columns = (contacts.c.id, _DOCUMENT)
    return eligible_statement(shape, place_key=_place_key(), where=where, columns=columns)


@functools.lru_cache(maxsize=64)
def _stream(shape: Shape, first: bool) -> Any:
    """``_stream_statement`` without ``cf.`` filters, built once per shape and kept: the
    same object each time, so SQLAlchemy's cache key and psycopg's prepared statement
    are reused across walks (a walk's values are all parameters)."""
    return _stream_statement(shape, first)


_DOCUMENT = contact_document().label("document")


def _eligible_in_chunks(
    conn: Connection,
    query: EligibleQuery,
    moment: Moment,
    after: str | None,
    custom: Sequence[ColumnElement[bool]],
) -> list[Any]:
    """The page and one more row, read in chunks and decided by the evaluator row by row."""
    open_places = _places_open(conn, query.team_id, moment, after)
    rules, at = moment.rules, moment.at
    counts = rules.attempts_matter  # else the ledger is not read at all
    wanted = query.limit + 1  # a page and one more: whether there is a next page
    size, read = wanted, 0
    found: list[Any] = []
    while open_places != [] and len(found) < wanted:
        rows = _chunk(conn, query.team_id, open_places, after, size, custom)
        if rows:
            attempts = attempts_of(conn, query.team_id, rows, at, rules) if counts else {}
            found += [row for row in rows if moment.allows(row, attempts.get(row.id, NO_ATTEMPTS))]
        if len(rows) < size:
            break
        after, read = rows[-1].id, read + len(rows)
        size = _next_size(wanted - len(found), len(found) / read)
    return found


def _next_size(missing: int, kept: float) -> int:
    """Rows to read for ``missing`` more eligible ones when a ``kept`` share of rows was."""
    return min(_MAX_CHUNK, int(missing / max(kept, 0.05) * 1.2) + 16)


_MAX_CHUNK = 5000


def _chunk(
    conn: Connection,
    team_id: str,
    open_places: list[str] | None,
    after: str | None,
    size: int,
    extra: Sequence[ColumnElement[bool]] = (),
) -> list[Any]:
    """The next ``size`` callable rows after ``after``; ``extra``: the ``cf.`` conditions."""
    where: list[ColumnElement[bool]] = [contacts.c.team_id == team_id, _CALLABLE, *extra]
    if open_places is not None:
        where.append(_in_places(conn.dialect.name, open_places))
    if after is not None:
        where.append(contacts.c.id > after)
    statement = (
        select(*CONTACT_COLUMNS, *_STREAM_EXTRA).where(*where).order_by(contacts.c.id).limit(size)
    )
    return list(conn.execute(statement).all())


# Besides the public columns, what eligibility reads (scheduling/check.FACT_COLUMNS).
_STREAM_EXTRA = (contacts.c.phone_zone, contacts.c.phone_state, contacts.c.attempt_count)


_SNAKE = {
    to_camel(name): name
    for model in (ContactQuery, EligibleQuery, EligibilityQuery, HistoryQuery, CompanyQuery)
    for name in model.model_fields
}
