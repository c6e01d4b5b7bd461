"""A contacts CSV file read for ``contact-sync import`` (docs/design.md §14).

Pure: no database. The file is checked as UTF-8 (a byte order mark allowed)
before anything is written, its header is mapped to the API's field names
before anything is written, and its rows then become API contact bodies one
at a time, so that memory stays flat whatever the file's length. A row that
cannot become a body carries its problems instead, each naming the column
as the header wrote it.

Cells are data: a cell is passed on exactly as written (a formula such as
``=cmd|' /C calc'!A0`` stays text), only an empty cell means "absent".
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

from pydantic.alias_generators import to_camel

from contact_sync.contacts.model import ContactCreate, check_custom_key

# No field takes more: notes hold 10,000 characters and all custom fields 64 KiB.
MAX_CELL = 64 * 1024
# What the csv module will hold of one cell before it gives up on the row: big
# enough that a cell over MAX_CELL is still read whole (and its row fails cleanly,
# the rows after it read as usual), small enough that one cell never costs more
# than this much memory. A cell over it fails its row, and the csv module gives
# up inside it: the rest of a quoted cell spanning lines is then read as rows.
CSV_FIELD_LIMIT = 16 * 1024 * 1024
TAG_SEPARATOR = ";"
CUSTOM_PREFIX = "cf."
_BLOCK = 1024 * 1024
_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})
# Fields of a create body that are no column: the team is the command's --team, and
# custom fields are one column each (cf.KEY).
_NOT_COLUMNS = frozenset({"team_id", "custom_fields"})
_SHOWN_UNKNOWN = 5


class FileRefused(Exception):
    """The file cannot be imported at all; nothing was written."""


@dataclass(frozen=True)
class Column:
    """A header cell: its name as written, and the body field it fills."""

    name: str
    field: str  # a snake_case field of the contact body, or "custom_fields"
    key: str | None = None  # the custom field's key, for a ``cf.KEY`` column


@dataclass(frozen=True)
class Problem:
    """Why a row (or one of its cells) cannot be imported."""

    row: int
    column: str
    message: str


@dataclass(frozen=True)
class Row:
    """A data row: its number in the file (the header is row 1) and its body or problems."""

    number: int
    body: dict[str, Any] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()


def _field_names() -> dict[str, str]:
    """Each accepted header name (camelCase and snake_case) to its snake_case field."""
    names: dict[str, str] = {}
    for name in ContactCreate.model_fields:
        if name not in _NOT_COLUMNS:
            names[name] = name
            names[to_camel(name)] = name
    return names


FIELD_NAMES = _field_names()


def check_encoding(path: Path) -> int:
    """Read the whole file as UTF-8 (a BOM allowed); return its number of lines.

    ``FileRefused`` names the byte offset and line of the first invalid byte, so
    that a file in another encoding is refused before any row is written.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0
    last = b""
    try:
        with path.open("rb") as stream:
            while block := stream.read(_BLOCK):
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    at = offset - pending + exc.start
                    before = lines + block[: max(exc.start - pending, 0)].count(b"\n")
                    raise FileRefused(_bad_bytes(at, before + 1, block, offset)) from None
                lines += block.count(b"\n")
                offset += len(block)
                last = block[-1:]
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise FileRefused(f"not UTF-8: the file ends inside a character (byte {offset})") from None
    except OSError as exc:
        raise FileRefused(f"cannot read {path}: {exc.strerror or exc}") from None
    return lines + (1 if last not in (b"", b"\n") else 0)


def _bad_bytes(at: int, line: int, block: bytes, block_offset: int) -> str:
    hint = ""
    if at < 2 and block_offset == 0 and block[:2] in (b"\xff\xfe", b"\xfe\xff"):
        hint = " (it looks like UTF-16: save it as CSV UTF-8)"
    return (
        f"not UTF-8: invalid byte at offset {at} (line {line}){hint}; "
        "save the file as CSV UTF-8 and import it again"
    )


def open_rows(path: Path) -> TextIO:
    """The file as text for ``csv``: UTF-8 without its BOM, newlines left to the reader."""
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise FileRefused(f"cannot read {path}: {exc.strerror or exc}") from None


def read_records(stream: TextIO) -> Iterator[list[str] | csv.Error]:
    """The file's records; a record the csv module cannot read is its error instead."""
    csv.field_size_limit(CSV_FIELD_LIMIT)  # deliberately: the module's default is 128 KiB
    reader = csv.reader(stream, strict=False)
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield exc


def read_header(records: Iterator[list[str] | csv.Error]) -> list[str]:
    """The header row's cells; ``FileRefused`` if there is none or it cannot be read."""
    header = next(records, None)
    if header is None:
        raise FileRefused("the file is empty: the first row must name the columns")
    if isinstance(header, csv.Error):
        raise FileRefused(f"cannot read the header row: {header}")
    return header


