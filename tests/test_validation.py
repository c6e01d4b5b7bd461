"""Validation of contact input (docs/design.md §2): pure, no database.

Every documented rule has a test here; errors are ``ValidationFailed`` whose
``details`` map snake_case field names to messages the API returns as-is.
"""

from __future__ import annotations

import math
import re
from typing import Any

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from contact_sync.contacts import lead_status
from contact_sync.contacts.model import (
    ContactCreate,
    normalise_lead_status,
    parse_create,
    parse_patch,
)
from contact_sync.contacts.phones import (
    E164_MESSAGE,
    is_valid_region,
    normalise_phone,
    phone_message,
    search_digits,
)
from contact_sync.errors import ValidationFailed

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
NAMES = {"first_name": "Ada", "last_name": "Lovelace"}


def create(region: str = "US", **fields: Any) -> ContactCreate:
    """A valid create body plus ``fields``, validated."""
    return parse_create({**NAMES, **fields}, region=region)


def create_errors(data: dict[str, Any], region: str = "US") -> dict[str, str]:
    """The ``details`` of the ValidationFailed a create body raises."""
    with pytest.raises(ValidationFailed) as caught:
        parse_create(data, region=region)
    return caught.value.details


def field_error(field: str, value: Any, region: str = "US") -> dict[str, str]:
    """The details when only ``field`` is bad (the names are valid)."""
    return create_errors({**NAMES, field: value}, region=region)


# --- names -----------------------------------------------------------------


def test_first_and_last_name_are_required_on_create() -> None:
    details = create_errors({})
    assert details == {"first_name": "Field required", "last_name": "Field required"}


def test_names_are_trimmed() -> None:
    body = parse_create({"first_name": "  Ada ", "last_name": "\tLovelace\n"}, region="US")
    assert (body.first_name, body.last_name) == ("Ada", "Lovelace")


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
@pytest.mark.parametrize("field", ["first_name", "last_name"])
def test_a_blank_name_is_rejected_naming_the_field(field: str, blank: str) -> None:
    details = field_error(field, blank)
    assert details == {field: "Must not be empty"}


@pytest.mark.parametrize("field", ["first_name", "last_name"])
def test_a_name_may_have_100_characters_but_not_101(field: str) -> None:
    assert getattr(create(**{field: "x" * 100}), field) == "x" * 100
    assert field_error(field, "x" * 101) == {field: "Must be at most 100 characters"}


def test_name_length_is_counted_after_trimming() -> None:
    assert create(first_name="  " + "y" * 100 + "  ").first_name == "y" * 100


@pytest.mark.parametrize("value", [42, ["Ada"], {"name": "Ada"}])
def test_a_name_must_be_a_string(value: Any) -> None:
    assert field_error("first_name", value) == {"first_name": "Must be a string"}


def test_a_name_with_a_nul_character_is_rejected() -> None:
    assert field_error("last_name", "Love\x00lace") == {
        "last_name": "Must not contain NUL characters"
    }


@pytest.mark.parametrize("field", ["first_name", "email", "notes", "job_title", "source"])
def test_text_with_a_lone_surrogate_is_rejected_as_invalid_unicode(field: str) -> None:
    # JSON's "\ud800" escape decodes to a lone surrogate that no database can store.
    assert field_error(field, "Ada\ud800") == {field: "Must be valid Unicode text"}


def test_a_tag_with_a_lone_surrogate_is_rejected() -> None:
    assert field_error("tags", ["hot\ud83d"]) == {"tags": "Each tag must be a non-empty string"}


def test_a_patch_need_not_carry_names_but_may_not_null_them() -> None:
    assert parse_patch({"job_title": "CTO"}, region="US").changes() == {"job_title": "CTO"}
    with pytest.raises(ValidationFailed) as caught:
        parse_patch({"first_name": None}, region="US").changes()
    assert caught.value.details == {"first_name": "Must not be null"}


