"""Text normalisation, comparison keys, word n-grams and PII scrubbing (pure functions)."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections import Counter

_ODD_SPACES = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_ZERO_WIDTH = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_INNER_SPACES = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")
_BLANK_LINES = re.compile(r"\n{3,}")
_WORDS = re.compile(r"\w+")


def normalise(text: str) -> str:
    """Unicode NFC; odd spaces to plain spaces; no zero-width characters; tidy whitespace.

    Leading indentation is kept (code), runs of inner spaces become one, trailing spaces go,
    three or more newlines become two.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _ZERO_WIDTH.sub("", _ODD_SPACES.sub(" ", text))
    text = "\n".join(_INNER_SPACES.sub(" ", line).rstrip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def key(text: str) -> str:
    """Comparison key: case-folded words joined by single spaces (punctuation ignored)."""
    return " ".join(_WORDS.findall(text.casefold()))


def words(text: str) -> list[str]:
    return _WORDS.findall(text.casefold())


def ngrams(tokens: list[str], n: int) -> list[str]:
    """Word n-grams; a text shorter than n gives one n-gram of all its words (or none if empty)."""
    if len(tokens) < n:
        return [" ".join(tokens)] if tokens else []
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_ratio(texts: list[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams over a corpus (higher = more diverse)."""
    counts: Counter = Counter()
    for t in texts:
        toks = words(t)
        counts.update(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
    total = sum(counts.values())
    return round(len(counts) / total, 4) if total else 0.0


# --- PII -----------------------------------------------------------------------------------------
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d.,-])(?:\d[ -]?){12,18}\d(?![\d-]|[.,]\d)")  # not inside a decimal
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
# Phone numbers in three common shapes (9-15 digits checked after matching): international with a
# leading +, North American 3-3-4, and national numbers with a trunk 0. Dates and times do not fit.
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,5}"
    r"|\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}"
    r"|0\d{2,4}[ .-]?\d{3,4}[ .-]?\d{3,4}"
    r")(?![\w])"
)

PLACEHOLDERS = {"email": "[EMAIL]", "card": "[CARD]", "ip": "[IP]", "phone": "[PHONE]"}


def _valid_ip(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
    except ValueError:
        return False
    return True


def scrub_pii(text: str) -> tuple[str, Counter]:
    """Replace emails, card-like numbers (13-19 digits), IPv4 addresses and phone numbers
    (9-15 digits) with typed placeholders; returns the text and a count per type."""
    counts: Counter = Counter()

    def sub(kind, pattern, text, valid=lambda s: True):
        def repl(m):
            if not valid(m.group()):
                return m.group()
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        return pattern.sub(repl, text)

    text = sub("email", _EMAIL, text)
    # Card-like numbers go whether or not they pass Luhn: a mistyped card number is still someone's card.
    text = sub("card", _CARD, text, lambda s: 13 <= len(re.sub(r"\D", "", s)) <= 19)
    text = sub("ip", _IPV4, text, _valid_ip)
    text = sub("phone", _PHONE, text, lambda s: 9 <= len(re.sub(r"\D", "", s)) <= 15 and not _valid_ip(s))
    return text, counts
