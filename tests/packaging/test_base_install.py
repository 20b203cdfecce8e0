"""The in-process maths with the base install only: a subprocess whose import hook refuses
every package of the optional extras profiles a tiny model, from Python and through the
``curvprof profile`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the packages of the [server], [hf], [pandas], [mlflow] and [bench] extras
EXTRAS_ONLY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "multipart",
    "python_multipart",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "ray",
    "sklearn",
    "prometheus_client",
    "transformers",
    "pandas",
    "mlflow",
    "pyhessian",
    "curvlinops",
)

SCRIPT = """
import importlib.abc, sys

BLOCKED = set(sys.argv[1].split(","))

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
import json, torch
from torch import nn
from workers.curvature import profile_model

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 10))
x, y = torch.randn(64, 10), torch.randint(0, 10, (64,))
profile = profile_model(model, x, y, top_k=9, lanczos_steps=3)
from service.cli import main
code = main(sys.argv[2:])
leaked = sorted(m for m in BLOCKED if m in sys.modules)
print(json.dumps({"alphas": [l.alpha for l in profile.layers], "code": code, "leaked": leaked}))
"""


def test_in_process_maths_needs_no_server_packages(tmp_path: Path) -> None:
    from workers.zoo import build_model

    config = {"arch": "mlp", "in_features": 10, "widths": [16], "classes": 10}
    (tmp_path / "config.json").write_text(json.dumps(config))
    from workers.intake.checkpoints import save_checkpoint

    save_checkpoint(build_model(config), tmp_path / "ckpt")
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", inputs=rng.normal(size=(64, 10)), targets=rng.integers(0, 10, 64))
    out = tmp_path / "p.json"
    argv = [
        "profile", str(tmp_path / "ckpt"), "--data", str(tmp_path / "d.npz"), "--top-k", "9",
        "--lanczos", "3", "--out", str(out), "--quiet",
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), ",".join(EXTRAS_ONLY), *argv],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0 and report["leaked"] == []
    assert any(alpha is not None for alpha in report["alphas"])
    assert json.loads(out.read_text())["layers"]
