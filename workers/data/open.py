"""One way to name data everywhere (CLI, service, workers): a file path or a built-in name."""

from __future__ import annotations

from pathlib import Path

from workers.data.batch import Dataset
from workers.data.builtin import load_builtin
from workers.data.files import load_data_file
from workers.intake.limits import DEFAULT_LIMITS, IntakeLimits

DATA_SUFFIXES = (".npz", ".safetensors")


def open_dataset(source: str | Path, limits: IntakeLimits = DEFAULT_LIMITS) -> Dataset:
    """The data file ``source`` names, else the built-in set of that name (training split).

    Built-in sets always use their fixed split (seed 0): the profiling seed only draws the
    measurement batch, so every path sees the same examples for the same seed.
    """
    path = Path(source)
    if path.suffix.lower() in DATA_SUFFIXES or path.exists():
        return load_data_file(path, limits)
    return load_builtin(str(source))
