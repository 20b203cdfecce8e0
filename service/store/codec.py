"""Compact storage of a LayerProfile and the opaque keyset cursors."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from api_schemas import LayerProfile


class CursorError(ValueError):
    """A cursor that this service did not hand out (or for another sort order)."""


def pack_profile(profile: LayerProfile) -> bytes:
    """zlib-compressed JSON; non-finite floats are kept (``NaN`` tokens), so every stored
    profile validates again exactly as it was produced."""
    return zlib.compress(json.dumps(profile.model_dump(mode="python")).encode(), 6)


def unpack_profile_data(blob: bytes) -> dict[str, Any]:
    """The stored profile's JSON as a dict (validate it once, where it is used)."""
    data: dict[str, Any] = json.loads(zlib.decompress(blob))
    return data


def unpack_profile(blob: bytes) -> LayerProfile:
    return LayerProfile.model_validate(unpack_profile_data(blob))


def encode_cursor(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except Exception as exc:
        raise CursorError("invalid cursor") from exc
    if not isinstance(payload, dict):
        raise CursorError("invalid cursor")
    return payload
