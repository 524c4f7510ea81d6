"""What `redact` masks (emails, phones, cards, IBANs, keys) and the ordinary text it keeps."""

from __future__ import annotations

import secrets

import pytest

from app.core.logging import redact_event
from app.core.redaction import is_valid_iban, luhn_valid, redact

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+chat@example.co.uk today", "write to [email] today"),
        ("Grüße an jürgen.müller@beispiel.de 東京", "Grüße an [email] 東京"),
        ("<a@b.io>, c_d@e-f.org.", "<[email]>, [email]."),
    ],
)
def test_emails_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "number",
    [
        "+44 20 7946 0958",
        "+1 (555) 123-4567",
        "+4915123456789",
        "+33 6 12 34 56 78",
        "+49 (0)30 1234567",
        "0044 20 7946 0958",
        "020 7946 0958",
        "06 12 34 56 78",
        "0151 23456789",
        "(030) 1234567",
        "07700900123",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
    ],
)
def test_phone_numbers_are_masked(number: str) -> None:
    assert redact(f"call me on {number}, thanks") == "call me on [phone], thanks"


@pytest.mark.parametrize(
    "text",
    [
        "In 2024 we had 150 users and 1,000,000 requests.",
        "Released 2024-11-25 at 10:30, version 3.12.1.",
        "Between 1999 and 2025, 42 of 365 days.",
        "Order 12345678 shipped; ip 192.168.100.200; ratio 0.123456789.",
        "It costs $250 000 or 1 000 000 €.",
        "Conversation 0192f5b0-0000-7000-8000-000000000000 was renamed.",
        "A placeholder 0000000000 is not a number.",
    ],
)
def test_ordinary_numbers_are_kept(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5555 5555 5555 4444",
        "3782 822463 10005",  # Amex, 15 digits
        "4222222222222",  # 13 digits
        "6011 0009 9013 9424",
    ],
)
def test_luhn_valid_card_numbers_are_masked(number: str) -> None:
    assert redact(f"pay with {number} now") == "pay with [card] now"


def test_a_card_number_followed_by_a_year_is_masked_without_the_year() -> None:
    assert redact("card 4111 1111 1111 1111 2027") == "card [card] 2027"


@pytest.mark.parametrize(
    "number", ["4111 1111 1111 1112", "4111111111111112", "1234-5678-9012-3456"]
)
def test_luhn_invalid_card_numbers_are_kept(number: str) -> None:
    assert not luhn_valid(number.replace(" ", "").replace("-", ""))
    assert redact(f"pay with {number} now") == f"pay with {number} now"


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "NL91ABNA0417164300",
        "FR14 2004 1010 0505 0001 3M02 606",
        "BE68539007547034",
        "NO9386011117947",
    ],
)
def test_valid_ibans_are_masked(iban: str) -> None:
    assert is_valid_iban(iban)
    assert redact(f"IBAN: {iban}. THANKS") == "IBAN: [iban]. THANKS"


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 01",  # check digits do not match
        "DE88370400440532013000",
        "GB82 WEST 1234 5698 7654 33",
        "XX89370400440532013000",  # no such country
    ],
)
def test_invalid_ibans_are_kept(iban: str) -> None:
    assert not is_valid_iban(iban)
    assert redact(f"IBAN: {iban}. THANKS") == f"IBAN: {iban}. THANKS"


@pytest.mark.parametrize(
    "secret",
    [
        "sk-test-api-key-7d2b5a",
        "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789",
        "ca_Fk0hnbSW7eGb5Wn7Mf6HwDSLYNo8hCdf",
        "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "AKIAIOSFODNN7EXAMPLE",
        JWT,
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",  # hex
        "1b2c3d4e5f60718293a4b5c6d7e8f901",  # 32 hex characters, like an Azure key
        "dGhpcyBpcyBhIHNlY3JldCBrZXkgdGhhdCBpcyBsb25nIGVub3VnaA==",  # base64
    ],
)
def test_keys_and_tokens_are_masked(secret: str) -> None:
    assert redact(f"the key is {secret} ok") == "the key is [secret] ok"


def test_random_tokens_are_masked() -> None:
    for _ in range(50):
        assert redact(secrets.token_hex(24)) == "[secret]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer tok-bearer-secret-91e3f0", "Authorization: Bearer [secret]"),
        ('{"api_key": "abcdef123456"}', '{"api_key": "[secret]"}'),
        ("https://x.test/v1?api-key=abcdef123456&q=1", "https://x.test/v1?api-key=[secret]&q=1"),
        ("password=hunter2hunter2", "password=[secret]"),
    ],
)
def test_credentials_after_their_name_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "the bearer of bad news",
        "a token is a piece of a word; sk-learn is a library",
        "/work/main/.venv/lib/python3.12/site-packages/starlette/_exception_handler.py line 42",
        "ThisIsAVeryLongCamelCaseIdentifierName2 and test_a_very_long_snake_case_name_2",
        "https://example.com/docs/getting-started/installation-guide",
    ],
)
def test_words_paths_and_identifiers_are_kept(text: str) -> None:
    assert redact(text) == text


def test_unicode_text_around_masks_is_preserved() -> None:
    text = "Ünïcödé 😀 ✓ — call +44 20 7946 0958 или напиши a@b.io 你好"
    assert redact(text) == "Ünïcödé 😀 ✓ — call [phone] или напиши [email] 你好"


def test_many_kinds_in_one_text() -> None:
    text = (
        "I'm ana@example.com, card 4111 1111 1111 1111, IBAN DE89370400440532013000, "
        "phone +1 555 123 4567, key sk-ant-api03-abcdefghijklmnop, in 2024."
    )
    assert redact(text) == (
        "I'm [email], card [card], IBAN [iban], phone [phone], key [secret], in 2024."
    )


class TestLogProcessor:
    def test_every_string_value_is_masked_nested_ones_too(self) -> None:
        event = redact_event(
            None,
            "info",
            {
                "event": "failed for a@b.io",
                "error": "upstream said sk-test-api-key-7d2b5a",
                "detail": {"cards": ["4111 1111 1111 1111"], "count": 3},
                "exception": f"Traceback ...\nRuntimeError: token {JWT}",
                "status": 502,
            },
        )
        assert event == {
            "event": "failed for [email]",
            "error": "upstream said [secret]",
            "detail": {"cards": ["[card]"], "count": 3},
            "exception": "Traceback ...\nRuntimeError: token [secret]",
            "status": 502,
        }

    def test_objects_are_masked_as_they_would_be_printed(self) -> None:
        event = redact_event(None, "error", {"error": ValueError("bad address a@b.io")})
        assert event["error"] == "ValueError('bad address [email]')"

    def test_its_own_fields_are_kept(self) -> None:
        request_id = secrets.token_hex(16)
        event = redact_event(None, "info", {"request_id": request_id, "level": "info"})
        assert event == {"request_id": request_id, "level": "info"}
