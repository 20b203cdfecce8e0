"""The dashboard's read gate and its page errors, declared once for every page.

A page's handler (or a dependency) raises :class:`LoginRequired` or :class:`PageError`; the
router's :class:`PageRoute` answers with the login page or an error page for HTML routes, and
with a problem document for the JSON ones.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute

from service.dashboard import auth
from service.dashboard.render import error_page, login_page
from service.deps import get_services
from service.problems import problem

T = TypeVar("T")


class LoginRequired(Exception):
    """Reads need a token and the request carries no valid one."""


class PageError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def require_reader(request: Request) -> None:
    """Dependency: the dashboard is read-only and honours the API's read auth."""
    if not auth.may_read(request, get_services(request).settings):
        raise LoginRequired


def found(value: T | None, what: str) -> T:
    """``value``, or a 404 page saying ``what`` was not found."""
    if value is None:
        raise PageError(404, f"{what} not found")
    return value


class PageRoute(APIRoute):
    """Turns the gate's exceptions into the page (or problem) a reader should see."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        html = self.response_class is HTMLResponse

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                return login_page(request) if html else problem(401, "login required")
            except PageError as exc:
                if html:
                    return error_page(request, exc.status, exc.message)
                return problem(exc.status, exc.message, instance=request.url.path)

        return answer
