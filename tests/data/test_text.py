import pytest

from alignflow.data.text import distinct_ratio, key, ngrams, normalise, scrub_pii, words


def test_normalise_nfc_and_whitespace():
    decomposed = "cafe\u0301"  # e + combining acute
    assert normalise(decomposed) == "caf\u00e9"
    assert normalise("  Hello\u00a0  world \r\n\r\n\r\n\n  x = 1   \n\u200bend  ") == "Hello world\n\n  x = 1\nend"


def test_key_ignores_case_punctuation_and_spacing():
    assert key("How do I  kill a process?") == key("how do i kill a PROCESS")


def test_ngrams_short_text_is_one_gram():
    assert ngrams(["a", "b"], 3) == ["a b"]
    assert ngrams(["a", "b", "c", "d"], 3) == ["a b c", "b c d"]
    assert ngrams([], 3) == []
    assert words("It's 2 o'clock!") == ["it", "s", "2", "o", "clock"]


def test_distinct_ratio():
    assert distinct_ratio(["a b a b"], 1) == 0.5
    assert distinct_ratio([], 2) == 0.0


@pytest.mark.parametrize(
    "text,expected,kind",
    [
        ("write to jane.doe+news@mail.example.org today", "write to [EMAIL] today", "email"),
        ("call +44 20 7946 0958 now", "call [PHONE] now", "phone"),
        ("call (555) 123-4567", "call [PHONE]", "phone"),
        ("ring 020 7946 0958", "ring [PHONE]", "phone"),
        ("card 4111 1111 1111 1111 exp", "card [CARD] exp", "card"),
        ("card 5500-0000-0000-0004", "card [CARD]", "card"),
        ("typo 4111 1111 1111 1234 still", "typo [CARD] still", "card"),  # fails Luhn, still a card
        ("server 10.0.0.254 is down", "server [IP] is down", "ip"),
        ("set the DNS to 1.0.0.3.\nThen restart.", "set the DNS to [IP].\nThen restart.", "ip"),  # ends a sentence
    ],
)
def test_scrub_pii_replaces_with_typed_placeholders(text, expected, kind):
    out, counts = scrub_pii(text)
    assert out == expected and counts == {kind: 1}


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2.3 and 999.1.1.1 and 1.2.3.4.5",  # not IPs
        "order 123456789012 has 12 digits",
        "on 2026-11-22 at 10:30",  # a date and a time, not a phone number
        "call 988 or 116 123",  # short helpline numbers are not personal data
        "pi is 3.14159265358979",
    ],
)
def test_scrub_pii_leaves_non_pii(text):
    assert scrub_pii(text) == (text, {})