def test_a_patch_trims_and_bounds_names_like_a_create() -> None:
    assert parse_patch({"lastName": " Byron "}, region="US").changes() == {"last_name": "Byron"}
    with pytest.raises(ValidationFailed) as caught:
        parse_patch({"last_name": " "}, region="US")
    assert caught.value.details == {"last_name": "Must not be empty"}


# --- email -----------------------------------------------------------------


def test_the_email_domain_is_lower_cased_and_the_local_part_kept() -> None:
    assert create(email="Ada.Lovelace@Example.COM").email == "Ada.Lovelace@example.com"


def test_an_email_is_trimmed() -> None:
    assert create(email="  ada@example.com ").email == "ada@example.com"


@pytest.mark.parametrize(
    "bad",
    [
        "not-an-email",
        "ada@",
        "@example.com",
        "ada@@example.com",
        "ada@exa mple.com",
        "ada lovelace@example.com",
        "ada@localhost",
        "ada@example.invalid",
    ],
)
def test_an_invalid_email_is_rejected_naming_email(bad: str) -> None:
    assert field_error("email", bad) == {"email": "Email must be a valid address"}


def test_an_email_longer_than_320_characters_is_rejected() -> None:
    assert "email" in field_error("email", "a" * 64 + "@" + "b" * 300 + ".com")


def test_an_empty_email_is_stored_as_null() -> None:
    assert create(email="").email is None


# --- phones ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(202) 555-1234", "US", "+12025551234"),
        ("202.555.1234", "US", "+12025551234"),
        ("202 555 1234", "US", "+12025551234"),
        ("1-202-555-1234", "US", "+12025551234"),
        ("+1 202 555 1234", "US", "+12025551234"),
        ("+12025551234", "DE", "+12025551234"),
        ("0049 30 1234567", "DE", "+49301234567"),
        ("030 1234567", "DE", "+49301234567"),
        ("+49 (0)30 1234567", "US", "+49301234567"),
        ("020 7946 0958", "GB", "+442079460958"),
    ],
)
def test_a_phone_is_normalised_to_e164_using_the_region(
    raw: str, region: str, expected: str
) -> None:
    body = create(region=region, phone=raw, phone_secondary=raw)
    assert body.phone == expected
    assert body.phone_secondary == expected


def test_the_same_national_number_reads_differently_in_another_region() -> None:
    assert create(region="US", phone="(202) 555-1234").phone == "+12025551234"
    # In Germany 0202 is Wuppertal's area code, without the trunk 0.
    assert create(region="DE", phone="(202) 555-1234").phone == "+492025551234"


@pytest.mark.parametrize(
    "bad",
    [
        "12345",
        "555-1234",
        "call me maybe",
        "+999 1234567",
        "+1 202 555 123",
        "+1 202 555 12345 678 90",
        "+",
        "+44 20 7946",
    ],
)
@pytest.mark.parametrize("field", ["phone", "phone_secondary"])
def test_an_invalid_phone_is_rejected_with_the_e164_message_naming_the_field(
    field: str, bad: str
) -> None:
    assert field_error(field, bad) == {field: E164_MESSAGE}


def test_a_camel_case_phone_secondary_error_is_named_in_snake_case() -> None:
    details = create_errors({**NAMES, "phoneSecondary": "12345"})
    assert details == {"phone_secondary": E164_MESSAGE}


def test_an_empty_phone_is_stored_as_null() -> None:
    assert create(phone="", phone_secondary="  ").phone is None


def test_a_patch_normalises_phones_with_the_region() -> None:
    patch = parse_patch({"phone": "030 1234567"}, region="DE")
    assert patch.changes() == {"phone": "+49301234567"}
    with pytest.raises(ValidationFailed) as caught:
        parse_patch({"phone_secondary": "nope"}, region="DE")
    assert caught.value.details == {"phone_secondary": phone_message("DE")}


