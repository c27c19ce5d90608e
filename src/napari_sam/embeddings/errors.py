"""Errors and warnings of the embedding engine."""

from __future__ import annotations


class EmbeddingMismatchError(ValueError):
    """Stored embeddings were computed for a different image, model or normalisation.

    The message says which of these differs, so the user can pick the right file or recompute.
    """


class StackIndexError(IndexError, ValueError):
    """A slice index does not fit the stack's leading dimensions (wrong length or out of range)."""


class CacheWarning(UserWarning):
    """The persistent cache could not be used as asked (disk full, no permission); memory still works."""
