"""``IntakeError`` under its historical name (it lives in ``workers.errors``)."""

from __future__ import annotations

from workers.errors import IntakeError

__all__ = ["IntakeError"]
