"""Errors a user can act on. The CLI prints them as one line; anything else is a bug."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class LookalikeError(Exception):
    """Base for every error caused by input, configuration or artifacts rather than by a bug."""


class InputError(LookalikeError):
    """An input table breaks the contract in ``data/README.md``.

    The message names the file, the column, what was expected and up to five offending rows.
    """

    def __init__(
        self,
        file: str,
        problem: str,
        *,
        column: str | None = None,
        expected: str | None = None,
        examples: Sequence[Any] = (),
        fix: str | None = None,
    ) -> None:
        self.file = file
        self.column = column
        self.problem = problem
        self.examples = list(examples)[:5]
        parts = [f"{file}:"]
        if column is not None:
            parts.append(f"column '{column}':")
        parts.append(problem)
        if expected:
            parts.append(f"(expected {expected})")
        if self.examples:
            parts.append(f"; examples: {self.examples}")
        if fix:
            parts.append(f"; fix: {fix}")
        super().__init__(" ".join(parts).replace(" ;", ";"))


class ConfigError(LookalikeError):
    """A config file that cannot be read or does not match ``LookalikeConfig`` (unknown key, bad value)."""


class ArtifactError(LookalikeError):
    """A saved artifact is missing, tampered with, or belongs to another build."""


class TrainingError(LookalikeError):
    """Training cannot produce a usable model (too few converters, collapsed embeddings)."""


class AudienceError(LookalikeError):
    """An export request that cannot be honoured (seeds too few, audience too small)."""
