"""Model zoo: ``build_model({"arch": ..., **options})`` for mlp, vgg, resnet, vit and gpt.

Every model carries ``curvprof_config`` (the full config, defaults filled in, JSON-safe),
``curvprof_kinds`` (``"<module>.weight"`` -> layer kind) and ``default_loss``.
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import math
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import torch
from torch import nn

from api_schemas.enums import ARCHITECTURES
from workers.errors import IntakeError
from workers.intake.limits import DEFAULT_LIMITS, over_limit

ARCHS: dict[str, ModuleType] = {
    arch: importlib.import_module(f"workers.zoo.{arch}") for arch in ARCHITECTURES
}

_LINEAR_KINDS = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "out_proj": "attn_o",
    "qkv": "attn_qkv",
    "fc1": "mlp_up",
    "fc2": "mlp_down",
}

# Structural bounds checked before any module is built (even on the meta device): a width or
# size, a list's length, and the repetitions a "depth" or a resnet "blocks" list asks for.
MAX_DIMENSION = 1 << 24
MAX_LIST_LENGTH = 64
MAX_REPEATS = 256
_REPEAT_KEYS = ("depth", "blocks")

__all__ = [
    "ARCHS",
    "build_model",
    "check_model_size",
    "kinds_from_modules",
    "meta_state_shapes",
    "resolve_config",
]


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``config`` and fill in the arch's defaults; IntakeError on any problem."""
    if not isinstance(config, Mapping):
        raise IntakeError(f"model config must be a JSON object, got {type(config).__name__}")
    arch = config.get("arch")
    if not isinstance(arch, str) or arch not in ARCHS:
        raise IntakeError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    module = ARCHS[arch]
    defaults: dict[str, Any] = module.DEFAULTS
    unknown = [k for k in config if k != "arch" and k not in defaults]
    if unknown:
        raise IntakeError(
            f"unknown config key {unknown[0]!r} for arch {arch!r}; allowed: {', '.join(defaults)}"
        )
    cfg: dict[str, Any] = {"arch": arch, **copy.deepcopy(defaults)}
    for key, value in config.items():
        if key != "arch":
            cfg[key] = _checked(arch, key, value, defaults[key], module.CHOICES.get(key, ()))
    for key in _REPEAT_KEYS:
        value = cfg.get(key)
        repeats = sum(value) if isinstance(value, list) else value
        if isinstance(repeats, int) and repeats > MAX_REPEATS:
            raise IntakeError(
                f"{arch} config key {key!r} asks for {repeats} repeated blocks; "
                f"at most {MAX_REPEATS}"
            )
    return cfg


def _checked(arch: str, key: str, value: Any, default: Any, choices: tuple[str, ...]) -> Any:
    where = f"{arch} config key {key!r}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise IntakeError(f"{where} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIMENSION:
            raise IntakeError(
                f"{where} must be an integer from 1 to {MAX_DIMENSION}, got {str(value)[:40]}"
            )
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise IntakeError(f"{where} must be a non-negative number, got {value!r}")
        value = float(value)
    elif isinstance(default, str):
        if value not in choices:
            raise IntakeError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
    elif isinstance(default, list):
        if not isinstance(value, (list, tuple)) or not value or len(value) > MAX_LIST_LENGTH:
            raise IntakeError(
                f"{where} must be a list of 1 to {MAX_LIST_LENGTH} entries, got {str(value)[:40]}"
            )
        for item in value:
            ok_int = isinstance(item, int) and not isinstance(item, bool)
            if not (ok_int and 1 <= item <= MAX_DIMENSION) and item not in choices:
                raise IntakeError(f"{where} has a bad entry {str(item)[:40]}")
        value = list(value)
    return value


def build_model(
    config: Mapping[str, Any], max_parameters: int | None = DEFAULT_LIMITS.max_model_parameters
) -> nn.Module:
    """A freshly initialised zoo model (float32, train mode) for ``config``.

    Its size is checked on the meta device first (``check_model_size``); ``max_parameters=None``
    skips that for a config already checked (a worker rebuilding what the service accepted).
    """
    cfg = resolve_config(config)
    if max_parameters is not None:
        check_model_size(cfg, max_parameters)
    model: nn.Module = ARCHS[cfg["arch"]].build(cfg)
    vars(model).update(curvprof_config=cfg, curvprof_kinds=kinds_from_modules(model, _zoo_kind))
    return model


def meta_state_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The state dict's shapes for ``config``, from a model built on the meta device (nothing
    allocated); IntakeError when the config cannot be built. The shapes of the last
    ``SHAPE_CACHE_SIZE`` configs are kept: a service checks the same few configs again and
    again, and building even on the meta device costs milliseconds."""
    cfg = resolve_config(config)
    try:
        key = json.dumps(cfg, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):  # not JSON: built each time
        return _built_state_shapes(cfg)
    return dict(_cached_state_shapes(key))


SHAPE_CACHE_SIZE = 256


@functools.lru_cache(maxsize=SHAPE_CACHE_SIZE)
def _cached_state_shapes(config_json: str) -> dict[str, tuple[int, ...]]:
    return _built_state_shapes(json.loads(config_json))


def _built_state_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    try:
        with torch.device("meta"):
            model = ARCHS[cfg["arch"]].build(cfg)
    except IntakeError:
        raise
    except (RuntimeError, ValueError, OverflowError, TypeError, ZeroDivisionError) as exc:
        text = (str(exc).strip().splitlines() or [""])[0][:200]
        raise IntakeError(f"{cfg['arch']} config cannot be built: {text}") from None
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_model_size(
    config: Mapping[str, Any], max_parameters: int = DEFAULT_LIMITS.max_model_parameters
) -> dict[str, tuple[int, ...]]:
    """``meta_state_shapes`` after checking that the parameters and buffers (tied tensors
    counted once per name) stay within ``max_parameters``."""
    shapes = meta_state_shapes(config)
    count = sum(math.prod(shape) for shape in shapes.values())
    if count > max_parameters:
        arch = config.get("arch")
        raise IntakeError(
            over_limit(f"{arch} model parameters", count, max_parameters, "MAX_MODEL_PARAMETERS")
        )
    return shapes


def _zoo_kind(name: str, module: nn.Module, is_last_linear: bool) -> str | None:
    if isinstance(module, nn.Conv2d):
        return "conv"
    if not isinstance(module, nn.Linear):
        return None
    if is_last_linear:
        return "head"
    return _LINEAR_KINDS.get(name.rsplit(".", 1)[-1], "linear")


def kinds_from_modules(
    model: nn.Module, kind_of: Callable[[str, nn.Module, bool], str | None]
) -> dict[str, str]:
    """``"<module path>.weight"`` -> kind for every module ``kind_of`` names.

    ``kind_of(path, module, is_last_linear)`` returns a kind or None (not analysed). Keys use
    module paths, so a tied ``lm_head`` is listed as ``lm_head.weight``.
    """
    modules = list(model.named_modules())
    linear = [p for p, m in modules if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"]
    kinds: dict[str, str] = {}
    for path, module in modules:
        if not isinstance(getattr(module, "weight", None), nn.Parameter):
            continue
        kind = kind_of(path, module, bool(linear) and path == linear[-1])
        if kind is not None:
            kinds[f"{path}.weight"] = kind
    return kinds
