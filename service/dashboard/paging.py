"""Previous/next links over keyset pages: the cursors of the pages before this one travel
in the ``trail`` query parameter (``-`` stands for the first page, which has no cursor)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import Request

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
