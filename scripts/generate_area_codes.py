"""Write ``src/contact_sync/scheduling/data/us_area_codes.json`` from phonenumbers' geocoding.

The jurisdiction rules are keyed by the US state of a contact's primary number.
phonenumbers' geocoder knows it, but loading its data costs ~100 MB per process
(measured), too much for every worker and API process; a US area code never
spans two states, so its answer per area code is kept as a small file instead.
``tests/test_scheduling_numbers.py`` checks the file against the geocoder of the
pinned phonenumbers, so an upgrade that moves an area code fails the suite.

Run: ``python scripts/generate_area_codes.py`` (after upgrading phonenumbers).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import phonenumbers
from phonenumbers import geocoder

TARGET = Path(__file__).parents[1] / "src/contact_sync/scheduling/data/us_area_codes.json"

STATES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA",
    "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE", "Washington D.C.": "DC",
    "Florida": "FL", "Georgia": "GA", "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL",
    "Indiana": "IN", "Iowa": "IA", "Kansas": "KS", "Kentucky": "KY", "Louisiana": "LA",
    "Maine": "ME", "Maryland": "MD", "Massachusetts": "MA", "Michigan": "MI",
    "Minnesota": "MN", "Mississippi": "MS", "Missouri": "MO", "Montana": "MT",
    "Nebraska": "NE", "Nevada": "NV", "New Hampshire": "NH", "New Jersey": "NJ",
    "New Mexico": "NM", "New York": "NY", "North Carolina": "NC", "North Dakota": "ND",
    "Ohio": "OH", "Oklahoma": "OK", "Oregon": "OR", "Pennsylvania": "PA",
    "Rhode Island": "RI", "South Carolina": "SC", "South Dakota": "SD", "Tennessee": "TN",
    "Texas": "TX", "Utah": "UT", "Vermont": "VT", "Virginia": "VA", "Washington": "WA",
    "West Virginia": "WV", "Wisconsin": "WI", "Wyoming": "WY", "Puerto Rico": "PR",
    "Guam": "GU", "US Virgin Islands": "VI", "American Samoa": "AS",
    "Northern Mariana Islands": "MP",
}  # fmt: skip


def state_of(description: str) -> str | None:
    """``Florida`` → FL, ``Miami, FL`` → FL; anything else None."""
    if description in STATES:
        return STATES[description]
    head, _, tail = description.rpartition(", ")
    if head and tail in STATES.values():
        return tail
    return None


def area_codes() -> dict[str, str]:
    """Each US area code whose geographic numbers all geocode to one state."""
    found: dict[str, str] = {}
    for npa in range(200, 1000):
        states = set()
        for nxx in range(200, 1000, 7):
            number = phonenumbers.parse(f"+1{npa}{nxx}0100")
            if phonenumbers.region_code_for_number(number) != "US":
                continue
            if not phonenumbers.is_valid_number(number):
                continue
            state = state_of(geocoder.description_for_number(number, "en"))
            if state is not None:
                states.add(state)
        if len(states) == 1:
            found[str(npa)] = states.pop()
        elif len(states) > 1:
            print(f"area code {npa} spans {sorted(states)}: left out", file=sys.stderr)
    return found


def main() -> None:
    """Write the file, sorted, with the phonenumbers version it came from."""
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "source": f"phonenumbers {phonenumbers.__version__} geocoder "
        "(scripts/generate_area_codes.py)",
        "area_codes": dict(sorted(area_codes().items())),
    }
    TARGET.write_text(json.dumps(document, indent=1) + "\n")
    print(f"{len(document['area_codes'])} area codes written to {TARGET}")


if __name__ == "__main__":
    main()
