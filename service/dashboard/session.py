"""Login and logout (the token kept in an HttpOnly cookie), and the static assets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import plotly
from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from service.dashboard import auth
from service.dashboard.render import error_page, page
from service.deps import ServicesDep

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).parent / "static"
ASSETS: dict[str, tuple[Path, str]] = {
    "plotly.min.js": (
        Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
        "text/javascript",
    ),
    "dashboard.js": (STATIC / "dashboard.js", "text/javascript"),
    "dashboard.css": (STATIC / "dashboard.css", "text/css"),
}


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui/static/{name}")
def static_asset(request: Request, name: str) -> Response:
    """Plotly from the installed wheel and the dashboard's own script and style (no CDN)."""
    if name not in ASSETS:
        return error_page(request, 404, f"no asset {name}")
    path, media_type = ASSETS[name]
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "max-age=3600"})


@router.get("/ui/login")
def login_form(request: Request, next: str | None = None) -> Response:
    return page(request, "login.html", error=None, next=auth.safe_next(next))


@router.post("/ui/login")
def login(
    request: Request,
    services: ServicesDep,
    token: Annotated[str, Form(max_length=4096)] = "",
    next: Annotated[str, Form(max_length=4096)] = "/ui",
) -> Response:
    target = auth.safe_next(next)
    if auth.reads_need_token(services.settings) and not auth.token_valid(services.settings, token):
        return page(request, "login.html", status=401, error="invalid token", next=target)
    response = RedirectResponse(target, status_code=303)
    if token:
        response.set_cookie(
            auth.COOKIE, token.strip(), httponly=True, samesite="strict", path="/ui"
        )
    return response


@router.post("/ui/logout")
def logout() -> Response:
    response = RedirectResponse("/ui", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/ui")
    return response
