"""Previous/next links over keyset pages: the cursors of the pages before this one travel
in the ``trail`` query parameter (``-`` stands for the first page, which has no cursor)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import Query, Request

FIRST = "-"
MAX_TRAIL = 200


@dataclass
class Pager:
    number: int
    previous_url: str | None
    next_url: str | None
    first_url: str | None


@dataclass
class Trail:
    before: list[str]  # cursors of the earlier pages, oldest first
    current: str | None

    @classmethod
    def parse(cls, trail: str | None, cursor: str | None) -> Trail:
        before = [c for c in (trail or "").split(",") if c][-MAX_TRAIL:]
        return cls(before, cursor or None)

    def links(self, request: Request, next_cursor: str | None) -> Pager:
        def url(cursor: str | None, trail: list[str]) -> str:
            params = {k: v for k, v in request.query_params.items() if k not in ("cursor", "trail")}
            if cursor:
                params["cursor"] = cursor
            if trail:
                params["trail"] = ",".join(trail)
            return request.url.path + ("?" + urlencode(params) if params else "")

        previous_url = None
        if self.current is not None:
            back = self.before[-1] if self.before else FIRST
            previous_url = url(None if back == FIRST else back, self.before[:-1])
        next_url = None
        if next_cursor is not None:
            next_url = url(next_cursor, [*self.before, self.current or FIRST])
        first_url = url(None, []) if self.current is not None else None
        return Pager(len(self.before) + 1, previous_url, next_url, first_url)


@dataclass
class PageQuery:
    """A listing page's query: where it starts (``cursor``), the trail back, its size."""

    cursor: str | None
    trail: Trail
    limit: int

    def links(self, request: Request, next_cursor: str | None) -> Pager:
        return self.trail.links(request, next_cursor)


def page_query(max_limit: int) -> Callable[..., PageQuery]:
    """The dependency reading a :class:`PageQuery` of at most ``max_limit`` rows."""

    def get_page_query(
        cursor: str | None = None,
        trail: str | None = None,
        # a default, not Annotated: the annotations are strings, and max_limit is local
        limit: int = Query(50, ge=1, le=max_limit),
    ) -> PageQuery:
        return PageQuery(cursor or None, Trail.parse(trail, cursor), limit)

    return get_page_query
