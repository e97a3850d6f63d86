"""The errors a training run reports to the user: one line naming the config key, file or step."""

from __future__ import annotations

__all__ = ["TrainingError", "NonFiniteLossError"]


class TrainingError(RuntimeError):
    """A run cannot start or continue; the message names the config key, file or step."""


class NonFiniteLossError(TrainingError):
    """A loss term became NaN or infinite; the last good checkpoint is left untouched."""
