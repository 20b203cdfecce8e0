"""The dashboard's read gate: the API's own rule (``service.deps``), with the token also
accepted from an HttpOnly cookie that the login form sets, so that plain links work."""

from __future__ import annotations

import hmac

from fastapi import Request

from service.settings import Settings

COOKIE = "curvprof_token"


def reads_need_token(settings: Settings) -> bool:
    """The same condition as ``service.deps.require_read``."""
    return bool(settings.api_tokens) and not settings.open_reads


def token_valid(settings: Settings, token: str | None) -> bool:
    if not token:
        return False
    return any(hmac.compare_digest(token.strip(), t) for t in settings.api_tokens)


def request_token(request: Request) -> str | None:
    """A bearer header first, else the dashboard's cookie."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token
    return request.cookies.get(COOKIE)


def may_read(request: Request, settings: Settings) -> bool:
    return not reads_need_token(settings) or token_valid(settings, request_token(request))


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a dashboard path only, never another site."""
    if target and target.startswith("/ui") and not target.startswith("//"):
        return target
    return "/ui"
