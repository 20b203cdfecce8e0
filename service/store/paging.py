"""The one keyset pager of every listing (jobs, checkpoints, datasets, layers).

A listing is ordered by a key column, then by a unique tie-breaker column; nulls of the key
come last. A page is ``limit`` rows after the cursor's position, and the next cursor is the
position of the page's last row: ``{"l": listing, "k": key, "d": descending, "v": key value,
"i": tie value}``, as url-safe base64 JSON. A cursor is checked before it reaches SQL: it must
decode, name this listing and this order, and carry values of the columns' own types (an
integer within int64, a finite float, a string without NUL, an ISO timestamp). Anything else
is a :class:`CursorError` (400). A well-formed cursor that was never handed out only moves the
page, which reveals nothing a filter could not.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_
from sqlalchemy.engine import Row
from sqlalchemy.orm import InstrumentedAttribute, Session

from api_schemas.wire import INT64_MAX, as_utc

INT64_MIN = -INT64_MAX - 1
MAX_CURSOR_CHARS = 2048
_KEY, _TIE = "_page_key", "_page_tie"


class CursorError(ValueError):
    """A cursor that this listing did not hand out (malformed, or for another order)."""


@dataclass(frozen=True)
class Keyset:
    """One listing's order: ``key`` (``descending`` or not, nulls last), then ``tie``."""

    listing: str
    key_name: str
    key: InstrumentedAttribute[Any]
    tie: InstrumentedAttribute[Any]
    descending: bool = False
    tie_descending: bool = False

    @property
    def key_is_tie(self) -> bool:
        return self.key is self.tie


def encode_cursor(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """The cursor's JSON object; :class:`CursorError` unless it is one."""
    if len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        raise CursorError("invalid cursor")
    try:
        raw = base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode())
        payload = json.loads(raw, parse_constant=_refuse_constant)
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise CursorError("invalid cursor") from exc
    if not isinstance(payload, dict):
        raise CursorError("invalid cursor")
    return payload


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a cursor value")


def _python_type(column: InstrumentedAttribute[Any]) -> type:
    return column.type.python_type


def _to_wire(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).replace(tzinfo=None).isoformat()
    return value


def _from_wire(value: Any, column: InstrumentedAttribute[Any], what: str) -> Any:
    """The cursor's ``value`` as a value of ``column``'s type, or a CursorError."""
    kind = _python_type(column)
    if kind is datetime:
        if isinstance(value, str):
            try:
                return as_utc(datetime.fromisoformat(value)).replace(tzinfo=None)
            except ValueError:
                pass
    elif kind is int:
        if type(value) is int and INT64_MIN <= value <= INT64_MAX:
            return value
    elif kind is float:
        if type(value) in (int, float) and not math.isnan(value):
            return float(value)
    elif kind is str and isinstance(value, str) and "\x00" not in value:
        return value
    raise CursorError(f"invalid cursor: bad {what} value")


def _position(keyset: Keyset, payload: dict[str, Any]) -> tuple[Any, Any]:
    expected = (keyset.listing, keyset.key_name, keyset.descending)
    if (payload.get("l"), payload.get("k"), payload.get("d")) != expected:
        raise CursorError("cursor belongs to another listing or sort order")
    if "v" not in payload or "i" not in payload:
        raise CursorError("invalid cursor")
    tie = _from_wire(payload["i"], keyset.tie, "position")
    value = payload["v"]
    key = None if value is None else _from_wire(value, keyset.key, "key")
    if keyset.key_is_tie and key != tie:
        raise CursorError("invalid cursor")
    return key, tie


def _after(keyset: Keyset, key: Any, tie: Any) -> ColumnElement[bool]:
    """Rows strictly after the position (key, tie) in the listing's order."""
    tie_beyond = keyset.tie < tie if keyset.tie_descending else keyset.tie > tie
    if keyset.key_is_tie:
        return tie_beyond
    col = keyset.key
    if key is None:  # inside the trailing nulls
        return and_(col.is_(None), tie_beyond)
    beyond = col < key if keyset.descending else col > key
    return or_(col.is_(None), beyond, and_(col == key, tie_beyond))


def _order(keyset: Keyset) -> list[Any]:
    tie = keyset.tie.desc() if keyset.tie_descending else keyset.tie.asc()
    if keyset.key_is_tie:
        return [tie]
    key = keyset.key.desc() if keyset.descending else keyset.key.asc()
    return [key.nulls_last(), tie]


def page(
    session: Session, what: Select[Any], keyset: Keyset, cursor: str | None, limit: int
) -> tuple[list[Row[Any]], str | None]:
    """One page of ``what`` (filters applied) in the keyset's order, and the next cursor.

    The rows are those of ``what``; the key and tie columns are added to each (labelled
    ``_page_key``/``_page_tie``) so that the next cursor is read from the last row."""
    stmt = what.add_columns(keyset.key.label(_KEY), keyset.tie.label(_TIE))
    if cursor:
        stmt = stmt.where(_after(keyset, *_position(keyset, decode_cursor(cursor))))
    rows = list(session.execute(stmt.order_by(*_order(keyset)).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]._mapping
    payload = {
        "l": keyset.listing,
        "k": keyset.key_name,
        "d": keyset.descending,
        "v": _to_wire(last[_KEY]),
        "i": _to_wire(last[_TIE]),
    }
    return rows, encode_cursor(payload)


def newest_first(
    listing: str, created: InstrumentedAttribute[Any], tie: InstrumentedAttribute[Any]
) -> Keyset:
    """The order of the artifact and job listings: newest first, ties by id descending."""
    return Keyset(listing, "created_at", created, tie, descending=True, tie_descending=True)