def test_normalise_phone_raises_value_error_with_the_contract_message() -> None:
    with pytest.raises(ValueError, match=r"^Phone must be in E\.164 format \(\+12025551234\)"):
        normalise_phone("not a phone")
    with pytest.raises(ValueError, match=r"E\.164"):
        normalise_phone("1" * 41)
    with pytest.raises(ValueError, match=r"E\.164"):
        normalise_phone("   ")


@pytest.mark.parametrize(
    ("bad", "region"), [("12345", "US"), ("030 12", "de"), ("abc", "GB"), ("+", "FR")]
)
def test_a_phone_error_says_national_numbers_of_the_teams_region_are_read_too(
    bad: str, region: str
) -> None:
    """Round 1 said only "must be in E.164 format", though ``(202) 555-1234`` is accepted."""
    expected = (
        "Phone must be in E.164 format (+12025551234) or a national number of the "
        f"team's region {region.upper()}"
    )
    with pytest.raises(ValueError, match=r"E\.164") as caught:
        normalise_phone(bad, region)
    assert str(caught.value) == expected
    with pytest.raises(ValidationFailed) as failed:
        parse_create({**NAMES, "phone": bad}, region=region)
    assert failed.value.details == {"phone": expected}


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("202-555", "202555"),
        ("(202) 555", "202555"),
        ("+1 202", "1202"),
        ("2025551234", "2025551234"),
        ("ada", None),
        ("ada 202", None),
        ("---", None),
    ],
)
def test_search_digits_reads_phone_like_text_only(text: str, digits: str | None) -> None:
    assert search_digits(text) == digits


def test_regions_are_checked_against_phonenumbers() -> None:
    assert is_valid_region("US")
    assert is_valid_region("de")
    assert not is_valid_region("ZZ")


# --- phone properties (hypothesis) -----------------------------------------


def _example_numbers() -> list[tuple[str, phonenumbers.PhoneNumber]]:
    kinds = (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE)
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in kinds:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None and phonenumbers.is_valid_number(number):
                found.append((region, number))
    return found


EXAMPLES = _example_numbers()
SEPARATORS = st.sampled_from([" ", "-", ".", "", "  ", " - "])


def _reformat(draw: st.DrawFn, text: str) -> str:
    """``text``'s digit groups joined by drawn separators, maybe in parens."""
    plus = "+" if text.startswith("+") else ""
    groups = re.findall(r"\d+", text)
    if len(groups) > 1 and draw(st.booleans()):
        groups[0] = f"({groups[0]})"
    joined = groups[0]
    for group in groups[1:]:
        joined += draw(SEPARATORS) + group
    pad = draw(st.sampled_from(["", " ", "\t"]))
    return f"{pad}{plus}{joined}{pad}"


@st.composite
def national_inputs(draw: st.DrawFn) -> tuple[str, str, str]:
    """(typed text, region, expected E.164) from a real number in national format."""
    region, number = draw(st.sampled_from(EXAMPLES))
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    expected = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return _reformat(draw, national), region, expected


@st.composite
def international_inputs(draw: st.DrawFn) -> tuple[str, str, str]:
    """(typed text, any region, expected E.164) from an international format."""
    _, number = draw(st.sampled_from(EXAMPLES))
    fmt = draw(st.sampled_from([PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.E164]))
    text = phonenumbers.format_number(number, fmt)
    region = draw(st.sampled_from(["US", "DE", "GB", "FR", "IN", "BR", "JP"]))
    expected = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return _reformat(draw, text), region, expected


@settings(max_examples=300, deadline=None)
@given(national_inputs())
@example(("(202) 555-1234", "US", "+12025551234"))
@example(("0049 30 1234567", "DE", "+49301234567"))
def test_a_real_number_typed_in_national_format_normalises_to_its_e164(
    case: tuple[str, str, str],
) -> None:
    text, region, expected = case
    assert normalise_phone(text, region) == expected


@settings(max_examples=300, deadline=None)
@given(international_inputs())
def test_a_real_number_in_international_format_normalises_in_any_region(
    case: tuple[str, str, str],
) -> None:
    text, region, expected = case
    assert normalise_phone(text, region) == expected


