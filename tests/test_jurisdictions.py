"""The shipped jurisdiction rules (docs/design.md §12): data with sources, validated at load."""

from __future__ import annotations

import json
from datetime import time
from importlib import resources
from typing import Any

import pytest
from pydantic import ValidationError

from contact_sync.scheduling.jurisdictions import Jurisdictions, load_jurisdictions
from contact_sync.scheduling.numbers import _area_codes


def _raw() -> dict[str, Any]:
    text = resources.files("contact_sync.scheduling").joinpath("data/jurisdictions.json")
    document: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return document


def _sources(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every ``source`` in the document, with where it is."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "source":
                found.append((path, value))
            else:
                found += _sources(value, f"{path}/{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            found += _sources(value, f"{path}/{n}")
    return found


def test_the_shipped_file_loads_and_validates() -> None:
    rules = load_jurisdictions()
    assert rules.floor_window == (time(8), time(21))
    assert {"AL", "FL", "LA", "MD", "MS", "OK", "RI", "TX"} <= set(rules.states)


def test_every_rule_names_a_source_with_a_citation_and_a_url() -> None:
    raw = _raw()
    rules = load_jurisdictions()
    parts = 1  # the floor
    for state in rules.states.values():
        parts += len(state.windows)
        parts += sum(part is not None for part in (state.no_call_days, state.holidays))
        parts += state.attempt_cap_24h is not None
    sources = _sources(raw)
    assert len(sources) == parts
    for where, source in sources:
        assert set(source) == {"citation", "url"}, where
        assert len(source["citation"]) > 10, where
        assert source["url"].startswith(("https://", "http://")), where


def test_a_rule_without_a_source_does_not_load() -> None:
    raw = _raw()
    del raw["states"]["FL"]["attempt_cap_24h"]["source"]
    with pytest.raises(ValidationError, match="source"):
        Jurisdictions.model_validate(raw)


def test_a_weekday_in_two_windows_of_a_state_does_not_load() -> None:
    raw = _raw()
    raw["states"]["TX"]["windows"][1]["days"].append("mon")
    with pytest.raises(ValidationError, match="two windows"):
        Jurisdictions.model_validate(raw)


def test_the_states_are_those_the_area_codes_name() -> None:
    assert set(load_jurisdictions().states) <= set(_area_codes().values())


def test_every_holiday_has_a_date_in_each_year_the_file_covers() -> None:
    rules = load_jurisdictions()
    years = set(range(rules.holiday_years.first, rules.holiday_years.last + 1))
    assert years == set(range(2026, 2031))
    for code, state in rules.states.items():
        for holiday in state.holidays.days if state.holidays else []:
            assert {d.year for d in holiday.dates} == years, (code, holiday.name)


def test_the_examples_of_the_design_are_in_the_file() -> None:
    states = load_jurisdictions().states
    assert (states["FL"].window_on("mon").start, states["FL"].window_on("mon").end) == (  # type: ignore[union-attr]
        time(8),
        time(20),
    )
    for code in ("FL", "OK", "MD"):
        assert states[code].attempt_cap_24h.max == 3  # type: ignore[union-attr]
    for code in ("AL", "LA", "MS", "RI"):
        assert "sun" in states[code].no_call_days.days  # type: ignore[union-attr]
    assert states["TX"].window_on("sun").start == time(12)  # type: ignore[union-attr]
    assert states["RI"].window_on("sat").end == time(17)  # type: ignore[union-attr]
