"""Versions of everything a profile's numbers depend on (one definition for every path)."""

from __future__ import annotations

import functools
import platform
from importlib import metadata
from typing import TYPE_CHECKING

from workers import __version__

if TYPE_CHECKING:
    import torch

_PACKAGES = ("torch", "numpy", "scipy", "ray")


def library_versions() -> dict[str, str]:
    """curvprof and Python, and torch, numpy, scipy and Ray where installed (read from the
    installed distributions, so nothing is imported). Read once per process: a package
    upgraded on disk while a worker runs is not the one it has loaded, and reading the
    metadata costs about 18 ms, a few gradients of a small model's profile."""
    return dict(_installed_versions())


@functools.cache
def _installed_versions() -> dict[str, str]:
    versions = {"curvprof": __version__, "python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_label(device: torch.device) -> str:
    """The torch device numbers were computed on, as provenance records it: ``cpu``, or the
    CUDA device with its index and name, ``cuda:0 (NVIDIA H200)``."""
    if device.type != "cuda":
        return str(device)
    import torch  # only for a CUDA device, which needs torch imported anyway

    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
