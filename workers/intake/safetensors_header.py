"""A safetensors header read with a bounded size and validated here, before the library sees it.

Layout: 8 bytes little-endian header length n, n bytes of JSON, then the data. The JSON maps
tensor names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the
data section) plus an optional ``"__metadata__"`` of string -> string. Valid means: every
entry has exactly those fields with the right types, ``end - begin`` is the shape's element
count times the dtype's size, and the entries tile the data section with no gap or overlap.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.intake.errors import IntakeError
from workers.intake.limits import IntakeLimits, over_limit

DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
MAX_RANK = 8
_FIELDS = {"dtype", "shape", "data_offsets"}


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_bytes: int

    @property
    def elements(self) -> int:
        return sum(t.numel for t in self.tensors.values())


def read_safetensors_header(path: Path, limits: IntakeLimits) -> SafetensorsHeader:
    """The validated header of ``path``; IntakeError (one line) for anything malformed."""
    bad = f"not a valid safetensors file: {path.name}:"
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise IntakeError(f"{bad} shorter than its 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > size - 8:
            raise IntakeError(f"{bad} header length {n} does not fit the file of {size} bytes")
        if n > limits.max_header_bytes:
            raise IntakeError(
                over_limit(
                    f"{path.name} header bytes", n, limits.max_header_bytes, "MAX_HEADER_BYTES"
                )
            )
        raw = fh.read(n)
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        text = type(exc).__name__ if isinstance(exc, RecursionError) else str(exc)[:120]
        raise IntakeError(f"{bad} header is not JSON ({text})") from None
    if not isinstance(parsed, dict):
        raise IntakeError(f"{bad} header is not a JSON object")
    data_bytes = size - 8 - n
    metadata = _metadata(parsed.pop("__metadata__", {}), bad)
    tensors = {name: _entry(name, entry, bad) for name, entry in parsed.items()}
    _check_tiling(tensors, data_bytes, bad)
    header = SafetensorsHeader(tensors, metadata, data_bytes)
    if header.elements > limits.max_elements:
        raise IntakeError(
            over_limit(
                f"{path.name} elements", header.elements, limits.max_elements, "MAX_ELEMENTS"
            )
        )
    return header


def _metadata(value: Any, bad: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise IntakeError(f"{bad} __metadata__ must map strings to strings")
    return value


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(name: str, entry: Any, bad: str) -> TensorEntry:
    where = f"{bad} tensor {name[:80]!r}"
    if not name:
        raise IntakeError(f"{bad} a tensor has an empty name")
    if not isinstance(entry, dict) or set(entry) != _FIELDS:
        raise IntakeError(f"{where} must have exactly the fields dtype, shape, data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise IntakeError(f"{where} has an unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(_is_index(d) for d in shape):
        raise IntakeError(f"{where} has a bad shape (a list of at most {MAX_RANK} integers >= 0)")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_index(o) for o in offsets):
        raise IntakeError(f"{where} has bad data_offsets (two integers >= 0)")
    begin, end = offsets
    t = TensorEntry(dtype, tuple(shape), begin, end)
    if end - begin != t.numel * DTYPE_BYTES[dtype]:
        raise IntakeError(
            f"{where}: data_offsets span {end - begin} bytes, its shape needs "
            f"{t.numel * DTYPE_BYTES[dtype]}"
        )
    return t


def _check_tiling(tensors: dict[str, TensorEntry], data_bytes: int, bad: str) -> None:
    position = 0
    for name, t in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if t.begin != position:
            raise IntakeError(f"{bad} tensor {name[:80]!r} overlaps or leaves a gap in the data")
        position = t.end
    if position != data_bytes:
        raise IntakeError(f"{bad} the tensors cover {position} of {data_bytes} data bytes")
