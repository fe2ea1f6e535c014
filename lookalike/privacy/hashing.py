"""Normalize and SHA-256 hash emails and phone numbers for ad-platform audience uploads.

Ad platforms match uploaded audiences on the SHA-256 hex digest of a *normalized* identifier, so a
single stray capital letter or space gives a hash that silently matches nobody. The rules below
follow the platforms' published documentation:

Emails (both platforms): trim surrounding whitespace and lowercase (Unicode lowercase, UTF-8
bytes: Meta's customer-information-parameters page hashes ``Valéry`` as ``valéry``; full case
folding would turn ``ß`` into ``ss``, which neither platform asks for). Text is put in Unicode NFC
first so a decomposed ``é`` hashes like the composed one every other system stores.

- ``platform="google"`` additionally removes the dots of the local part of ``gmail.com`` and
  ``googlemail.com`` addresses, as Google's enhanced-conversions normalization documents, and drops
  a ``+tag`` there too: Gmail delivers ``name+tag@gmail.com`` to ``name@gmail.com``, the address
  Google hashes for the account, so the tagged hash could never match. Other domains keep their
  dots and tags (they may be significant there).
- ``platform="meta"`` does no provider-specific rewriting (Meta documents none).

Phones: international numbers only. Spaces, dashes, dots, slashes and parentheses are removed, as
is a ``(0)`` trunk prefix (``+44 (0)20 7031 3000``); a leading ``+`` or ``00`` marks the country
code. A number with neither is taken to start with its
country code already (``16505551212``), unless ``default_country_code`` is given, in which case it
is a national number: its trunk ``0`` is dropped and the country code put in front. A national
number (leading ``0``) without ``default_country_code`` is invalid, as is anything with letters or
outside E.164's 7-15 digits. Output per platform:

- ``google``: E.164 with the ``+`` (``+16505551212``), as Google Customer Match asks.
- ``meta``: digits only, no ``+`` (``16505551212``), as Meta asks.

The platform is a required argument because the two phone formats hash differently: a silent
default would produce hashes that match nothing on the other platform.

Values that are already SHA-256 hex digests (64 hex characters) pass through lowercased, never
hashed twice. Null, empty and invalid values become null and are counted; the hash of an empty
string is never produced.

Example::

    >>> import polars as pl
    >>> result = hash_identifiers(pl.Series([" John_Smith@gmail.com", "not an email"]), "email",
    ...                           platform="meta")
    >>> result.hashes[0], result.invalid
    ('62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f', 1)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import polars as pl

Kind = Literal["email", "phone"]
Platform = Literal["google", "meta"]

SHA256_HEX = r"^[0-9a-fA-F]{64}$"
# One "@", a non-empty local part, a dotted domain, no whitespace anywhere.
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
GMAIL = r"^([^@]+)@(gmail\.com|googlemail\.com)$"
PHONE_SEPARATORS = r"[\s\-().\/]"
TRUNK_ZERO_IN_INTERNATIONAL = r"\(0\)"  # "+44 (0)20 ...": the national trunk 0, not dialled
E164_DIGITS = r"^[1-9][0-9]{6,14}$"


@dataclass(frozen=True)
class HashResult:
    """Hex digests aligned with the input (null where the input was empty or invalid)."""

    hashes: pl.Series
    invalid: int  # null, empty or malformed inputs (null in ``hashes``)
    prehashed: int  # inputs that were already SHA-256 hex digests and passed through


def hash_identifiers(
    values: pl.Series,
    kind: Kind,
    *,
    platform: Platform,
    default_country_code: str | None = None,
) -> HashResult:
    """Normalize ``values`` per ``kind`` and ``platform`` and SHA-256 hex-hash them.

    ``default_country_code`` (digits, e.g. ``"1"`` or ``"44"``) applies to phone numbers written
    without ``+``/``00``; see the module docstring for every rule.
    """
    text = values.cast(pl.String).str.strip_chars()
    prehashed = text.str.contains(SHA256_HEX).fill_null(False)
    normalized = normalize_identifiers(text, kind, platform=platform, default_country_code=default_country_code)
    digests = pl.select(
        pl.when(prehashed).then(text.str.to_lowercase()).otherwise(sha256_hex(normalized))
    ).to_series()
    return HashResult(digests.alias(values.name), invalid=digests.null_count(), prehashed=int(prehashed.sum()))


def normalize_identifiers(
    values: pl.Series, kind: Kind, *, platform: Platform, default_country_code: str | None = None,
) -> pl.Series:
    """The normalized strings :func:`hash_identifiers` hashes (null where invalid)."""
    if platform not in ("google", "meta"):
        raise ValueError(f"platform must be 'google' or 'meta', not {platform!r}")
    text = values.cast(pl.String).str.strip_chars()
    if kind == "email":
        return normalize_emails(text, platform)
    if kind == "phone":
        return normalize_phones(text, platform, default_country_code)
    raise ValueError(f"kind must be 'email' or 'phone', not {kind!r}")


def normalize_emails(text: pl.Series, platform: Platform) -> pl.Series:
    """NFC, lowercased emails (Gmail-canonical for Google); null where not an email."""
    email = pl.DataFrame({"email": unicode_nfc(text).str.to_lowercase()})
    # Validate before the Gmail rewrite, so "a@gmail.com@x.org" cannot turn into a valid address.
    email = email.select(pl.when(pl.col("email").str.contains(EMAIL)).then("email").alias("email"))
    if platform == "google":
        gmail = email.select(pl.col("email").str.extract_groups(GMAIL)).unnest("email")
        local = pl.col("1").str.replace(r"\+.*$", "").str.replace_all(".", "", literal=True)
        canonical = gmail.select(local + "@" + pl.col("2")).to_series()
        email = email.select(pl.coalesce(canonical, "email").alias("email"))
    return email.to_series().alias(text.name)


def normalize_phones(text: pl.Series, platform: Platform, default_country_code: str | None) -> pl.Series:
    """E.164 digits with ``+`` (Google) or without (Meta); null where not a valid number."""
    if default_country_code is not None and not default_country_code.isdigit():
        raise ValueError(f"default_country_code must be digits such as '1' or '44', not {default_country_code!r}")
    compact = pl.DataFrame(
        {"phone": text.str.replace_all(TRUNK_ZERO_IN_INTERNATIONAL, "").str.replace_all(PHONE_SEPARATORS, "")}
    )
    phone = pl.col("phone")
    digits = (
        pl.when(phone.str.starts_with("+")).then(phone.str.strip_prefix("+"))
        .when(phone.str.starts_with("00")).then(phone.str.strip_prefix("00"))
    )
    if default_country_code is None:
        digits = digits.when(~phone.str.starts_with("0")).then(phone)
    else:
        digits = digits.otherwise(default_country_code + phone.str.strip_prefix("0"))
    digits = compact.select(digits.alias("digits"))
    e164 = ("+" + pl.col("digits")) if platform == "google" else pl.col("digits")
    valid = pl.col("digits").str.contains(E164_DIGITS)
    return digits.select(pl.when(valid).then(e164)).to_series().alias(text.name)


def unicode_nfc(text: pl.Series) -> pl.Series:
    """Unicode NFC, computed only for the (usually few) values that are not plain ASCII."""
    non_ascii = text.str.contains(r"[^\x00-\x7f]").fill_null(False).arg_true()
    return text.scatter(non_ascii, text.gather(non_ascii).str.normalize("NFC")) if len(non_ascii) else text


def sha256_hex(values: pl.Series) -> pl.Series:
    """Lowercase SHA-256 hex digest of each value's UTF-8 bytes; nulls stay null."""
    digests = [None if v is None else hashlib.sha256(v).hexdigest() for v in values.cast(pl.Binary).to_list()]
    return pl.Series(values.name, digests, dtype=pl.String)
