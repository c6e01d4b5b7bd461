"""What a number says: its one time zone and its US state (contact_sync.scheduling.numbers)."""

from __future__ import annotations

import importlib.util
import json
from importlib import resources
from pathlib import Path
from types import ModuleType

import phonenumbers
import pytest
from phonenumbers import geocoder

from contact_sync.scheduling.numbers import number_state, number_zone, phone_facts

# Import-time so the file's loader is what the package ships.
_FILE = resources.files("contact_sync.scheduling").joinpath("data/us_area_codes.json")


@pytest.mark.parametrize(
    ("number", "zone", "state"),
    [
        ("+13055551234", "America/New_York", "FL"),  # Miami
        ("+12055551234", "America/Chicago", "AL"),
        ("+14155550123", "America/Los_Angeles", "CA"),
        ("+12025551234", "America/New_York", "DC"),
        ("+18005551234", None, None),  # toll-free: many zones, no state
        ("+442071234567", "Europe/London", None),
        ("+4930123456", "Europe/Berlin", None),
        ("+33142685300", "Europe/Paris", None),
        ("+61412345678", None, None),  # an Australian mobile: several zones
    ],
)
def test_a_number_gives_its_one_zone_and_its_state(
    number: str, zone: str | None, state: str | None
) -> None:
    assert phone_facts(number) == (zone, state)


def test_no_number_says_nothing() -> None:
    assert phone_facts(None) == (None, None)
    assert number_zone("not a number") is None
    assert number_state("+1305") is None


def test_the_shipped_area_codes_agree_with_the_geocoder_of_the_pinned_phonenumbers() -> None:
    """The file is phonenumbers' geocoding per area code (scripts/generate_area_codes.py)."""
    codes = json.loads(_FILE.read_text(encoding="utf-8"))["area_codes"]
    assert len(codes) > 300
    assert {codes[npa] for npa in ("305", "205", "918", "410")} == {"FL", "AL", "OK", "MD"}
    state_of = _generator().state_of
    for npa, state in list(codes.items())[::5]:
        for nxx in ("234", "555", "867"):
            number = phonenumbers.parse(f"+1{npa}{nxx}0100")
            place = geocoder.description_for_number(number, "en")
            if phonenumbers.is_valid_number(number) and state_of(place):
                assert state_of(place) == state, (npa, place)


def _generator() -> ModuleType:
    path = Path(__file__).parents[1] / "scripts" / "generate_area_codes.py"
    spec = importlib.util.spec_from_file_location("generate_area_codes", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
