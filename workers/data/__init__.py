"""Measurement data: built-in sets, user data files, the fixed measurement batch."""

from __future__ import annotations

from workers.data.batch import Dataset, check_fits, measurement_batch
from workers.data.builtin import TEXT_VOCAB, load_builtin
from workers.data.files import load_data_file
from workers.data.open import open_dataset

__all__ = [
    "TEXT_VOCAB",
    "Dataset",
    "check_fits",
    "load_builtin",
    "load_data_file",
    "measurement_batch",
    "open_dataset",
]
