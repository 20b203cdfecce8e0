"""Bounds on untrusted input, checked before anything is decompressed, allocated or built.

One ``IntakeLimits`` travels with every loader (CLI defaults below; the service derives its
own from ``CURVPROF_MAX_*`` settings, see ``service/settings.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IntakeLimits:
    """The most an input file or model config may ask for.

    ``max_decompressed_bytes`` bounds the sum of an archive's member sizes (npz, pt2 and .pt
    are zip archives; a safetensors file's data section counts as is); ``max_elements`` the
    number of array elements a file holds (all arrays together); ``max_archive_members`` the
    entries of a zip; ``max_header_bytes`` a safetensors JSON header; ``max_model_parameters``
    the parameters a model config describes.
    """

    max_decompressed_bytes: int = 2 * 1024**3  # as much as an upload may be, uncompressed
    max_elements: int = 1 << 29
    max_archive_members: int = 10_000
    max_header_bytes: int = 16 * 1024**2
    max_model_parameters: int = 200_000_000


DEFAULT_LIMITS = IntakeLimits()


def over_limit(what: str, value: int, limit: int, setting: str) -> str:
    """The one wording of every limit error (``setting`` is the service variable's suffix)."""
    return f"{what}: {value:,} is above the limit of {limit:,} (CURVPROF_{setting})"