PHONE_ALPHABET = st.sampled_from(list("0123456789+()-. ext#*/"))


@settings(max_examples=500, deadline=None)
@given(
    text=st.one_of(st.text(max_size=50), st.text(PHONE_ALPHABET, max_size=25)),
    region=st.sampled_from(["US", "DE", "GB", "FR", "IN", "BR", "AU"]),
)
def test_any_text_is_rejected_or_becomes_an_e164_number_that_normalises_to_itself(
    text: str, region: str
) -> None:
    try:
        result = normalise_phone(text, region)
    except ValueError as exc:
        message = str(exc)
    else:
        message = phone_message(region)
        assert E164.match(result), result
        assert normalise_phone(result, "US") == result
    assert message == phone_message(region)


# --- timezone --------------------------------------------------------------


@pytest.mark.parametrize("zone", ["America/Chicago", "Europe/Berlin", "Asia/Kolkata", "UTC"])
def test_an_iana_timezone_is_accepted(zone: str) -> None:
    assert create(timezone=zone).timezone == zone


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "america/chicago", "+02:00", "CETX", "x"])
def test_a_timezone_that_is_not_an_iana_name_is_rejected(zone: str) -> None:
    details = field_error("timezone", zone)
    assert details == {"timezone": "Timezone must be a valid IANA name such as America/Chicago"}


# --- notes, job title, source, contact method --------------------------------


def test_notes_may_hold_10000_characters_but_not_10001() -> None:
    assert create(notes="n" * 10_000).notes == "n" * 10_000
    assert field_error("notes", "n" * 10_001) == {"notes": "Must be at most 10000 characters"}


def test_job_title_and_source_are_bounded() -> None:
    assert create(job_title="j" * 200, source="s" * 100).source == "s" * 100
    assert "job_title" in field_error("job_title", "j" * 201)
    assert "source" in field_error("source", "s" * 101)


def test_the_preferred_contact_method_is_a_lower_case_slug() -> None:
    assert create(preferred_contact_method="Phone").preferred_contact_method == "phone"
    assert "preferred_contact_method" in field_error("preferred_contact_method", "e-mail!")


# --- custom fields -----------------------------------------------------------


def test_custom_fields_hold_json_values_under_slug_keys() -> None:
    fields = {"budget": 50000, "product_interest": "solar", "roof-type": {"a": [1, 2.5, None]}}
    assert create(custom_fields=fields).custom_fields == fields


def test_a_custom_field_key_may_have_64_characters_but_not_65() -> None:
    assert create(custom_fields={"k" * 64: 1}).custom_fields == {"k" * 64: 1}
    details = field_error("custom_fields", {"k" * 65: 1})
    assert list(details) == ["custom_fields"]
    assert "slug of at most 64 characters" in details["custom_fields"]


@pytest.mark.parametrize("key", ["", "has space", "dotted.key", "émoji", "-leading", "a/b"])
def test_a_custom_field_key_that_is_not_a_slug_is_rejected(key: str) -> None:
    details = field_error("custom_fields", {key: 1})
    assert "slug" in details["custom_fields"]


def test_at_most_200_custom_fields() -> None:
    assert len(create(custom_fields={f"k{i}": i for i in range(200)}).custom_fields or {}) == 200
    details = field_error("custom_fields", {f"k{i}": i for i in range(201)})
    assert details == {"custom_fields": "At most 200 custom fields"}


def test_custom_fields_may_not_exceed_64_kib() -> None:
    assert create(custom_fields={"blob": "x" * 60_000}).custom_fields is not None
    details = field_error("custom_fields", {"blob": "x" * (64 * 1024)})
    assert details == {"custom_fields": "Custom fields must be at most 64 KiB"}


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, [1, math.nan], {"deep": {"x": math.inf}}]
)
def test_non_finite_floats_in_custom_fields_are_rejected(value: Any) -> None:
    details = field_error("custom_fields", {"score": value})
    assert details == {"custom_fields": "Custom field values must be finite JSON values"}