CustomKeyCheck = Callable[[str], str | None]


def map_header(header: Sequence[str], *, check_key: CustomKeyCheck) -> list[Column]:
    """The header's columns, or ``FileRefused`` naming every unknown or repeated column.

    ``check_key`` says why a custom-field key cannot be a column (``None`` if it can).
    """
    columns: list[Column] = []
    unknown: list[str] = []
    seen: dict[tuple[str, str | None], str] = {}
    for raw in header:
        column, why = _column(raw.strip(), check_key)
        if column is None:
            unknown.append(why)
            continue
        target = (column.field, column.key)
        if target in seen:
            raise FileRefused(f"columns {seen[target]!r} and {column.name!r} are the same field")
        seen[target] = column.name
        columns.append(column)
    if unknown:
        raise FileRefused(_unknown_message(unknown))
    if not columns:
        raise FileRefused("the header row names no column")
    return columns


def _column(name: str, check_key: CustomKeyCheck) -> tuple[Column | None, str]:
    shown = repr(name[:40] + ("…" if len(name) > 40 else ""))
    if name in FIELD_NAMES:
        return Column(name, FIELD_NAMES[name]), ""
    if name.startswith(CUSTOM_PREFIX):
        key = name.removeprefix(CUSTOM_PREFIX)
        try:
            check_custom_key(key)
        except ValueError:
            return None, f"{shown} (not a custom-field key: a slug of at most 64 characters)"
        why = check_key(key)
        if why is not None:
            return None, f"{shown} ({why})"
        return Column(name, "custom_fields", key), ""
    if not name:
        return None, "'' (a column without a name)"
    return None, shown


def _unknown_message(unknown: list[str]) -> str:
    shown = ", ".join(unknown[:_SHOWN_UNKNOWN])
    more = len(unknown) - _SHOWN_UNKNOWN
    rest = f" and {more:,} more" if more > 0 else ""
    return (
        f"unknown column {shown}{rest}: columns are the API's field names (firstName or "
        "first_name), cf.KEY for a custom field, and tags; nothing was imported"
    )


def to_row(number: int, record: list[str] | csv.Error, columns: Sequence[Column]) -> Row:
    """One data record as a contact body, or its problems (every cell is checked)."""
    if isinstance(record, csv.Error):
        return Row(number, problems=(Problem(number, "", f"Unreadable row: {record}"),))
    if len(record) > len(columns):
        message = f"{len(record)} cells, but the header has {len(columns)} columns"
        return Row(number, problems=(Problem(number, "", message),))
    body: dict[str, Any] = {}
    problems: list[Problem] = []
    for column, cell in zip(columns, record, strict=False):
        if not cell.strip():
            continue  # an empty cell: the field is absent
        why = _cell_problem(cell)
        if why is None:
            value, why = _value(column, cell)
        if why is not None:
            problems.append(Problem(number, column.name, why))
        elif column.key is not None:
            body.setdefault("custom_fields", {})[column.key] = value
        else:
            body[column.field] = value
    return Row(number, body, tuple(problems))


def _cell_problem(cell: str) -> str | None:
    if len(cell) > MAX_CELL:
        return f"Cell larger than {MAX_CELL:,} characters"
    if "\x00" in cell:
        return "Cell contains a NUL character"
    return None


def _value(column: Column, cell: str) -> tuple[Any, str | None]:
    if column.field == "tags":
        return [tag.strip() for tag in cell.split(TAG_SEPARATOR) if tag.strip()], None
    if column.field == "do_not_call":
        word = cell.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE, None
        return None, "Must be true or false (yes/no, 1/0)"
    return cell, None


def column_of(field_name: str, columns: Sequence[Column]) -> str:
    """The column, as the header wrote it, of a field an error names.

    The field may be spelled either way (``companyId``, ``company_id``); a custom
    field is ``custom_fields.KEY``. A field the file has no column for is named
    in camelCase, as the API's documents do.
    """
    head, dot, key = field_name.partition(".")
    name = FIELD_NAMES.get(head, "custom_fields" if head == "customFields" else head)
    for column in columns:
        if (column.field, column.key or "") == (name, key):
            return column.name
    if dot and name == "custom_fields":
        return CUSTOM_PREFIX + key
    return to_camel(name) if name in FIELD_NAMES else field_name


def numbered_rows(
    records: Iterable[list[str] | csv.Error], columns: Sequence[Column]
) -> Iterator[Row]:
    """The data records as rows numbered as in the file (the header is row 1).

    A record that spans lines (a quoted cell with a line break) is one row.
    Blank lines are skipped but counted, as a spreadsheet shows them.
    """
    for number, record in enumerate(records, start=2):
        if isinstance(record, list) and not any(cell.strip() for cell in record):
            continue
        yield to_row(number, record, columns)


def chunked(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    """``rows`` in lists of ``size`` (the last may be shorter)."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk
