"""A fresh venv with only the base package (no extras), installed by pip from a copy of this
tree, profiles a tiny model in-process through the public Python API; the numbers match a
dense float64 Hessian computed here. torch comes from this interpreter as links to just
torch and its own dependencies (a ``.pth``); pip installs every other base dependency itself.
Deselect with ``-m 'not install'``; skipped where pip cannot reach a package index."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from service.cli import CLI_EXTRA_MISSING
from tests.packaging.test_base_install import EXTRAS_ONLY

pytestmark = pytest.mark.install
ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "api_schemas", "workers", "service")
# what the base install must not bring: the extras' packages, and the command line's
NOT_IN_BASE = (*EXTRAS_ONLY, "typer", "rich", "click")
UNREACHABLE = re.compile(
    r"No matching distribution|Could not find a version|NewConnectionError|"
    r"Temporary failure in name resolution|Network is unreachable|ConnectTimeout"
)
# building with the setuptools torch brings, and no byte-compiling, halve the time
PIP_INSTALL = ("install", "-q", "--no-compile", "--no-build-isolation")
TOP_K = 3
PROFILE = """
import json, sys
import torch
from safetensors.torch import load_file
from torch import nn

import workers
from workers.curvature import profile_model

tensors = load_file(sys.argv[1])
model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("data.")})
profile = profile_model(
    model, tensors["data.x"], tensors["data.y"], top_k=int(sys.argv[2]), lanczos_steps=20
)
print(json.dumps({
    "package": workers.__file__,
    "layers": {l.name: {"sigma": l.sigma, "h": l.h, "eig": l.eigenvalues} for l in profile.layers},
}))
"""


def torch_links(target: Path) -> None:
    """Links to the files of torch and of every distribution it needs, nothing else."""
    todo, seen = ["torch"], set()
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop())[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional or platform-specific requirement
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
        site = Path(str(dist.locate_file("")))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            if top != ".." and (site / top).exists() and not (target / top).exists():
                (target / top).symlink_to(site / top)


def dense_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, parameter: str) -> tuple:
    """σ_k, h_k = ⟨u_k v_kᵀ, H[u_k v_kᵀ]⟩ and the Hessian's eigenvalues of one weight matrix
    under the mean cross-entropy, from the dense float64 Hessian."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    weight = params[parameter]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        given = {**params, parameter: flat.reshape(weight.shape)}
        out = torch.func.functional_call(model, given, (x,))
        return nn.functional.cross_entropy(out, y)

    flat = weight.reshape(-1).clone()
    hessian = torch.autograd.functional.hessian(loss_of, flat)
    u, sigma, vh = torch.linalg.svd(torch.func.grad(loss_of)(flat).reshape(weight.shape))
    directions = [torch.outer(u[:, i], vh[i]).reshape(-1) for i in range(TOP_K)]
    h = [float(d @ hessian @ d) for d in directions]
    return sigma[:TOP_K].numpy(), np.array(h), torch.linalg.eigvalsh(hessian).numpy()


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload, no-any-return]


def test_base_install_in_a_fresh_venv_profiles_in_process(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(ROOT / name, source / name)
    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    links = tmp_path / "torch-only"
    links.mkdir()
    torch_links(links)
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    (Path(site.stdout.strip()) / "torch-only.pth").write_text(f"{links}\n")
    installed = run(
        [sys.executable, "-m", "pip", "--python", str(python), *PIP_INSTALL, str(source)],
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if installed.returncode != 0 and UNREACHABLE.search(installed.stderr):
        pytest.skip(f"pip cannot reach a package index: {installed.stderr.strip()[-300:]}")
    assert installed.returncode == 0, installed.stderr[-3000:]
    present = run(
        [
            str(python),
            "-c",
            "import importlib.util, sys; "
            "print(','.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))",
            *NOT_IN_BASE,
        ]
    )
    assert present.returncode == 0 and present.stdout.strip() == "", present
    # the command line is the [cli] extra's: without it, one line that names the extra
    command = run([str(venv / "bin" / "curvprof"), "--version"], cwd=tmp_path)
    assert command.returncode == 2 and command.stdout == ""
    assert command.stderr == f"curvprof: error: {CLI_EXTRA_MISSING}\n"

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(32, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (32,))
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file({**tensors, "data.x": x, "data.y": y}, str(tmp_path / "case.safetensors"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    profiled = run(
        [str(python), "-c", PROFILE, str(tmp_path / "case.safetensors"), str(TOP_K)],
        cwd=tmp_path,
        env=env,
    )
    assert profiled.returncode == 0, profiled.stderr[-3000:]
    report = json.loads(profiled.stdout.strip().splitlines()[-1])
    assert report["package"].startswith(str(venv))  # the installed copy, not this tree
    assert set(report["layers"]) == {"0", "2"}
    for name, layer in report["layers"].items():
        sigma, h, eigenvalues = dense_reference(model, x, y, f"{name}.weight")
        k = len(layer["sigma"])  # the head's gradient has rank classes - 1 = 2
        assert k == (2 if name == "2" else TOP_K)
        np.testing.assert_allclose(layer["sigma"], sigma[:k], rtol=1e-10)
        np.testing.assert_allclose(layer["h"], h[:k], rtol=1e-8, atol=1e-12 * np.abs(h).max())
        np.testing.assert_allclose(max(layer["eig"]), eigenvalues.max(), rtol=1e-8)