def test_custom_field_values_may_nest_only_20_levels() -> None:
    shallow: Any = 1
    for _ in range(20):
        shallow = [shallow]
    assert create(custom_fields={"deep": shallow}).custom_fields == {"deep": shallow}
    deep: Any = 1
    for _ in range(30):
        deep = {"x": deep}
    assert "nest" in field_error("custom_fields", {"deep": deep})["custom_fields"]


@pytest.mark.parametrize(
    "value", ["a\x00b", ["ok", "a\x00"], {"k\x00": 1}, "lone \ud800", {"\udfff": 1}]
)
def test_custom_field_values_may_not_hold_text_no_database_can_store(value: Any) -> None:
    # U+0000 (PostgreSQL's JSONB refuses it) or a lone surrogate (not UTF-8 at all).
    details = field_error("custom_fields", {"note": value})
    assert details == {
        "custom_fields": "Custom field values must be valid Unicode text without NUL characters"
    }


@pytest.mark.parametrize("value", [["a", "b"], "text", 3])
def test_custom_fields_must_be_an_object(value: Any) -> None:
    assert field_error("custom_fields", value) == {
        "custom_fields": "Custom fields must be an object"
    }


# --- tags --------------------------------------------------------------------


def test_tags_are_deduplicated_keeping_first_seen_order() -> None:
    assert create(tags=["b", "a", "b", "c", "a"]).tags == ["b", "a", "c"]


def test_tags_are_trimmed_before_deduplication() -> None:
    assert create(tags=[" hot ", "hot", "Hot"]).tags == ["hot", "Hot"]


def test_a_tag_may_have_64_characters_but_not_65() -> None:
    assert create(tags=["t" * 64]).tags == ["t" * 64]
    assert field_error("tags", ["t" * 65]) == {"tags": "Each tag must be at most 64 characters"}


def test_at_most_50_distinct_tags() -> None:
    assert len(create(tags=[f"t{i}" for i in range(50)]).tags or []) == 50
    assert field_error("tags", [f"t{i}" for i in range(51)]) == {"tags": "At most 50 tags"}


def test_duplicates_do_not_count_towards_the_50_tag_limit() -> None:
    tags = [f"t{i}" for i in range(50)] * 2
    assert create(tags=tags).tags == [f"t{i}" for i in range(50)]


@pytest.mark.parametrize("tags", [[""], ["  "], [1], [None], ["ok", {"a": 1}]])
def test_each_tag_must_be_a_non_empty_string(tags: list[Any]) -> None:
    assert field_error("tags", tags) == {"tags": "Each tag must be a non-empty string"}


def test_tags_must_be_an_array() -> None:
    assert field_error("tags", "hot,cold") == {"tags": "Tags must be an array of strings"}


# --- lead status -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Do Not Contact", "do_not_contact"),
        ("Customer", "customer"),
        ("  QUALIFIED  ", "qualified"),
        ("do-not-contact", "do_not_contact"),
        ("Hot  Prospect", "hot_prospect"),
        ("tier2", "tier2"),
    ],
)
def test_the_lead_status_is_normalised_to_a_lower_case_slug(raw: str, expected: str) -> None:
    assert create(lead_status=raw).lead_status == expected
    assert parse_patch({"leadStatus": raw}, region="US").changes() == {"lead_status": expected}


@pytest.mark.parametrize("status", lead_status.KNOWN)
def test_every_known_lead_status_is_accepted_as_is(status: str) -> None:
    assert normalise_lead_status(status) == status


@pytest.mark.parametrize("bad", ["!!!", "-", "_new", "üntouchable", "x" * 65])
def test_a_lead_status_that_cannot_become_a_slug_is_rejected(bad: str) -> None:
    details = field_error("lead_status", bad)
    assert list(details) == ["lead_status"]


def test_a_missing_lead_status_is_left_for_the_store_to_default() -> None:
    assert create().lead_status is None
    assert parse_patch({"lead_status": None}, region="US").changes() == {"lead_status": "new"}


