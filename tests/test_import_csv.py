"""``contact-sync import FILE.csv`` (docs/design.md §14): the CSV side and the whole command.

The file's reading (encoding, header, cells) is tested on its own; the command runs
in this process through ``main`` (as an operator's ``contact-sync import``) on
PostgreSQL and SQLite, and in a subprocess where the terminal matters.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from contact_sync.accounts.teams import Team
from contact_sync.cli import import_csv
from contact_sync.cli.main import main
from contact_sync.contacts.companies import create_company
from contact_sync.contacts.csv_rows import (
    MAX_CELL,
    Column,
    FileRefused,
    check_encoding,
    column_of,
    map_header,
    numbered_rows,
    read_records,
)
from contact_sync.db.tables import contact_history, contacts
from contact_sync.fields.store import define
from tests.factories import make_contact, make_team, reading, writing

HEADER = "firstName,lastName,phone,email"


def _any_key(key: str) -> str | None:
    return None


def write_csv(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def run_import(
    engine: Engine, path: Path, team_id: str, *flags: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """``contact-sync import PATH --team TEAM FLAGS`` in this process: (exit, stdout, stderr)."""
    url = engine.url.render_as_string(hide_password=False)
    argv = ["--database-url", url, "import", str(path), "--team", team_id, *flags]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def team_contacts(engine: Engine, team_id: str) -> list[Any]:
    with reading(engine) as conn:
        stmt = select(contacts).where(contacts.c.team_id == team_id).order_by(contacts.c.created_at)
        return list(conn.execute(stmt))


def count_rows(engine: Engine) -> tuple[int, int]:
    with reading(engine) as conn:
        return (
            conn.execute(select(func.count()).select_from(contacts)).scalar_one(),
            conn.execute(select(func.count()).select_from(contact_history)).scalar_one(),
        )


def summary(out: str) -> str:
    return out.strip().splitlines()[-1]


# --- the file, read without a database ---------------------------------------------------


def test_header_names_are_the_apis_in_either_spelling_custom_fields_and_tags() -> None:
    header = ["firstName", " last_name ", "phoneSecondary", "do_not_call", "cf.roof_type", "tags"]
    columns = map_header(header, check_key=_any_key)
    assert [(c.name, c.field, c.key) for c in columns] == [
        ("firstName", "first_name", None),
        ("last_name", "last_name", None),
        ("phoneSecondary", "phone_secondary", None),
        ("do_not_call", "do_not_call", None),
        ("cf.roof_type", "custom_fields", "roof_type"),
        ("tags", "tags", None),
    ]


@pytest.mark.parametrize(
    ("header", "named"),
    [
        (["firstName", "First Name"], "'First Name'"),
        (["firstName", "teamId"], "'teamId'"),
        (["firstName", "customFields"], "'customFields'"),
        (["firstName", "cf.not a key"], "'cf.not a key' (not a custom-field key"),
        (["firstName", ""], "a column without a name"),
    ],
)
def test_an_unknown_column_refuses_the_file_naming_it(header: list[str], named: str) -> None:
    with pytest.raises(FileRefused, match="unknown column") as refused:
        map_header(header, check_key=_any_key)
    assert named in str(refused.value)


def test_a_field_given_twice_refuses_the_file() -> None:
    with pytest.raises(FileRefused, match="'firstName' and 'first_name' are the same field"):
        map_header(["firstName", "first_name"], check_key=_any_key)


def test_a_header_of_100k_columns_is_refused_at_once_naming_a_few() -> None:
    header = [f"col{i}" for i in range(100_000)]
    started = time.perf_counter()
    with pytest.raises(FileRefused) as refused:
        map_header(header, check_key=_any_key)
    assert time.perf_counter() - started < 2
    message = str(refused.value)
    assert "'col0', 'col1', 'col2', 'col3', 'col4' and 99,995 more" in message
    assert len(message) < 400


def _rows(text: str, header: list[str]) -> list[Any]:
    columns = map_header(header, check_key=_any_key)
    return list(numbered_rows(read_records(io.StringIO(text, newline="")), columns))


def test_cells_become_a_body_empty_cells_are_absent_and_formulas_stay_text() -> None:
    header = ["firstName", "lastName", "tags", "doNotCall", "cf.bill", "notes", "email"]
    text = "Ada,Lovelace, vip ;solar;; ,YES,$7.5k,\"=cmd|' /C calc'!A0\",  \n"
    [row] = _rows(text, header)
    assert row.number == 2
    assert row.problems == ()
    assert row.body == {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "tags": ["vip", "solar"],
        "do_not_call": True,
        "custom_fields": {"bill": "$7.5k"},
        "notes": "=cmd|' /C calc'!A0",
    }


def test_rows_are_numbered_as_in_the_file_the_header_being_row_1() -> None:
    """A quoted cell with a line break is one row; a blank line is a row with nothing."""
    text = 'Ada,"two\nlines"\n\nBob,x\n'
    rows = _rows(text, ["firstName", "notes"])
    assert [(r.number, r.body["first_name"]) for r in rows] == [(2, "Ada"), (4, "Bob")]


@pytest.mark.parametrize(
    ("cells", "column", "message"),
    [
        ("Ada,\x00x", "notes", "NUL character"),
        ("Ada," + "n" * (MAX_CELL + 1), "notes", "Cell larger than 65,536 characters"),
        ("Ada,x,extra", "", "3 cells, but the header has 2 columns"),
    ],
    ids=["nul", "big-cell", "too-many-cells"],
)
def test_a_bad_cell_fails_its_row_naming_the_column(cells: str, column: str, message: str) -> None:
    [row] = _rows(cells + "\n", ["firstName", "notes"])
    [problem] = row.problems
    assert (problem.row, problem.column) == (2, column)
    assert message in problem.message


def test_do_not_call_takes_the_usual_words_only() -> None:
    rows = _rows("Ada,no\nBob,1\nCy,maybe\n", ["firstName", "doNotCall"])
    assert [r.body.get("do_not_call") for r in rows] == [False, True, None]
    assert rows[2].problems[0].column == "doNotCall"


def test_an_error_names_the_column_as_the_file_wrote_it() -> None:
    columns = [Column("company_id", "company_id"), Column("cf.roof", "custom_fields", "roof")]
    assert column_of("company_id", columns) == "company_id"
    assert column_of("companyId", columns) == "company_id"
    assert column_of("custom_fields.roof", columns) == "cf.roof"
    assert column_of("custom_fields.other", columns) == "cf.other"
    assert column_of("first_name", columns) == "firstName"
    assert column_of("body", columns) == "body"


def test_utf8_with_and_without_bom_is_accepted(tmp_path: Path) -> None:
    assert check_encoding(write_csv(tmp_path / "a.csv", "a,é\nb,ü\n", bom=True)) == 2
    assert check_encoding(write_csv(tmp_path / "b.csv", "a,é\nb,ü")) == 2


def test_invalid_utf8_is_refused_naming_the_byte_offset_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("firstName\nAda\nJos\u00e9\n".encode("latin-1"))
    with pytest.raises(FileRefused, match=r"not UTF-8: invalid byte at offset 17 \(line 3\)"):
        check_encoding(path)


def test_an_invalid_byte_after_the_first_megabyte_is_found_where_it_is(tmp_path: Path) -> None:
    good = "firstName\n" + "Ada\n" * 300_000  # 1.2 MB: the check reads in 1 MiB blocks
    path = tmp_path / "late.csv"
    path.write_bytes(good.encode() + b"\xc3(\n")
    with pytest.raises(FileRefused, match=rf"offset {len(good)} \(line 300002\)"):
        check_encoding(path)


def test_utf16_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "utf16.csv"
    path.write_bytes("firstName\nAda\n".encode("utf-16"))
    with pytest.raises(FileRefused, match="looks like UTF-16"):
        check_encoding(path)


# --- the command, on both databases -----------------------------------------------------


def test_every_column_kind_lands_in_the_contact(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """National numbers are read in the team's region; cf. values are coerced as the API does."""
    team = make_team(engine, region="GB")
    with writing(engine) as conn:
        company = create_company(conn, team_id=team.id, name="Acme")
        define(conn, team_id=team.id, data={"key": "bill", "label": "Bill", "type": "number"})
    text = (
        "firstName,last_name,phone,phoneSecondary,email,jobTitle,lead_status,source,timezone,"
        "preferredContactMethod,doNotCall,notes,companyId,tags,cf.bill,cf.loose\n"
        "Ada,Lovelace,020 7946 0018,+1 202 555 0100,Ada@Example.COM,CTO,Qualified,fair,"
        f"Europe/London,phone,yes,=SUM(A1:A9),{company.id},vip;solar,$7.5k,anything\n"
    )
    code, out, err = run_import(engine, write_csv(tmp_path / "a.csv", text), team.id, capsys=capsys)
    assert (code, summary(out)) == (0, "created=1 updated=0 unchanged=0 failed=0"), err
    [row] = team_contacts(engine, team.id)
    assert (row.first_name, row.last_name, row.job_title) == ("Ada", "Lovelace", "CTO")
    assert (row.phone, row.phone_secondary) == ("+442079460018", "+12025550100")
    assert row.email.lower() == "ada@example.com"
    assert (row.lead_status, row.source, row.timezone) == ("qualified", "fair", "Europe/London")
    assert (row.preferred_contact_method, row.do_not_call) == ("phone", True)
    assert (row.notes, row.company_id, row.tags) == ("=SUM(A1:A9)", company.id, ["vip", "solar"])
    assert row.custom_fields == {"bill": 7500, "loose": "anything"}
    assert row.provenance["first_name"]["source"] == "import"


