"""Phone numbers: E.164 normalisation and the digits used by search."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import phonenumbers

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PHONE_SEARCH = re.compile(r"^[\d\s()+.\-]+$")


def phone_message(region: str) -> str:
    """The error for a number that cannot be read, naming what would be.

    It starts as the message always did, so that clients matching its start keep
    working, and says that national numbers of the team's region are read too.
    """
    return (
        "Phone must be in E.164 format (+12025551234) or a national number of the "
        f"team's region {region.upper()}"
    )


# The message for the default region (US), as the API's 422 details carry it.
E164_MESSAGE = phone_message("US")


def _typed_like_a_number(text: str) -> bool:
    """Digits and punctuation, with at most a leading ``+``.

    phonenumbers reads more: letters as a keypad (``202-555-ABCD``), an
    extension it then drops (``x12``), ``tel:``, ``++1…``. Each is a number
    someone may not have meant, so it is rejected rather than guessed.
    """
    folded = unicodedata.normalize("NFKC", text)  # full-width digits and plus, as typed in Asia
    return not any(char.isalpha() for char in folded) and "+" not in folded[1:]


def normalise_phone(raw: str, region: str = "US") -> str:
    """Return ``raw`` as E.164, reading national formats in ``region``.

    Raises ``ValueError`` with ``phone_message(region)`` when the number cannot
    be a real one: we would rather reject than store a number that never rings.
    Numbers read are cached (the event apply reads each event's number once to
    find its contact and once for its call's row; the same numbers recur).
    """
    return _normalised(raw, region)


@lru_cache(maxsize=4096)
def _normalised(raw: str, region: str) -> str:
    text = raw.strip()
    if not text or len(text) > 40 or not _typed_like_a_number(text):
        raise ValueError(phone_message(region))
    try:
        parsed = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException as exc:
        raise ValueError(phone_message(region)) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(phone_message(region))
    e164: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if not _E164.match(e164):
        raise ValueError(phone_message(region))
    return e164


def is_valid_region(region: str) -> bool:
    """Whether ``region`` is an ISO country code that phonenumbers knows."""
    return region.upper() in phonenumbers.SUPPORTED_REGIONS


def search_digits(text: str) -> str | None:
    """The digits to look for in phone numbers, if ``text`` reads like a phone.

    ``202-555`` → ``202555``; ``smith`` → None (a name search, not a phone one).
    """
    if not _PHONE_SEARCH.match(text):
        return None
    digits = re.sub(r"\D", "", text)
    return digits or None
