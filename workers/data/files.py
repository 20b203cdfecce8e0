"""User data files: ``.npz`` (never unpickled) and ``.safetensors`` with ``inputs``/``targets``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from workers.data.batch import Dataset
from workers.intake.archive import check_npz
from workers.intake.errors import IntakeError
from workers.intake.limits import DEFAULT_LIMITS, IntakeLimits

REQUIRED = ("inputs", "targets")
OPTIONAL = ("attention_mask",)
ALIASES = {"input_ids": "inputs", "pixel_values": "inputs", "labels": "targets"}
"""Hugging Face names accepted for the required arrays (a file holds one name of each)."""


def load_data_file(path: str | Path, limits: IntakeLimits = DEFAULT_LIMITS) -> Dataset:
    """Read and validate a data file; IntakeError (one line) names whatever is wrong.

    Sizes and element counts are checked against ``limits`` from the zip directory and the
    array headers (``check_npz``, ``read_safetensors_header``) before any array is read.
    """
    from workers.intake.checkpoints import read_safetensors, sha256_file

    p = Path(path)
    if not p.is_file():
        raise IntakeError(f"data file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        arrays = {k: _npz_tensor(p, k, v) for k, v in _read_npz(p, limits).items()}
    elif suffix == ".safetensors":
        arrays = read_safetensors(p, what="data file", limits=limits)
    else:
        raise IntakeError(
            f"unsupported data file type {suffix or '(none)'!r}: use .npz or .safetensors"
        )
    arrays = _canonical_names(p.name, arrays)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise IntakeError(f"data file {p.name} lacks array {missing[0]!r} (has {sorted(arrays)})")
    extra = sorted(set(arrays) - set(REQUIRED) - set(OPTIONAL))
    if extra:
        raise IntakeError(f"data file {p.name} has unexpected array {extra[0]!r}")
    for key, tensor in arrays.items():
        _check_tensor(p.name, key, tensor)
    inputs, targets = _normalise(arrays["inputs"]), _normalise(arrays["targets"])
    mask: torch.Tensor | None = arrays.get("attention_mask")
    n = int(inputs.shape[0])
    for key, other in (("targets", targets), ("attention_mask", mask)):
        if other is not None and int(other.shape[0]) != n:
            raise IntakeError(
                f"data file {p.name}: {key} has {other.shape[0]} examples but inputs has {n}"
            )
    if mask is not None:
        mask = mask.to(torch.long) if mask.dtype == torch.bool else _normalise(mask)
    meta = {"path": str(p), "format": suffix.lstrip(".")}
    return Dataset(inputs, targets, mask, p.stem, sha256_file(p), meta)


def _canonical_names(name: str, arrays: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``input_ids``/``pixel_values`` -> ``inputs`` and ``labels`` -> ``targets``."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in arrays.items():
        canonical = ALIASES.get(key, key)
        if canonical in out:
            raise IntakeError(f"data file {name} holds {canonical!r} under two names")
        out[canonical] = tensor
    return out


def _read_npz(p: Path, limits: IntakeLimits) -> dict[str, np.ndarray]:
    with open(p, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise IntakeError(f"not a valid .npz file: {p.name} is not a zip archive")
    check_npz(p, limits)
    try:
        with np.load(p, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise IntakeError(
                f"data file {p.name} holds pickled/object arrays, which are refused"
            ) from None
        raise IntakeError(f"not a valid .npz file: {p.name}: {exc}") from None
    except Exception as exc:
        raise IntakeError(f"not a valid .npz file: {p.name}: {type(exc).__name__}: {exc}") from None


def _npz_tensor(p: Path, key: str, value: np.ndarray) -> torch.Tensor:
    if value.dtype.kind not in "biuf":
        raise IntakeError(f"data file {p.name}: array {key!r} has unsupported dtype {value.dtype}")
    if value.dtype.kind == "u" and value.dtype.itemsize > 1:
        value = value.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(value))


def _check_tensor(name: str, key: str, t: torch.Tensor) -> None:
    if t.ndim == 0 or t.shape[0] == 0:
        raise IntakeError(
            f"data file {name}: array {key!r} has no examples (shape {tuple(t.shape)})"
        )
    if t.is_complex():
        raise IntakeError(f"data file {name}: array {key!r} is complex")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise IntakeError(f"data file {name}: array {key!r} contains NaN or Inf")


def _normalise(t: torch.Tensor) -> torch.Tensor:
    """Integers -> int64, half/bfloat16/bool -> float32, float32/float64 kept."""
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.to(torch.float32)
    if t.dtype == torch.bool:
        return t.to(torch.float32)
    return t.to(torch.int64)
