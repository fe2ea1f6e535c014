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
    # Italy keeps the leading 0 of its fixed-line numbers after the country code
    ("06 1234 5678", "39", "390612345678"),
    ("02 1234 5678", "39", "390212345678"),
    ("312 345 6789", "39", "393123456789"),  # mobile: no leading 0 to keep
    ("+39 06 1234 5678", None, "390612345678"),
    ("0039 06 1234 5678", "1", "390612345678"),
    ("+39 (0)6 1234 5678", None, "390612345678"),  # "(0)" here is part of the number
    # US: national numbers with and without the trunk 1
    ("(212) 555-0100", "1", "12125550100"),
    ("1 212 555 0100", "1", "12125550100"),
    ("(416) 555-0100", "1", "14165550100"),  # Canada shares +1
    # UK: trunk 0 dropped
    ("07911 123456", "44", "447911123456"),
    ("+44 7911 123456", None, "447911123456"),
    # Germany: trunk 0 dropped
    ("030 1234567", "49", "49301234567"),
    ("0151 23456789", "49", "4915123456789"),
    ("+49 (0)89 1234567", None, "49891234567"),
    # France: trunk 0 dropped
    ("01 23 45 67 89", "33", "33123456789"),
    ("06.12.34.56.78", "33", "33612345678"),
    ("+33 (0)6 12 34 56 78", None, "33612345678"),
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
INVALID_PHONES = [
    None, "", " ", "call me", "555-1234 ext 9", "12345", "0123456789", "+0 650 555 1212", "+1234567890123456",
    "+", "00",
    "+1 123 456 7890",  # no NANP area code starts with 1
    "+1 650 555 1212 #9",  # an extension
    "1-800-FLOWERS",  # letters
    "+44 20 7031",  # too short for the UK
    "+33 1 23 45 67 89 0",  # too long for France
]


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
    with pytest.raises(ValueError, match="calling code"):
        hash_identifiers(values, "phone", platform="meta", default_country_code="999")


def test_each_distinct_phone_is_normalized_in_place() -> None:
    values = pl.Series("phone", ["06 1234 5678", None, "bad", "06 1234 5678", "+1 650 555 1212", "bad"])
    normalized = normalize_identifiers(values, "phone", platform="google", default_country_code="39")
    assert normalized.to_list() == ["+390612345678", None, None, "+390612345678", "+16505551212", None]
    assert normalized.name == "phone"


# (raw, expected Meta digest, expected Google digest) in one mixed column: valid, invalid, null and
# already-hashed values, each with its hand-normalized form or known digest.
SHA256_OF_A = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"  # sha256(b"a")
MIXED_EMAILS = [
    ("Jane.Doe+News@GMAIL.com", sha("jane.doe+news@gmail.com"), sha("janedoe@gmail.com")),
    (None, None, None),
    ("x@y", None, None),  # no dot in the domain
    ("", None, None),
    (SHA256_OF_A.upper(), SHA256_OF_A, SHA256_OF_A),
    ("  a.b.c@GoogleMail.com ", sha("a.b.c@googlemail.com"), sha("abc@googlemail.com")),
    ("first.last+x@Example.co.uk", sha("first.last+x@example.co.uk"), sha("first.last+x@example.co.uk")),
    ("no-at-sign.com", None, None),
    ("two@@example.com", None, None),
    ("first last@example.com", None, None),
    ("  ÜBER@Exämple.DE", sha("über@exämple.de"), sha("über@exämple.de")),
    ("John_Smith@gmail.com", META_EMAIL_VECTOR[1], sha("john_smith@gmail.com")),
    (SHA256_OF_A[:63], None, None),  # 63 hex characters: neither a digest nor an email
]


@pytest.mark.parametrize("platform", ["meta", "google"])
def test_mixed_email_column_gives_each_value_its_known_answer(platform: str) -> None:
    raw = pl.Series("email", [row[0] for row in MIXED_EMAILS], dtype=pl.String)
    expected = [row[1] if platform == "meta" else row[2] for row in MIXED_EMAILS]
    result = hash_identifiers(raw, "email", platform=platform)
    assert result.hashes.to_list() == expected
    assert result.invalid == sum(e is None for e in expected)
    assert result.prehashed == 1
