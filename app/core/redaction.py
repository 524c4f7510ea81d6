"""Masks personal data and secrets in free text: for log lines and, if asked, provider prompts.

`redact(text)` replaces emails, phone numbers, card numbers (Luhn-valid only), IBANs (mod-97
valid only) and API-key-like strings with `[email]`, `[phone]`, `[card]`, `[iban]` and
`[secret]`. It errs towards leaving ordinary text alone: years, counts, dates, prices, UUIDs
and words are kept, and everything it does not mask (unicode included) is returned unchanged.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable

EMAIL = "[email]"
PHONE = "[phone]"
CARD = "[card]"
IBAN = "[iban]"
SECRET = "[secret]"

# Secrets with a recognisable shape, masked whole.
_PREFIXED_SECRET = re.compile(
    r"(?<![\w-])(?:"
    r"sk-ant-[A-Za-z0-9_\-]{8,}"  # Anthropic
    r"|sk-[A-Za-z0-9_\-]{10,}"  # OpenAI (sk-..., sk-proj-...)
    r"|ca_[A-Za-z0-9]{16,}"  # Stripe Connect client ids
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}"  # Stripe keys
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack tokens
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r"|AIza[0-9A-Za-z_\-]{30,}"  # Google API keys
    r"|eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"  # JWTs
    r")"
)
# The credential after an auth scheme or a `key=value` / `"key": "value"` that names a secret.
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/\-]{8,}=*")
_NAMED_SECRET = re.compile(
    r"(?i)\b((?:x-)?api[_-]?key|access[_-]?token|refresh[_-]?token|client[_-]?secret"
    r"|password|passwd|secret)(\"?'?\s*[:=]\s*[\"']?)([^\s\"',;&]{6,})"
)
# A long run of base64 or hex characters; `_looks_random` decides whether it is a secret.
_TOKEN_RUN = re.compile(r"(?<![A-Za-z0-9+/=_\-])[A-Za-z0-9+/=_\-]{32,}(?![A-Za-z0-9+/=_\-])")
_HEX = re.compile(r"[0-9a-fA-F]+")
_SEGMENT = re.compile(r"[A-Z]?[a-z]+|[A-Z]+|\d+")

_EMAIL = re.compile(r"(?<![\w.+%\-])[\w.+%\-]+@[\w\-]+(?:\.[\w\-]+)*\.[A-Za-z]{2,}\b")

# A country code, check digits, then up to 30 capitals or digits, grouped by spaces or not.
_IBAN_CANDIDATE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}")
# Total IBAN length per country (SWIFT IBAN registry).
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

# 13 to 19 digits, optionally grouped by single spaces or dashes.
_CARD_CANDIDATE = re.compile(r"(?<![\w\-])\d(?:[ \-]?\d){12,18}(?!\d)")

# Phone numbers: international (+ or 00), national with a trunk 0, and North American.
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+.\-/@])(?:"
    r"\+\d{1,3}(?:[ .\-]?\(?\d{1,5}\)?){1,6}"  # +44 20 7946 0958, +1 (555) 123-4567
    r"|00\d{1,3}(?:[ .\-]\(?\d{1,5}\)?){2,6}"  # 0044 20 7946 0958
    r"|\(0\d{1,4}\)[ .\-]?\d{2,5}(?:[ .\-]?\d{2,5}){0,3}"  # (030) 1234567
    r"|0\d{1,4}(?:[ .\-]\d{2,8}){1,4}"  # 020 7946 0958, 06 12 34 56 78, 0151-23456789
    r"|0\d{9,10}"  # 07700900123
    r"|\(?[2-9]\d{2}\)?[ .\-]?\d{3}[ .\-]\d{4}"  # (555) 123-4567, 555.123.4567
    r")(?![\w\-/@]|\.\d)"
)
_NON_DIGIT = re.compile(r"\D")


def redact(text: str) -> str:
    """`text` with personal data and secrets replaced by `[email]`, `[card]`, `[secret]`, ..."""
    if len(text) < 6:
        return text
    text = _PREFIXED_SECRET.sub(SECRET, text)
    text = _BEARER.sub(lambda m: m.group(1) + SECRET, text)
    text = _NAMED_SECRET.sub(lambda m: m.group(1) + m.group(2) + SECRET, text)
    text = _TOKEN_RUN.sub(_mask_if(SECRET, _looks_random), text)
    if "@" in text:
        text = _EMAIL.sub(EMAIL, text)
    # An IBAN-shaped string whose check fails is left whole: its digit groups are not cards
    # or phone numbers.
    parts: list[str] = []
    done = 0
    position = 0
    while match := _IBAN_CANDIDATE.search(text, position):
        length = _iban_length(match.group())
        if length:
            parts += [_mask_numbers(text[done : match.start()]), IBAN]
            done = position = match.start() + length
        elif match.group()[:2] in _IBAN_LENGTHS:
            parts += [_mask_numbers(text[done : match.start()]), match.group()]
            done = position = match.end()
        else:
            position = match.start() + 1
    parts.append(_mask_numbers(text[done:]))
    return "".join(parts)


def _mask_numbers(text: str) -> str:
    text = _CARD_CANDIDATE.sub(_mask_card, text)
    return _PHONE_CANDIDATE.sub(_mask_if(PHONE, _is_phone), text)


def _mask_if(mask: str, accept: Callable[[str], bool]) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        return mask if accept(match.group()) else match.group()

    return replace


def _entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _looks_random(run: str) -> bool:
    """A key or token, not a long word, path or identifier: mixed characters, high entropy."""
    has_digit = any(c.isdigit() for c in run)
    if _HEX.fullmatch(run):
        return has_digit and any(c.isalpha() for c in run) and _entropy(run) >= 3.0
    has_upper = any(c.isupper() for c in run)
    has_lower = any(c.islower() for c in run)
    if not (has_digit and has_upper and has_lower) or _entropy(run) < 4.0:
        return False
    # Random text breaks into short case/digit segments; CamelCase identifiers into words.
    segments = _SEGMENT.findall(run)
    return len(run) / max(len(segments), 1) < 3.0


def is_valid_iban(iban: str) -> bool:
    """A listed country, its length, and the ISO 13616 mod-97 check."""
    iban = iban.replace(" ", "").upper()
    if len(iban) != _IBAN_LENGTHS.get(iban[:2]):
        return False
    if not iban[:2].isalpha() or not iban[2:4].isdigit() or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban_length(candidate: str) -> int:
    """The length of the valid IBAN the candidate starts with (it may run on), or 0."""
    expected = _IBAN_LENGTHS.get(candidate[:2])
    if expected is None:
        return 0
    compact = 0
    for index, char in enumerate(candidate):
        if char != " ":
            compact += 1
            if compact == expected:
                return index + 1 if is_valid_iban(candidate[: index + 1]) else 0
    return 0


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that every payment card number satisfies."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    """The candidate, or its longest Luhn-valid group prefix of 13+ digits, masked as a card."""
    candidate = match.group()
    for end in range(len(candidate), 0, -1):
        prefix, rest = candidate[:end], candidate[end:]
        if rest[:1].isdigit() or not prefix[-1].isdigit():
            continue  # only cut between groups
        digits = _NON_DIGIT.sub("", prefix)
        if len(digits) < 13:
            break
        if luhn_valid(digits) and _card_grouping(prefix):
            return CARD + rest
    return candidate


def _card_grouping(number: str) -> bool:
    """Ungrouped, or grouped as cards are printed: by fours, or 4-6-5 and 4-6-4."""
    groups = [len(group) for group in re.split(r"[ \-]", number)]
    if len(groups) == 1 or groups in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(size == 4 for size in groups[:-1]) and 1 <= groups[-1] <= 4


def _is_phone(candidate: str) -> bool:
    digits = _NON_DIGIT.sub("", candidate)
    if len(set(digits)) < 3:  # 0000000000 and the like are placeholders, not numbers
        return False
    if candidate.startswith("+"):
        return 8 <= len(digits) <= 15
    if candidate.startswith("00"):
        return 10 <= len(digits) <= 17
    if candidate.lstrip("(").startswith("0"):
        return 9 <= len(digits) <= 12
    return len(digits) == 10
