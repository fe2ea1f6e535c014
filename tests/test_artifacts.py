"""File checksums against published SHA-256 test vectors and hashlib over the whole bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lookalike.core.artifacts import ArtifactError, sha256_file, verify_checksum

# FIPS 180-2 appendix B.1 ("abc") and the digest of no bytes at all.
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(("content", "digest"), [(b"abc", ABC_SHA256), (b"", EMPTY_SHA256)])
def test_sha256_file_matches_published_vectors(tmp_path: Path, content: bytes, digest: str) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(content)
    assert sha256_file(path) == digest
    assert sha256_file(str(path)) == digest


def test_sha256_file_of_a_multi_chunk_file_matches_hashing_all_bytes_at_once(tmp_path: Path) -> None:
    content = bytes(range(256)) * 40_000 + b"tail"  # ~10 MB: several reads of any buffer size
    path = tmp_path / "big.bin"
    path.write_bytes(content)
    assert sha256_file(path) == hashlib.sha256(content).hexdigest()


def test_verify_checksum_names_a_mismatch_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"abc")
    verify_checksum(path, ABC_SHA256)
    with pytest.raises(ArtifactError, match="file.bin"):
        verify_checksum(path, EMPTY_SHA256)
    with pytest.raises(ArtifactError, match="missing"):
        verify_checksum(tmp_path / "absent.bin", ABC_SHA256)