def test_a_bom_and_snake_case_header_import_as_camel_case_does(
    engine: Engine, team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snake = write_csv(
        tmp_path / "s.csv", "first_name,last_name,phone\nAda,L,2025550101\n", bom=True
    )
    camel = write_csv(tmp_path / "c.csv", "firstName,lastName,phone\nAda,L,(202) 555-0101\n")
    assert summary(run_import(engine, snake, team.id, capsys=capsys)[1]).startswith("created=1")
    code, out, _ = run_import(engine, camel, team.id, capsys=capsys)
    assert (code, summary(out)) == (0, "created=0 updated=0 unchanged=1 failed=0")
    [row] = team_contacts(engine, team.id)
    assert (row.first_name, row.phone) == ("Ada", "+12025550101")


def test_bad_rows_are_reported_to_the_errors_file_and_the_rest_imported(
    engine: Engine, team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        f"{HEADER},doNotCall\n"
        "Ada,L,2025550101,,\n"
        "Bob,B,not a phone,,\n"
        ",C,2025550103,,\n"
        "Cy,C,2025550104,,perhaps\n"
        "Di,D,2025550105,di@example.com,no\n"
    )
    errors = tmp_path / "errors.csv"
    path = write_csv(tmp_path / "a.csv", text)
    code, out, err = run_import(engine, path, team.id, "--errors", str(errors), capsys=capsys)
    assert (code, summary(out)) == (2, "created=2 updated=0 unchanged=0 failed=3")
    assert err == ""
    with errors.open(newline="", encoding="utf-8") as stream:
        found = list(csv.reader(stream))
    assert found[0] == ["row", "column", "message"]
    assert [(r, c) for r, c, _ in found[1:]] == [
        ("3", "phone"),
        ("4", "firstName"),
        ("5", "doNotCall"),
    ]
    assert "E.164" in found[1][2]
    assert len(team_contacts(engine, team.id)) == 2


def test_without_an_errors_file_problems_go_to_stderr_one_line_each(
    engine: Engine, team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "a.csv", f"{HEADER}\nAda,L,nope,\nBob,B,,bad@\n")
    code, out, err = run_import(engine, path, team.id, capsys=capsys)
    assert (code, summary(out)) == (2, "created=0 updated=0 unchanged=0 failed=2")
    lines = err.splitlines()
    assert lines[0].startswith("row 2, column phone: ")
    assert lines[1].startswith("row 3, column email: ")


def test_an_unknown_column_refuses_the_file_and_writes_nothing(
    engine: Engine, team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "a.csv", f"{HEADER},Company Name\nAda,L,2025550101,,Acme\n")
    code, out, err = run_import(engine, path, team.id, capsys=capsys)
    assert (code, out) == (1, "")
    assert err.startswith("contact-sync: unknown column 'Company Name'")
    assert "nothing was imported" in err
    assert count_rows(engine) == (0, 0)


def test_a_custom_field_column_the_team_does_not_define_is_unknown_when_it_rejects_them(
    engine: Engine, team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from contact_sync.accounts.team_settings import put_team_settings

    with writing(engine) as conn:
        data = {"undefined_custom_fields": "reject"}
        put_team_settings(conn, team_id=team.id, data=data, default_min_confidence=0.5)
    path = write_csv(tmp_path / "a.csv", "firstName,lastName,cf.mystery\nAda,L,x\n")
    code, _, err = run_import(engine, path, team.id, capsys=capsys)
    assert code == 1
    assert "'cf.mystery' (no such custom field is defined for this team)" in err
    assert count_rows(engine) == (0, 0)


def test_a_file_not_in_utf8_is_refused_before_any_row_is_written(
    engine: Engine,
    team: Team,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bad byte is in the last row, several chunks after rows that are fine."""
    monkeypatch.setattr(import_csv, "CHUNK_ROWS", 2)
    good = "".join(f"P{i},L,20255501{i:02d},\n" for i in range(6))
    path = tmp_path / "a.csv"
    path.write_bytes(f"{HEADER}\n{good}".encode() + "Jos\u00e9,L,,\n".encode("cp1252"))
    code, out, err = run_import(engine, path, team.id, capsys=capsys)
    assert (code, out) == (1, "")
    assert "not UTF-8: invalid byte at offset" in err
    assert "(line 8)" in err
    assert count_rows(engine) == (0, 0)


def test_rows_repeating_a_person_apply_in_file_order_across_chunks(
    engine: Engine,
    team: Team,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(import_csv, "CHUNK_ROWS", 2)
    text = (
        "firstName,lastName,phone,email,jobTitle\n"
        "Ada,L,2025550101,,First\n"
        "Bob,B,2025550102,,\n"
        "Cy,C,2025550103,,\n"
        "Ada,L,+1 202 555 0101,ada@example.com,Second\n"  # another chunk, another format
        "Ada,L,,ADA@example.com,Third\n"  # same chunk: found by email
    )
    path = write_csv(tmp_path / "a.csv", text)
    code, out, err = run_import(engine, path, team.id, capsys=capsys)
    assert (code, summary(out)) == (0, "created=3 updated=2 unchanged=0 failed=0"), err
    ada = next(r for r in team_contacts(engine, team.id) if r.first_name == "Ada")
    assert (ada.job_title, ada.email, ada.version) == ("Third", "ADA@example.com", 3)


def test_the_same_file_twice_creates_and_updates_nothing_the_second_time(
    engine: Engine, team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = f"{HEADER},tags,cf.size\nAda,L,2025550101,ada@example.com,a;b,10\nBob,B,,bob@x.io,,\n"
    path = write_csv(tmp_path / "a.csv", text)
    assert summary(run_import(engine, path, team.id, capsys=capsys)[1]).startswith("created=2 ")
    history = count_rows(engine)
    code, out, _ = run_import(engine, path, team.id, capsys=capsys)
    assert (code, summary(out)) == (0, "created=0 updated=0 unchanged=2 failed=0")
    assert count_rows(engine) == history


def test_a_dry_run_writes_nothing_and_counts_as_a_real_run_would(
    engine: Engine,
    team: Team,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A person repeated in a later chunk counts as updated, as in the real run."""
    monkeypatch.setattr(import_csv, "CHUNK_ROWS", 2)
    make_contact(engine, team.id, phone="+12025550109")
    before = count_rows(engine)
    text = f"{HEADER}\nAda,L,2025550101,\nBob,B,bad,\nAda,L,2025550101,a@b.co\nZed,Z,2025550109,\n"
    path = write_csv(tmp_path / "a.csv", text)
    dry = run_import(engine, path, team.id, "--dry-run", capsys=capsys)
    assert count_rows(engine) == before
    real = run_import(engine, path, team.id, capsys=capsys)
    assert summary(dry[1]) == summary(real[1]) == "created=1 updated=2 unchanged=0 failed=1"
    assert dry[0] == real[0] == 2
    assert "dry run: nothing was written" in dry[2]


def test_match_on_email_only_ignores_the_number(
    engine: Engine, team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_contact(engine, team.id, phone="+12025550101", email="ada@example.com")
    path = write_csv(tmp_path / "a.csv", f"{HEADER}\nAda,L,2025550199,ada@example.com\n")
    code, out, _ = run_import(engine, path, team.id, "--match-on", "email", capsys=capsys)
    assert (code, summary(out)) == (0, "created=0 updated=1 unchanged=0 failed=0")
    [row] = team_contacts(engine, team.id)
    assert row.phone == "+12025550199"


def test_an_unknown_team_is_not_found_before_the_file_is_read(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_import(engine, tmp_path / "missing.csv", "no-such-team", capsys=capsys)
    assert (code, out) == (3, "")
    assert err.startswith("contact-sync: not found")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"", "the file is empty"),
        (b"\n", "the header row names no column"),
    ],
    ids=["missing", "empty", "blank-header"],
)
def test_a_file_without_a_header_is_refused_in_one_line(
    engine: Engine,
    team: Team,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    message: str,
) -> None:
    path = tmp_path / "a.csv"
    if content is not None:
        path.write_bytes(content)
    code, out, err = run_import(engine, path, team.id, capsys=capsys)
    assert (code, out) == (1, "")
    [line] = err.splitlines()
    assert message in line


def test_no_progress_bar_when_stderr_is_not_a_terminal_and_one_on_a_terminal(
    engine: Engine, team: Team, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "a.csv", f"{HEADER}\nAda,L,2025550101,\n")
    url = engine.url.render_as_string(hide_password=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTACT_SYNC_")}
    argv = [sys.executable, "-m", "contact_sync.cli.main", "--database-url", url]
    argv += ["import", str(path), "--team", team.id]
    piped = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (piped.returncode, piped.stderr) == (0, "")
    assert piped.stdout == "created=1 updated=0 unchanged=0 failed=0\n"
    leader, follower = pty.openpty()
    # A terminal 100 columns wide (a new one has none, and tqdm would draw nothing).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        shown = subprocess.run(
            argv, env=env, stdout=subprocess.PIPE, stderr=follower, timeout=60, check=False
        )
        os.close(follower)
        terminal = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        os.close(leader)
    assert shown.returncode == 0
    assert b"row" in terminal
    assert b"100%" in terminal


def test_with_duplicate_phones_rejected_a_row_giving_a_taken_number_fails_naming_it(
    engine: Engine, team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/design.md §14: an import row that would give a second contact a number fails."""
    from contact_sync.accounts.team_settings import put_team_settings

    with writing(engine) as conn:
        data = {"duplicate_phones": "reject"}
        put_team_settings(conn, team_id=team.id, data=data, default_min_confidence=0.5)
    text = f"{HEADER}\nAda,L,2025550101,ada@example.com\nBob,B,(202) 555-0101,bob@example.com\n"
    path = write_csv(tmp_path / "a.csv", text)
    code, out, err = run_import(engine, path, team.id, "--match-on", "email", capsys=capsys)
    assert (code, summary(out)) == (2, "created=1 updated=0 unchanged=0 failed=1")
    assert err.startswith("row 3, column phone: Duplicate phone")
    assert [row.first_name for row in team_contacts(engine, team.id)] == ["Ada"]


def _people(count: int) -> str:
    """``count`` rows of distinct people, each with a number and an address."""
    return "".join(
        f"P{i},L,+1 312 {200 + i // 10000:03d} {i % 10000:04d},p{i}@example.com\n"
        for i in range(count)
    )


def test_a_dry_run_of_more_keys_than_postgresqls_lock_table_holds_runs(
    pg_engine: Engine, pg_team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One transaction for a whole file: a lock per number and address (16,000 here) would
    need more than PostgreSQL's default lock table holds (64 a connection: some 8,000 in
    all), and the dry run ran "out of shared memory"."""
    path = write_csv(tmp_path / "a.csv", f"{HEADER}\n{_people(8_000)}")
    code, out, err = run_import(pg_engine, path, pg_team.id, "--dry-run", capsys=capsys)
    assert (code, summary(out)) == (0, "created=8000 updated=0 unchanged=0 failed=0"), err
    assert count_rows(pg_engine) == (0, 0)


def test_an_errors_file_that_cannot_be_written_refuses_the_import_before_any_row(
    engine: Engine, team: Team, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "a.csv", f"{HEADER}\nAda,L,2025550101,\n")
    errors = tmp_path / "no-such-folder" / "errors.csv"
    code, out, err = run_import(engine, path, team.id, "--errors", str(errors), capsys=capsys)
    assert (code, out) == (1, "")
    assert err.startswith(f"contact-sync: cannot write {errors}")
    assert count_rows(engine) == (0, 0)
