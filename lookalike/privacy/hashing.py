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

Phones: parsed and validated with ``phonenumbers`` (Google's libphonenumber metadata). Spaces,
dashes, dots, slashes and parentheses are ignored; a leading ``+`` or ``00`` marks the country code,
and a ``(0)`` trunk prefix after it is dropped where the country's numbering plan drops it
(``+44 (0)20 7031 3000``) and kept where the zero is part of the number (Italy's ``+39 06 ...``). A
number with neither is taken to start with its country code already (``16505551212``), unless
``default_country_code`` is given, in which case it is a national number of that country, dialled as
written there: ``06 1234 5678`` with ``"39"`` is ``+390612345678`` (Italy keeps its leading zero),
``020 7031 3000`` with ``"44"`` is ``+442070313000`` (the UK's trunk ``0`` goes). A national number
(leading ``0``) without ``default_country_code`` is invalid, as is anything with letters or an
extension and any number the country's numbering plan does not allow. Output per platform:

- ``google``: E.164 with the ``+`` (``+16505551212``), as Google Customer Match asks.
- ``meta``: the E.164 digits without the ``+`` (``16505551212``, ``390612345678``): country code
  first, no ``00``/``+`` prefix, as Meta asks.

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
import re
from dataclasses import dataclass
from typing import Literal

import phonenumbers
import polars as pl

Kind = Literal["email", "phone"]
Platform = Literal["google", "meta"]

SHA256_HEX = r"^[0-9a-fA-F]{64}$"
# One "@", a non-empty local part, a dotted domain, no whitespace anywhere.
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
GMAIL = r"^([^@]+)@(gmail\.com|googlemail\.com)$"
PHONE_SEPARATORS = re.compile(r"[\s\-().\/]")
DIALLED = re.compile(r"\+?[0-9]+")  # after the separators: digits, at most a leading "+"


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
    """E.164 with ``+`` (Google) or its digits without (Meta); null where not a valid number.

    Each distinct value is parsed once (``phonenumbers`` works per value, in Python).
    """
    region = default_region(default_country_code)
    distinct = text.drop_nulls().unique().to_list()
    e164 = [phone_e164(value, region) for value in distinct]
    if platform == "meta":
        e164 = [None if number is None else number.removeprefix("+") for number in e164]
    return text.replace_strict(distinct, e164, default=None, return_dtype=pl.String).alias(text.name)


def default_region(default_country_code: str | None) -> str | None:
    """The main region (``"IT"`` for ``"39"``) whose national numbers ``default_country_code`` reads."""
    if default_country_code is None:
        return None
    if not default_country_code.isdigit():
        raise ValueError(f"default_country_code must be digits such as '1' or '44', not {default_country_code!r}")
    region = phonenumbers.region_code_for_country_code(int(default_country_code))
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"default_country_code {default_country_code!r} is not a country's calling code")
    return region


def phone_e164(value: str, region: str | None) -> str | None:
    """``value`` in E.164 (``+390612345678``), national numbers read in ``region``; None if invalid.

    >>> phone_e164("06 1234 5678", "IT"), phone_e164("+44 (0)20 7031 3000", None)
    ('+390612345678', '+442070313000')
    >>> phone_e164("020 7031 3000", None) is None  # national, and no region to read it in
    True
    """
    dialled = PHONE_SEPARATORS.sub("", value)
    if not DIALLED.fullmatch(dialled):
        return None
    if dialled.startswith("00"):
        dialled = "+" + dialled.removeprefix("00")
    elif not dialled.startswith("+") and region is None:
        if dialled.startswith("0"):
            return None
        dialled = "+" + dialled
    try:
        number = phonenumbers.parse(dialled, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def unicode_nfc(text: pl.Series) -> pl.Series:
    """Unicode NFC, computed only for the (usually few) values that are not plain ASCII."""
    non_ascii = text.str.contains(r"[^\x00-\x7f]").fill_null(False).arg_true()
    return text.scatter(non_ascii, text.gather(non_ascii).str.normalize("NFC")) if len(non_ascii) else text


def sha256_hex(values: pl.Series) -> pl.Series:
    """Lowercase SHA-256 hex digest of each value's UTF-8 bytes; nulls stay null."""
    digests = [None if v is None else hashlib.sha256(v).hexdigest() for v in values.cast(pl.Binary).to_list()]
    return pl.Series(values.name, digests, dtype=pl.String)
