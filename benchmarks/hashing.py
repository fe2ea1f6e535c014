"""Time :func:`lookalike.privacy.hashing.hash_identifiers` on N synthetic emails and phones.

Baseline, measured in the same run: a per-value Python loop applying the same rules
(``re`` + ``unicodedata`` + ``hashlib``), the obvious way to write it without polars.

    python benchmarks/hashing.py --n 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import re
import time
import unicodedata

import numpy as np
import polars as pl

from lookalike.privacy.hashing import hash_identifiers

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def synthetic_emails(n: int, seed: int = 0) -> pl.Series:
    rng = np.random.default_rng(seed)
    domains = np.array(["Example.com", "gmail.com", "GoogleMail.com", "mail.de", "exämple.fr"])
    ids = rng.integers(0, 10 * n, n)
    picks = domains[rng.integers(0, len(domains), n)]
    return pl.Series("email", [f" User.{i}+tag@{d} " for i, d in zip(ids, picks, strict=True)])


def synthetic_phones(n: int, seed: int = 0) -> pl.Series:
    rng = np.random.default_rng(seed)
    numbers = rng.integers(2_000_000_000, 9_999_999_999, n)
    return pl.Series("phone", [f"+1 ({str(x)[:3]}) {str(x)[3:6]}-{str(x)[6:]}" for x in numbers])


def reference_meta_emails(values: list[str | None]) -> list[str | None]:
    out = []
    for value in values:
        text = value.strip() if value is not None else ""
        if HEX64.fullmatch(text):
            out.append(text.lower())
            continue
        email = unicodedata.normalize("NFC", text).lower()
        out.append(hashlib.sha256(email.encode()).hexdigest() if EMAIL.fullmatch(email) else None)
    return out


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="values per identifier kind")
    n = parser.parse_args().n
    emails, phones = synthetic_emails(n), synthetic_phones(n)
    t_meta, meta = timed(hash_identifiers, emails, "email", platform="meta")
    t_google, _ = timed(hash_identifiers, emails, "email", platform="google")
    t_phone, _ = timed(hash_identifiers, phones, "phone", platform="google")
    t_ref, ref = timed(reference_meta_emails, emails.to_list())
    assert meta.hashes.to_list() == ref, "vectorized and reference hashes differ"
    print(f"n={n:,}")
    print(f"emails, meta:    {t_meta:6.2f} s  ({n / t_meta / 1e6:.2f} M values/s)")
    print(f"emails, google:  {t_google:6.2f} s  ({n / t_google / 1e6:.2f} M values/s)")
    print(f"phones, google:  {t_phone:6.2f} s  ({n / t_phone / 1e6:.2f} M values/s)")
    print(f"baseline per-value Python loop (emails, meta): {t_ref:6.2f} s; speed-up {t_ref / t_meta:.2f}x")


if __name__ == "__main__":
    main()
