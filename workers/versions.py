"""Versions of everything a profile's numbers depend on (one definition for every path)."""

from __future__ import annotations

import platform
from importlib import metadata

from workers import __version__

_PACKAGES = ("torch", "numpy", "scipy", "ray")


def library_versions() -> dict[str, str]:
    """curvprof and Python, and torch, numpy, scipy and Ray where installed (read from the
    installed distributions, so nothing is imported)."""
    versions = {"curvprof": __version__, "python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
