"""Phone numbers: E.164 normalisation and the digits used by search."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

E164_MESSAGE = "Phone must be in E.164 format"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PHONE_SEARCH = re.compile(r"^[\d\s()+.\-]+$")


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

    Raises ``ValueError`` with the contract's message when the number cannot
    be a real one: we would rather reject than store a number that never rings.
    """
    text = raw.strip()
    if not text or len(text) > 40 or not _typed_like_a_number(text):
        raise ValueError(E164_MESSAGE)
    try:
        parsed = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException as exc:
        raise ValueError(E164_MESSAGE) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(E164_MESSAGE)
    e164: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if not _E164.match(e164):
        raise ValueError(E164_MESSAGE)
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
