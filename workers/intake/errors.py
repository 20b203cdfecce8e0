"""``IntakeError`` under its historical name (it lives in ``workers.errors``)."""

from __future__ import annotations

from workers.errors import IntakeError, NonFiniteError

__all__ = ["IntakeError", "NonFiniteError"]
