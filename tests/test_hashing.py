"""Identifier hashing against hand-normalized strings hashed here with hashlib, and published vectors."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest

from lookalike.privacy.hashing import hash_identifiers, normalize_identifiers


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Published on Meta's Conversions API "Customer Information Parameters" page
# (developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters):
# email "John_Smith@gmail.com" -> "john_smith@gmail.com" -> 62a14e44...; US phone "(650)555-1212"
# -> "16505551212" -> e323ec62...
META_EMAIL_VECTOR = ("John_Smith@gmail.com", "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f")
META_PHONE_VECTOR = ("(650)555-1212", "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176")
# Google's Customer Match help article (quoted at charlottelocalmarketing.blogspot.com/2015/10/
# canonicalizing-and-hashing-emails-for.html): example@gmail.com -> 264e53d9...
GOOGLE_EMAIL_VECTOR = ("example@gmail.com", "264e53d93759bde067fd01ef2698f98d1253c730d12f021116f02eebcfa9ace6")


def test_meta_published_email_vector() -> None:
    raw, digest = META_EMAIL_VECTOR
    assert hash_identifiers(pl.Series([raw]), "email", platform="meta").hashes.to_list() == [digest]


def test_meta_published_phone_vector_with_default_country_code() -> None:
    raw, digest = META_PHONE_VECTOR
    result = hash_identifiers(pl.Series([raw]), "phone", platform="meta", default_country_code="1")
    assert result.hashes.to_list() == [digest]


def test_google_published_email_vector() -> None:
    raw, digest = GOOGLE_EMAIL_VECTOR
    assert hash_identifiers(pl.Series([raw]), "email", platform="google").hashes.to_list() == [digest]


# (raw, hand-normalized for Meta, hand-normalized for Google)
EMAILS = [
    ("  Jane.Doe@Example.COM \t", "jane.doe@example.com", "jane.doe@example.com"),
    ("Jane.Doe+News@GMAIL.com", "jane.doe+news@gmail.com", "janedoe@gmail.com"),
    ("j.a.n.e@googlemail.com", "j.a.n.e@googlemail.com", "jane@googlemail.com"),
    ("jane.doe+news@example.com", "jane.doe+news@example.com", "jane.doe+news@example.com"),
    ("jane@gmail.com.evil.org", "jane@gmail.com.evil.org", "jane@gmail.com.evil.org"),
    ("VALÉRY@Exämple.fr", "valéry@exämple.fr", "valéry@exämple.fr"),
    ("Vale\u0301ry@example.fr", "val\u00e9ry@example.fr", "val\u00e9ry@example.fr"),  # decomposed é -> NFC
    ("STRAẞE@example.de", "straße@example.de", "straße@example.de"),  # lowercase, not casefold ("ss")
    ("ÇAĞRI@örnek.com.tr", "çağri@örnek.com.tr", "çağri@örnek.com.tr"),  # locale-free: I -> i, not ı
]


@pytest.mark.parametrize("platform", ["meta", "google"])
def test_emails_hash_their_hand_normalized_form(platform: str) -> None:
    raw = [e[0] for e in EMAILS]
    expected = [sha(e[1] if platform == "meta" else e[2]) for e in EMAILS]
    result = hash_identifiers(pl.Series("email", raw), "email", platform=platform)
    assert result.hashes.to_list() == expected
    assert result.hashes.name == "email"
    assert (result.invalid, result.prehashed) == (0, 0)


# (raw, default country code, hand-normalized E.164 digits without "+")
PHONES = [
    ("+1 (650) 555-1212", None, "16505551212"),
    ("001 650.555.1212", None, "16505551212"),
    ("16505551212", None, "16505551212"),
    ("+44 (0)20 7031 3000", None, "442070313000"),
    ("020 7031 3000", "44", "442070313000"),
    ("(650) 555/1212", "1", "16505551212"),
    ("+49 30 1234567", "1", "49301234567"),  # an international number ignores the default
]


@pytest.mark.parametrize("platform", ["meta", "google"])
def test_phones_hash_e164_digits_with_plus_for_google_only(platform: str) -> None:
    for raw, country, digits in PHONES:
        e164 = digits if platform == "meta" else "+" + digits
        result = hash_identifiers(pl.Series([raw]), "phone", platform=platform, default_country_code=country)
        assert result.hashes.to_list() == [sha(e164)], raw


@pytest.mark.parametrize("kind", ["email", "phone"])
def test_already_hashed_values_pass_through_lowercased_not_hashed_again(kind: str) -> None:
    digest = sha("someone@example.com")
    result = hash_identifiers(pl.Series([digest, f"  {digest.upper()} "]), kind, platform="google")
    assert result.hashes.to_list() == [digest, digest]
    assert (result.prehashed, result.invalid) == (2, 0)


INVALID_EMAILS = [None, "", "   ", "no-at-sign.com", "two@@example.com", "a@gmail.com@x.org", "user@localhost",
                  "@example.com", "first last@example.com", "abc" * 22]  # last: 66 chars, not hex-64
INVALID_PHONES = [None, "", " ", "call me", "555-1234 ext 9", "12345", "0123456789", "+0 650 555 1212",
                  "+1234567890123456", "+", "00"]


@pytest.mark.parametrize("platform", ["meta", "google"])
@pytest.mark.parametrize(("kind", "bad"), [("email", INVALID_EMAILS), ("phone", INVALID_PHONES)])
def test_invalid_values_become_null_and_are_counted_never_hash_of_empty(kind: str, bad: list, platform: str) -> None:
    good = "jane@example.com" if kind == "email" else "+16505551212"
    values = pl.Series([good, *bad], dtype=pl.String)
    result = hash_identifiers(values, kind, platform=platform)
    assert result.hashes.to_list()[1:] == [None] * len(bad)
    assert result.hashes[0] is not None
    assert result.invalid == len(bad)
    assert sha("") not in result.hashes.to_list()


def test_national_numbers_need_a_default_country_code() -> None:
    values = pl.Series(["020 7031 3000"])
    assert normalize_identifiers(values, "phone", platform="meta").to_list() == [None]
    assert normalize_identifiers(values, "phone", platform="meta", default_country_code="44").to_list() == [
        "442070313000"
    ]


def test_rejects_unknown_platform_kind_and_country_code() -> None:
    values = pl.Series(["jane@example.com"])
    with pytest.raises(ValueError, match="platform"):
        hash_identifiers(values, "email", platform="tiktok")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        hash_identifiers(values, "name", platform="meta")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="country_code"):
        hash_identifiers(values, "phone", platform="meta", default_country_code="+1")


def test_matches_a_per_value_reference_on_mixed_input() -> None:
    """The vectorized path against a plain per-value implementation of the documented rules."""
    raw = [e[0] for e in EMAILS] + [None, "", "x@y", sha("a").upper()] * 3
    reference = [_reference_meta_email(v) for v in raw]
    assert hash_identifiers(pl.Series(raw, dtype=pl.String), "email", platform="meta").hashes.to_list() == reference


def _reference_meta_email(value: str | None) -> str | None:
    import re
    import unicodedata

    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return text.lower()
    email = unicodedata.normalize("NFC", text).lower()
    return sha(email) if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email) else None
