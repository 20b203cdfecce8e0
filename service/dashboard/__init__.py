"""The read-only web dashboard under ``/ui``: server-rendered pages with Plotly charts
(served from the installed ``plotly`` wheel), gated like the API's reads (docs/dashboard.md)."""

from __future__ import annotations

from fastapi import APIRouter

from service.dashboard import downloads, pages, session

router = APIRouter()
for module in (session, downloads, pages):
    router.include_router(module.router)

__all__ = ["router"]