# --- do_not_call -------------------------------------------------------------


def test_do_not_call_defaults_to_false_and_accepts_booleans() -> None:
    assert create().do_not_call is False
    assert create(do_not_call=True).do_not_call is True


@pytest.mark.parametrize("value", ["true", "false", 1, 0, "yes", None])
def test_do_not_call_must_be_a_boolean(value: Any) -> None:
    details = field_error("do_not_call", value)
    assert list(details) == ["do_not_call"]


def test_a_patch_may_clear_do_not_call_only_with_a_boolean() -> None:
    assert parse_patch({"doNotCall": False}, region="US").changes() == {"do_not_call": False}
    with pytest.raises(ValidationFailed) as caught:
        parse_patch({"doNotCall": "false"}, region="US")
    assert list(caught.value.details) == ["do_not_call"]


# --- names of fields, unknown fields, body shape ---------------------------------

CAMEL = {
    "teamId": "team-1",
    "companyId": "co-1",
    "firstName": "Ada",
    "lastName": "Lovelace",
    "email": "ada@example.com",
    "phone": "(202) 555-1234",
    "phoneSecondary": "202 555 9876",
    "jobTitle": "Analyst",
    "leadStatus": "Qualified",
    "source": "referral",
    "timezone": "Europe/London",
    "preferredContactMethod": "email",
    "doNotCall": True,
    "notes": "Met at the engine demo.",
    "customFields": {"budget": 1000},
    "tags": ["math"],
}


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def test_camel_case_and_snake_case_bodies_give_the_same_contact() -> None:
    snake = {_snake(k): v for k, v in CAMEL.items()}
    from_camel = parse_create(CAMEL, region="US")
    assert from_camel == parse_create(snake, region="US")
    assert from_camel.phone_secondary == "+12025559876"
    assert from_camel.preferred_contact_method == "email"
    assert from_camel.custom_fields == {"budget": 1000}


def test_camel_case_and_snake_case_may_be_mixed() -> None:
    body = parse_create(
        {"firstName": "Ada", "last_name": "Lovelace", "jobTitle": "Analyst"}, region="US"
    )
    assert (body.first_name, body.last_name, body.job_title) == ("Ada", "Lovelace", "Analyst")


def test_a_patch_accepts_camel_case_and_reports_only_the_fields_sent() -> None:
    patch = parse_patch({"jobTitle": "CTO", "customFields": {"a": None}, "version": 3}, region="US")
    assert patch.changes() == {"job_title": "CTO", "custom_fields": {"a": None}}
    assert patch.version == 3


@pytest.mark.parametrize("version", [0, -1, "3", 1.5])
def test_a_patch_version_must_be_a_positive_integer(version: Any) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_patch({"version": version}, region="US")
    assert list(caught.value.details) == ["version"]


@pytest.mark.parametrize("parse", [parse_create, parse_patch])
def test_an_unknown_field_is_rejected_by_name(parse: Any) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse({**NAMES, "favourite_colour": "blue"}, region="US")
    assert caught.value.details == {"favourite_colour": "Unknown field"}


@pytest.mark.parametrize("parse", [parse_create, parse_patch])
@pytest.mark.parametrize("body", [[], "Ada", None, 3])
def test_a_body_that_is_not_an_object_is_rejected(parse: Any, body: Any) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse(body, region="US")
    assert caught.value.details == {"body": "Must be a JSON object"}


def test_every_bad_field_is_reported_at_once() -> None:
    details = create_errors(
        {
            "firstName": "",
            "email": "nope",
            "phone": "123",
            "timezone": "Nowhere/Land",
            "tags": ["x" * 65],
        }
    )
    assert set(details) == {"first_name", "last_name", "email", "phone", "timezone", "tags"}
    assert details["phone"] == E164_MESSAGE


def test_validation_failed_names_fields_in_its_message() -> None:
    error = ValidationFailed({"phone": E164_MESSAGE})
    assert f"phone: {E164_MESSAGE}" in str(error)
