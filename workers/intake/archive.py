"""Zip archives (``.npz``, ``.pt2``, ``.pt``) checked from their central directory alone.

Python's ``zipfile`` never yields more than a member's declared ``file_size`` (a member that
inflates further fails its CRC), so bounding the declared sizes bounds what decompression can
allocate. ``torch.load`` reads the same central directory.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np

from workers.intake.errors import IntakeError
from workers.intake.limits import IntakeLimits, over_limit

_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


@dataclass(frozen=True)
class ZipLayout:
    """The members of a checked archive: name -> declared uncompressed size."""

    sizes: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


def check_zip(path: Path, limits: IntakeLimits, what: str) -> ZipLayout:
    """Member count, names and declared sizes within ``limits``; IntakeError otherwise.

    Names must be relative, without ``..``, NUL or duplicates; only stored or deflated members.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise IntakeError(f"not a valid {what}: {path.name} is not a readable zip: {exc}") from None
    if len(infos) > limits.max_archive_members:
        raise IntakeError(
            over_limit(
                f"{what} {path.name} members",
                len(infos),
                limits.max_archive_members,
                "MAX_ARCHIVE_MEMBERS",
            )
        )
    sizes: dict[str, int] = {}
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        if "\x00" in name or name.startswith(("/", "\\")) or ".." in parts or not parts:
            raise IntakeError(f"{what} {path.name} has an unsafe member name {name[:80]!r}")
        if name in sizes:
            raise IntakeError(f"{what} {path.name} has a duplicate member {name[:80]!r}")
        if info.compress_type not in _METHODS:
            raise IntakeError(f"{what} {path.name}: member {name[:80]!r} uses an unsupported codec")
        sizes[name] = info.file_size
    layout = ZipLayout(sizes)
    if layout.total_bytes > limits.max_decompressed_bytes:
        raise IntakeError(
            over_limit(
                f"{what} {path.name} decompressed bytes",
                layout.total_bytes,
                limits.max_decompressed_bytes,
                "MAX_DECOMPRESSED_BYTES",
            )
        )
    return layout


def check_npz(path: Path, limits: IntakeLimits) -> ZipLayout:
    """A ``.npz``: the zip checks, then every ``.npy`` header (dtype, shape) against its size.

    A header's shape is what numpy allocates, so it must describe exactly the member's bytes,
    and the elements of all arrays together stay within ``limits.max_elements``.
    """
    layout = check_zip(path, limits, ".npz file")
    elements = 0
    with zipfile.ZipFile(path) as zf:
        for name, size in layout.sizes.items():
            if not name.endswith(".npy"):
                raise IntakeError(f"not a valid .npz file: {path.name} holds {name[:80]!r}")
            with zf.open(name) as fh:
                shape, dtype, header_len = _npy_header(fh, path.name, name)
            if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
                raise IntakeError(
                    f"data file {path.name}: array {name[:-4]!r} has unsupported dtype {dtype} "
                    "(pickled/object arrays are refused)"
                )
            count = 1
            for dim in shape:
                count *= dim
            if header_len + count * dtype.itemsize != size:
                raise IntakeError(
                    f"not a valid .npz file: {path.name}: array {name[:-4]!r} of shape "
                    f"{shape} does not match its {size} bytes"
                )
            elements += count
    if elements > limits.max_elements:
        raise IntakeError(
            over_limit(f"{path.name} array elements", elements, limits.max_elements, "MAX_ELEMENTS")
        )
    return layout


def _npy_header(fh: IO[bytes], file: str, member: str) -> tuple[tuple[int, ...], np.dtype, int]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        header_len = fh.tell()
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, RecursionError) as exc:
        text = (str(exc).strip().splitlines() or [""])[0][:200]
        raise IntakeError(f"not a valid .npz file: {file}: {member[:80]!r}: {text}") from None
    return tuple(int(d) for d in shape), dtype, int(header_len)


def check_pt2(path: Path, limits: IntakeLimits) -> ZipLayout:
    """A ``torch.export`` archive's layout, read without unpickling anything: the zip checks,
    one top-level folder, and the ``archive_format`` and ``models/`` entries it must hold."""
    layout = check_zip(path, limits, ".pt2 archive")
    roots = {name.split("/", 1)[0] for name in layout.sizes}
    if len(roots) != 1 or any("/" not in name for name in layout.sizes):
        raise IntakeError(f"not a .pt2 archive: {path.name} must hold one top-level folder")
    (root,) = roots
    if f"{root}/archive_format" not in layout.sizes or not any(
        name.startswith(f"{root}/models/") for name in layout.sizes
    ):
        raise IntakeError(
            f"not a .pt2 archive: {path.name} lacks archive_format or models/ (torch.export.save)"
        )
    return layout
