"""Checkpoint intake: zoo directories, config + weights, Hugging Face directories, ``.pt2``.

``checkpoints`` is imported lazily; ``IntakeError`` lives in ``workers.errors``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workers.intake.errors import IntakeError

if TYPE_CHECKING:
    from workers.intake.checkpoints import (
        LoadedModel,
        load_checkpoint,
        save_checkpoint,
        sha256_file,
    )

__all__ = ["IntakeError", "LoadedModel", "load_checkpoint", "save_checkpoint", "sha256_file"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from workers.intake import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
