"""Recorded profiles of every zoo architecture, for bit-for-bit regression tests.

``python -m tests.curvature.golden_profiles`` (from the repository root, with
``PYTHONPATH=$PWD``) records ``tests/curvature/golden/<arch>.json`` from the code as it is;
``tests/curvature/test_golden_profiles.py`` replays each and compares every number.
Floats are written with ``float.hex`` so that the comparison is exact.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from api_schemas import Profile
from workers.curvature import profile_model
from workers.zoo import ARCHS, build_model

GOLDEN_DIR = Path(__file__).parent / "golden"
N_EXAMPLES = 24
VARIANTS = ("ggn", "ef", "kron", "mc")

# Small enough that all five record in a few seconds, wide enough that some layers reach the
# default min_fit_points (8) and so carry fits, BIC, decomposition and preconditioner values.
CONFIGS: dict[str, dict[str, Any]] = {
    "mlp": {"arch": "mlp", "widths": [16, 12], "activation": "gelu"},
    "vgg": {"arch": "vgg", "features": [4, "M", 8, "M"], "hidden": [16]},
    "resnet": {"arch": "resnet", "widths": [4, 8], "blocks": [1, 1]},
    "vit": {"arch": "vit", "dim": 16, "heads": 2, "depth": 1, "mlp_dim": 16},
    "gpt": {"arch": "gpt", "dim": 16, "heads": 2, "depth": 1, "mlp_dim": 16, "block_size": 6},
}

# The BIC values come from LAPACK's least squares in 2-3 unknowns, whose kernels (and so
# last bits) depend on the CPU: an AVX-512 machine differed from the recording machine by up
# to 48 ulps (7e-15 relative). Every other value is compared bit for bit.
BIC_RELATIVE = 1e-13

# Not numbers of the measurement: they change from run to run or machine to machine.
_VOLATILE = {"wall_seconds"}
_VOLATILE_PROVENANCE = {"versions", "hostname", "node_id"}


def measure(arch: str) -> Profile:
    """The profile of the zoo ``arch`` at its recorded config, data and settings."""
    torch.manual_seed(0)
    model = build_model(CONFIGS[arch]).double().eval()
    gen = torch.Generator().manual_seed(1)
    if arch == "gpt":
        x = torch.randint(0, 96, (N_EXAMPLES, 6), generator=gen)
        y = torch.randint(0, 96, (N_EXAMPLES, 6), generator=gen)
    else:
        x = torch.rand(N_EXAMPLES, 1, 8, 8, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 10, (N_EXAMPLES,), generator=gen)
    loss = str(getattr(model, "default_loss", "cross_entropy"))
    return profile_model(model, x, y, loss=loss, variants=VARIANTS, seed=0)


def exact_tree(profile: Profile) -> dict[str, Any]:
    """``profile`` as JSON-safe data with every float as ``float.hex`` (NaN and Inf too),
    wall times and the run's volatile provenance left out."""
    data = profile.model_dump(mode="python")
    for key in _VOLATILE_PROVENANCE:
        data["provenance"].pop(key, None)
    return _exact(data)


def _exact(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _exact(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, (list, tuple)):
        return [_exact(v) for v in value]
    raise TypeError(f"unexpected {type(value).__name__} in a profile")


def golden_path(arch: str) -> Path:
    return GOLDEN_DIR / f"{arch}.json"


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Paths at which two exact trees differ (empty when they are identical)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(set(expected) | set(actual)):
            if key not in actual or key not in expected:
                out.append(f"{where}.{key}: only in {'recorded' if key in expected else 'new'}")
            else:
                out.extend(differences(expected[key], actual[key], f"{where}.{key}"))
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: length {len(expected)} != {len(actual)}"]
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in differences(e, a, f"{where}[{i}]")
        ]
    if expected == actual and type(expected) is type(actual):
        return []
    if ".bic." in where and _within(expected, actual, BIC_RELATIVE):
        return []
    return [f"{where}: {expected!r} != {actual!r}"]


def _within(expected: Any, actual: Any, relative: float) -> bool:
    try:
        e, a = float.fromhex(expected), float.fromhex(actual)
    except (TypeError, ValueError):
        return False
    return abs(e - a) <= relative * abs(e)


def record(archs: list[str]) -> None:
    torch.set_num_threads(1)
    GOLDEN_DIR.mkdir(exist_ok=True)
    for arch in archs:
        tree = exact_tree(measure(arch))
        golden_path(arch).write_text(
            json.dumps({"config": CONFIGS[arch], "profile": tree}, indent=1) + "\n"
        )
        print(f"recorded {golden_path(arch)}")


if __name__ == "__main__":
    record(sys.argv[1:] or list(ARCHS))
