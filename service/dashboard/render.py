"""Jinja2 templates of the dashboard and the filters they format numbers with."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from service import __version__
from service.dashboard import auth
from service.deps import get_services

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def num(value: float | None, digits: int = 4) -> str:
    """``digits`` significant digits; an em dash for a missing or non-finite number."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}"


def exact(value: float | None) -> str:
    """The full value for a ``data-value`` attribute (empty when missing)."""
    if value is None or not math.isfinite(value):
        return ""
    return repr(float(value))


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "—"


TEMPLATES.env.filters.update(num=num, exact=exact, when=when)


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    settings = get_services(request).settings
    logged_in = auth.reads_need_token(settings) and auth.may_read(request, settings)
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {"version": __version__, "logged_in": logged_in, **context},
        status_code=status,
    )


def login_page(request: Request, error: str | None = None, status: int = 401) -> HTMLResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return page(request, "login.html", status=status, error=error, next=auth.safe_next(target))


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return page(request, "error.html", status=status, status_code=status, message=message)
