"""Errors a user can cause and fix. The CLI prints their message on one line and exits 2.

Library code raises these (never prints, never exits). Anything else that escapes is a bug.
"""

from __future__ import annotations


class SlmError(Exception):
    """Base class: bad input, missing files, inconsistent artifacts. Message is one line."""


class ConfigError(SlmError):
    """An unknown config key, a wrong-typed value, an unknown preset."""


class DataError(SlmError):
    """A corpus that is missing, empty, unreadable or unreachable; stale or foreign shards."""


class TokenizerError(SlmError):
    """An unknown tokenizer kind, a corrupt or incomplete tokenizer directory, failed training."""


class CheckpointError(SlmError):
    """A folder that is not a checkpoint, a corrupt weights file, a mismatched tokenizer."""


class GenerationError(SlmError):
    """Invalid sampling settings or prompts."""


class TrainingError(SlmError):
    """A training run that cannot start or continue (non-finite loss, shape mismatch on resume)."""
