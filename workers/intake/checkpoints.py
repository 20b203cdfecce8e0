"""Save and load model checkpoints without ever running a pickle that could execute code.

Accepted: a zoo directory (``config.json`` + ``model.safetensors``); a zoo config JSON with
``weights=`` (.safetensors, or .pt/.pth read with ``torch.load(weights_only=True)``); a
Hugging Face directory (delegated to ``hf.py``); a ``.pt2`` program, only with the opt-in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from workers.errors import IntakeError
from workers.intake.archive import check_pt2, check_zip
from workers.intake.exported import (
    BATCH_RANGE_ATTR,
    STATIC_BATCH_ATTR,
    exported_batch_range,
    exported_static_batch,
)
from workers.intake.limits import DEFAULT_LIMITS, IntakeLimits, over_limit
from workers.intake.safetensors_header import read_safetensors_header

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class LoadedModel:
    """A model ready for measurement (eval mode) and where it came from."""

    model: nn.Module
    config: dict[str, Any]
    arch: str
    sha256: str
    format: str  # "zoo" | "hf" | "pt2" | "pt"
    default_loss: str | None = None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(model: nn.Module, out_dir: str | Path) -> Path:
    """Write ``config.json`` (``model.curvprof_config``) and ``model.safetensors``; tied tensors
    are stored once under their first name."""
    config = getattr(model, "curvprof_config", None)
    if not isinstance(config, dict):
        raise IntakeError("model has no curvprof_config: only zoo models can be saved")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...]]] = set()
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            tensors[name] = tensor.detach().cpu().contiguous()
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt", "arch": config["arch"]})
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def load_checkpoint(
    path: str | Path,
    *,
    weights: str | Path | None = None,
    allow_pickle: bool = False,
    limits: IntakeLimits = DEFAULT_LIMITS,
) -> LoadedModel:
    """Load any accepted checkpoint form; IntakeError (one line) for anything wrong.

    Every file is checked against ``limits`` before it is read, and a zoo model's size and its
    weights' shapes against its config before the model is built.
    """
    p = Path(path)
    if not p.exists():
        raise IntakeError(f"checkpoint not found: {p}")
    if p.is_dir():
        config = _read_config(p / CONFIG_NAME)
        if "arch" not in config and ("model_type" in config or "architectures" in config):
            return _load_hf(p, config, limits)
        return _load_zoo(config, Path(weights) if weights is not None else p / WEIGHTS_NAME, limits)
    suffix = p.suffix.lower()
    if suffix == ".pt2":
        return _load_pt2(p, allow_pickle, limits)
    if suffix == ".json":
        if weights is None:
            raise IntakeError(f"config {p.name} needs weights=FILE (.safetensors, .pt or .pth)")
        return _load_zoo(_read_config(p), Path(weights), limits)
    raise IntakeError(
        f"unsupported checkpoint {p.name}: pass a directory, a config .json with weights=FILE, "
        "or a .pt2 file"
    )


def read_safetensors(
    path: Path, *, what: str = "weights", limits: IntakeLimits = DEFAULT_LIMITS
) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; IntakeError for a corrupt file or NaN/Inf values.

    The header is validated (``read_safetensors_header``) before the library reads the file.
    """
    read_safetensors_header(path, limits)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise IntakeError(f"not a valid safetensors file: {path.name}: {exc}") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise IntakeError(f"{what} tensor {name!r} in {path.name} contains NaN or Inf")
    return tensors


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise IntakeError(f"no {path.name} in {path.parent}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntakeError(f"config {path.name} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise IntakeError(f"config {path.name} must be a JSON object")
    return config


def load_zoo(
    config: dict[str, Any], weights: Path, limits: IntakeLimits = DEFAULT_LIMITS
) -> LoadedModel:
    """A zoo model from its config and a weights file (strict, NaN-checked)."""
    return _load_zoo(config, weights, limits)


def _load_zoo(config: dict[str, Any], weights: Path, limits: IntakeLimits) -> LoadedModel:
    """Size from the config (meta device), file shapes against it, then build and load."""
    from workers.zoo import build_model, check_model_size

    if "arch" not in config:
        raise IntakeError("config has no 'arch' (zoo) and no 'model_type' (Hugging Face)")
    expected = check_model_size(config, limits.max_model_parameters)
    if not weights.is_file():
        raise IntakeError(f"weights file not found: {weights}")
    suffix = weights.suffix.lower()
    if suffix == ".safetensors":
        header = read_safetensors_header(weights, limits)
        _check_shapes(expected, {k: t.shape for k, t in header.tensors.items()}, weights.name)
        state, fmt = read_safetensors(weights, limits=limits), "zoo"
    elif suffix in (".pt", ".pth", ".bin"):
        state, fmt = _read_torch_weights(weights, limits), "pt"
        _check_shapes(expected, {k: tuple(t.shape) for k, t in state.items()}, weights.name)
    else:
        raise IntakeError(f"unsupported weights file type {suffix!r}: use .safetensors, .pt, .pth")
    model = build_model(config, max_parameters=None)
    _load_state(model, state, weights.name)
    model.eval()
    cfg: dict[str, Any] = getattr(model, "curvprof_config", config)
    loss = str(getattr(model, "default_loss", "cross_entropy"))
    return LoadedModel(model, cfg, cfg["arch"], sha256_file(weights), fmt, loss)


def _check_shapes(
    expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]], source: str
) -> None:
    """Every tensor in the file is one the config builds, with its shape (missing keys, which
    tied aliases may be, are checked by ``_load_state``)."""
    unexpected = [k for k in got if k not in expected]
    if unexpected:
        raise IntakeError(f"weights {source} do not match config: unexpected key {unexpected[0]!r}")
    for name, shape in expected.items():
        if name in got and tuple(got[name]) != shape:
            raise IntakeError(
                f"weights {source} do not match config: shape mismatch for {name!r}: "
                f"file {tuple(got[name])} vs model {shape}"
            )


