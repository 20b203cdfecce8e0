"""The workers' ground floor: the one error type of model and data intake.

Everything under ``workers`` may import this module, and it imports nothing of the project,
so the zoo, the data loaders and the checkpoint intake never import one another for it.
"""

from __future__ import annotations


class IntakeError(ValueError):
    """A checkpoint, config or data file that cannot be used; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class NonFiniteError(IntakeError):
    """A NaN or Inf in the data or the weights; the message names the tensor."""
