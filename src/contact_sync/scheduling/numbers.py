"""What a phone number says about where its owner is: its time zone and its US state.

Both are stored on the contact (``phone_zone``, ``phone_state``) by the contact
writer whenever its primary number is written, so that the eligible stream can
filter on them in SQL. The zone comes from phonenumbers' time-zone data (about
0.5 MB); the state from ``data/us_area_codes.json``, phonenumbers' geocoding
per area code kept as a file because the geocoder itself costs ~100 MB per
process (``scripts/generate_area_codes.py`` makes the file and says why).
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from importlib import resources

import phonenumbers
from phonenumbers import timezone as number_timezones

# phonenumbers' answer for numbers it cannot place.
_UNKNOWN_ZONE = "Etc/Unknown"


@cache
def _area_codes() -> dict[str, str]:
    text = resources.files("contact_sync.scheduling").joinpath("data/us_area_codes.json")
    codes: dict[str, str] = json.loads(text.read_text(encoding="utf-8"))["area_codes"]
    return codes


@lru_cache(maxsize=65536)
def number_zone(e164: str) -> str | None:
    """The one IANA zone of a geographic number, else None (toll-free, mobile of a
    country with several zones, unknown)."""
    try:
        parsed = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return None
    zones = number_timezones.time_zones_for_number(parsed)
    if len(zones) != 1 or zones[0] == _UNKNOWN_ZONE:
        return None
    return str(zones[0])


def number_state(e164: str) -> str | None:
    """The US state (two letters) of a +1 number's area code, else None."""
    if not e164.startswith("+1") or len(e164) != 12:
        return None
    return _area_codes().get(e164[2:5])


def phone_facts(e164: str | None) -> tuple[str | None, str | None]:
    """``(phone_zone, phone_state)`` of a primary number (both None without one)."""
    if e164 is None:
        return None, None
    return number_zone(e164), number_state(e164)
