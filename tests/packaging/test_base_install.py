"""The in-process maths and the local command line with the base install and the ``[cli]``
extra only: a subprocess that sees a copy of site-packages without the other extras'
packages (as such an install has them: absent, so ``importlib.util.find_spec`` says None)
profiles a tiny model, from Python and through the ``curvprof profile`` command. The base
install alone, in a real fresh venv: ``test_fresh_venv.py``."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the packages of the [data], [server], [hf], [pandas], [mlflow] and [bench] extras
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
import sys

BLOCKED = set(sys.argv[1].split(","))
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
    # site-packages without the extras: links to every entry but theirs; -S skips the real one
    base = tmp_path / "site-packages"
    base.mkdir()
    for packages in site.getsitepackages():
        for entry in Path(packages).iterdir():
            top = entry.name.split("-")[0].split(".")[0].lower()
            if top not in EXTRAS_ONLY and not (base / entry.name).exists():
                (base / entry.name).symlink_to(entry)
    result = subprocess.run(
        [sys.executable, "-S", "-c", textwrap.dedent(SCRIPT), ",".join(EXTRAS_ONLY), *argv],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(base)])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0 and report["leaked"] == []
    assert any(alpha is not None for alpha in report["alphas"])
    assert json.loads(out.read_text())["layers"]
