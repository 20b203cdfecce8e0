"""Byte-level builders for hostile files: zip bombs (real deflate streams), bad headers.

A bomb's member is ``prefix`` followed by ``n`` zero bytes, deflated by repeating one
full-flush block (after a full flush, deflate starts afresh, so the same 1 MiB of zeros always
compresses to the same bytes): a 2 GiB member costs ~2 MB and no real compression time. Its
CRC-32 comes from zlib's ``crc32_combine`` algorithm (GF(2) matrix powers), so the archive is
fully valid: anything that inflated it would get every byte and a matching checksum.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

_BLOCK = 1 << 20


def _gf2_times(mat: list[int], vec: int) -> int:
    total, i = 0, 0
    while vec:
        if vec & 1:
            total ^= mat[i]
        vec >>= 1
        i += 1
    return total


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(32)]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A + B from crc(A), crc(B) and len(B) (zlib's crc32_combine)."""
    if len2 <= 0:
        return crc1
    # the operator that appends one zero bit, squared twice: four zero bits
    op = _gf2_square(_gf2_square([0xEDB88320] + [1 << n for n in range(31)]))
    while len2:
        op = _gf2_square(op)  # 2^i zero bytes at bit i of len2
        if len2 & 1:
            crc1 = _gf2_times(op, crc1)
        len2 >>= 1
    return crc1 ^ crc2


def crc32_zeros(n: int) -> int:
    """CRC-32 of ``n`` zero bytes by doubling (O(log² n))."""
    result, length = 0, 0  # crc of the empty string is 0
    piece, piece_len = zlib.crc32(b"\0"), 1
    while n:
        if n & 1:
            result = crc32_combine(result, piece, piece_len) if length else piece
            length += piece_len
        piece = crc32_combine(piece, piece, piece_len)
        piece_len *= 2
        n >>= 1
    return result


def deflated_zeros(prefix: bytes, n: int) -> tuple[bytes, int, int]:
    """(raw deflate stream, crc32, size) of ``prefix`` + ``n`` zeros; n a multiple of 1 MiB."""
    assert n % _BLOCK == 0
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)
    block = head.compress(bytes(_BLOCK)) + head.flush(zlib.Z_FULL_FLUSH)
    again = head.compress(bytes(_BLOCK)) + head.flush(zlib.Z_FULL_FLUSH)
    assert again == block  # the stream restarts after each full flush
    stream = first + block * (n // _BLOCK) + head.flush(zlib.Z_FINISH)
    crc = crc32_combine(zlib.crc32(prefix), crc32_zeros(n), n)
    return stream, crc, len(prefix) + n


def write_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip from (name, data, method, crc, size) members, data already compressed."""
    local, central = bytearray(), bytearray()
    for name, data, method, crc, size in members:
        raw = name.encode()
        offset = len(local)
        fields = (20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + raw + data
        central += (
            struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, offset) + raw
        )
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(local), 0
    )
    path.write_bytes(bytes(local + central + end))
    return path


def stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return name, data, 0, zlib.crc32(data), len(data)


def zero_bomb(name: str, prefix: bytes, n: int) -> tuple[str, bytes, int, int, int]:
    stream, crc, size = deflated_zeros(prefix, n)
    return name, stream, 8, crc, size


def npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """A version 1.0 ``.npy`` header (magic, length, dict padded to 64 bytes)."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = 64 - (10 + len(text) + 1) % 64
    body = (text + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body


def safetensors_bytes(header: object, data: bytes = b"", raw_header: bytes | None = None) -> bytes:
    """A safetensors file with any header (``raw_header`` as is, else ``header`` as JSON)."""
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data
