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


# What `normalise` changes in a text: whitespace other than plain spaces and newlines (`\s` and
# str.isspace agree), zero-width characters, double spaces, a space ending a line, three or more
# newlines, space at either end. `_is_tidy` proves that none is there, so the text is returned as is.
_ASCII_ODD_SPACES = re.compile(r"[\t\r\x0b\x0c\x1c-\x1f]")  # ASCII whitespace but " " and "\n"
_NEEDS_TIDY = re.compile(r"[^\S \n]|[\u200b\u200c\u200d\u2060\ufeff]| {2}| \n|\n{3}")


def _is_tidy(text: str) -> bool:
    if text[:1] in " \n" or text[-1:] in " \n":  # also true for "" (the slow path returns "" too)
        return False
    if text.isascii():  # ASCII is NFC; C-level tests scan ~10x faster than the general regex
        if not text.isprintable():  # holds a control character: newlines are fine, the rest are not
            if _ASCII_ODD_SPACES.search(text) or " \n" in text or "\n\n\n" in text:
                return False
        return "  " not in text
    return not _NEEDS_TIDY.search(text) and unicodedata.is_normalized("NFC", text)


def normalise(text: str) -> str:
    """Unicode NFC; odd spaces to plain spaces; no zero-width characters; tidy whitespace.

    Leading indentation is kept (code), runs of inner spaces become one, trailing spaces go,
    three or more newlines become two.
    """
    if _is_tidy(text):  # most rows: nothing to change
        return text
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _ZERO_WIDTH.sub("", _ODD_SPACES.sub(" ", text))
    text = "\n".join(_INNER_SPACES.sub(" ", line).rstrip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def key(text: str) -> str:
    """Comparison key: case-folded words joined by single spaces (punctuation ignored)."""
    return " ".join(_WORDS.findall(text.casefold()))


def words(text: str) -> list[str]:
    return _WORDS.findall(text.casefold())


# For ASCII text, `words` is: lower-case, every non-word byte ([^A-Za-z0-9_]) to a space, split.
_ASCII_WORD_BYTES = bytes(c + 32 if 65 <= c <= 90 else c if (48 <= c <= 57 or 97 <= c <= 122 or c == 95) else 32
                          for c in range(256))


def word_stream(text: str) -> bytes:
    """`words(text)` UTF-8 encoded and separated by runs of spaces (for ASCII text one bytes.translate:
    ~0.3 us, no regex). `dedup.split_words` turns many of them into word hashes and keys at once."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_WORD_BYTES)
    return " ".join(words(text)).encode()


def word_bytes(text: str) -> list[bytes]:
    """`words(text)`, each UTF-8 encoded."""
    return word_stream(text).split()


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
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")  # may end a sentence: "use 1.0.0.3."
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


# Every pattern but the e-mail one needs a digit (\d: any Unicode digit; in ASCII text only 0-9).
_DIGIT = re.compile(r"\d")


def scrub_pii(text: str) -> tuple[str, Counter]:
    """Replace emails, card numbers (13-19 digits), IPv4 addresses and phone numbers (9-15 digits)
    with typed placeholders; returns the text and a count per type."""
    text, counts = scrub_pii_counts(text)
    return text, Counter(counts)


def scrub_pii_counts(text: str) -> tuple[str, dict[str, int]]:
    """`scrub_pii` with the counts as a plain dict (the hot path: no Counter per clean text)."""
    counts: dict[str, int] = {}
    has_at = "@" in text
    if text.isascii():  # ten memchr-speed substring scans: ~4x faster than a regex character class
        has_digit = ("0" in text or "1" in text or "2" in text or "3" in text or "4" in text
                     or "5" in text or "6" in text or "7" in text or "8" in text or "9" in text)
    else:
        has_digit = _DIGIT.search(text) is not None
    if not (has_at or has_digit):  # most texts: nothing any pattern could match, skip four scans
        return text, counts

    def sub(kind, pattern, text, valid=lambda s: True):
        def repl(m):
            if not valid(m.group()):
                return m.group()
            counts[kind] = counts.get(kind, 0) + 1
            return PLACEHOLDERS[kind]

        return pattern.sub(repl, text)

    if has_at:
        text = sub("email", _EMAIL, text)
    if has_digit:  # placeholders hold no digits, so an e-mail-only text stops here
        # Each pattern's check needs a number of digits (13 for a card, 4 for an IP, 9 for a phone):
        # a text with fewer (years, versions, short numbers) skips that scan, the slowest part here.
        digits = _count_digits(text)
        if digits >= 13:
            text = sub("card", _CARD, text, lambda s: 13 <= len(re.sub(r"\D", "", s)) <= 19)
            digits = _count_digits(text) if "card" in counts else digits
        if digits >= 4 and text.count(".") >= 3:
            text = sub("ip", _IPV4, text, _valid_ip)
            digits = _count_digits(text) if "ip" in counts else digits
        if digits >= 9:
            text = sub("phone", _PHONE, text, lambda s: 9 <= len(re.sub(r"\D", "", s)) <= 15 and not _valid_ip(s))
    return text, counts


def _count_digits(text: str) -> int:
    """How many characters of `text` match \\d."""
    return sum(map(text.count, "0123456789")) if text.isascii() else len(_DIGIT.findall(text))