def _read_torch_weights(path: Path, limits: IntakeLimits) -> dict[str, torch.Tensor]:
    """A ``torch.save`` zip state dict: the zip checked first, tensors memory-mapped, their
    element count bounded before any value is read."""
    if not zipfile.is_zipfile(path):
        raise IntakeError(
            f"refused {path.name}: not loadable with weights_only=True "
            "(only the zip format of torch.save is accepted, no bare pickle)"
        )
    check_zip(path, limits, ".pt state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        text = (str(exc).strip().splitlines() or [""])[0]
        raise IntakeError(
            f"refused {path.name}: not loadable with weights_only=True "
            f"(only plain tensors are accepted, nothing that runs code): {text}"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise IntakeError(f"{path.name} is not a plain state dict (name -> tensor)")
    elements = sum(t.numel() for t in state.values())
    if elements > limits.max_elements:
        raise IntakeError(
            over_limit(f"{path.name} elements", elements, limits.max_elements, "MAX_ELEMENTS")
        )
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise IntakeError(f"weights tensor {name!r} in {path.name} contains NaN or Inf")
    return state


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load naming the first missing, unexpected or mis-shaped key (tied aliases may be
    absent)."""
    expected = model.state_dict()
    ptr_groups: dict[int, list[str]] = {}
    for name, tensor in expected.items():
        ptr_groups.setdefault(tensor.data_ptr(), []).append(name)
    full = dict(state)
    for name, tensor in expected.items():
        if name in full:
            continue
        alias = next((a for a in ptr_groups[tensor.data_ptr()] if a in state), None)
        if alias is None:
            raise IntakeError(f"weights {source} do not match config: missing key {name!r}")
        full[name] = state[alias]
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise IntakeError(f"weights {source} do not match config: unexpected key {unexpected[0]!r}")
    for name, tensor in expected.items():
        got = full[name]
        if tuple(got.shape) != tuple(tensor.shape):
            raise IntakeError(
                f"weights {source} do not match config: shape mismatch for {name!r}: "
                f"file {tuple(got.shape)} vs model {tuple(tensor.shape)}"
            )
        if got.is_floating_point() != tensor.is_floating_point():
            raise IntakeError(f"weights {source}: tensor {name!r} has dtype {got.dtype}")
    model.load_state_dict(full, strict=True)


def _load_hf(directory: Path, config: dict[str, Any], limits: IntakeLimits) -> LoadedModel:
    from workers.intake.hf import load_hf

    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise IntakeError(
            f"Hugging Face directory {directory.name} has no {WEIGHTS_NAME} (pickled "
            ".bin weights and sharded checkpoints are not accepted)"
        )
    read_safetensors(weights, limits=limits)
    model = load_hf(directory, config, limits.max_model_parameters)
    model.eval()
    arch = str((config.get("architectures") or [config.get("model_type", "hf")])[0])
    return LoadedModel(model, config, arch, sha256_file(weights), "hf", model.default_loss)


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    root = logging.getLogger("torch")
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _load_pt2(path: Path, allow_pickle: bool, limits: IntakeLimits) -> LoadedModel:
    if not allow_pickle:
        raise IntakeError(
            f"{path.name}: .pt2 programs can unpickle code and need the operator opt-in "
            "(allow_pickle=True)"
        )
    check_pt2(path, limits)
    try:
        with _quiet_torch_logs():  # torch logs multi-line tracebacks on fallbacks it takes
            program = torch.export.load(str(path))  # opt-in given: the operator trusts it
            model = program.module()
            static = exported_static_batch(program)
            bounds = exported_batch_range(program)
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [""])[0]
        raise IntakeError(f"not a loadable .pt2 program: {path.name}: {text}") from None
    setattr(model, STATIC_BATCH_ATTR, static)
    setattr(model, BATCH_RANGE_ATTR, bounds)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise IntakeError(f"weights tensor {name!r} in {path.name} contains NaN or Inf")
    config: dict[str, Any] = {"arch": "pt2", "file": path.name, "static_batch": static}
    return LoadedModel(model, config, "pt2", sha256_file(path), "pt2", None)
