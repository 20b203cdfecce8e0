"""``torch.export`` programs run within the batch sizes their input constraints allow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from service.cli import main
from workers.curvature import profile_model
from workers.intake.checkpoints import load_checkpoint

FAST = {"top_k": 3, "lanczos_steps": 3}


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).eval()


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return torch.randn(n, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _export(tmp_path: Path, dims: object) -> Path:
    program = torch.export.export(_mlp(), (torch.randn(3, 4),), dynamic_shapes=dims)  # type: ignore[arg-type]
    torch.export.save(program, tmp_path / "m.pt2")
    return tmp_path / "m.pt2"


def test_bounded_dynamic_batch_runs_in_micro_batches_of_its_maximum(tmp_path: Path) -> None:
    path = _export(tmp_path, ({0: torch.export.Dim("batch", min=2, max=4)},))
    loaded = load_checkpoint(path, allow_pickle=True)
    assert loaded.config["static_batch"] is None
    x, y = _data(10)  # micro-batches of 4, 4 and 2: each within [2, 4]
    exported = profile_model(loaded.model, x, y, **FAST)
    eager = profile_model(_mlp(), x, y, **FAST)
    for a, b in zip(eager.layers, exported.layers, strict=True):
        np.testing.assert_allclose(b.sigma, a.sigma, rtol=1e-10)
        np.testing.assert_allclose(b.h, a.h, rtol=1e-9, atol=1e-14)


def test_a_remainder_below_the_minimum_is_refused_with_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _export(tmp_path, ({0: torch.export.Dim("batch", min=2, max=4)},))
    x, y = _data(9)  # 4, 4 and 1: the last is below 2
    np.savez(tmp_path / "d.npz", inputs=x.numpy(), targets=y.numpy())
    assert main(["profile", str(path), "--data", str(tmp_path / "d.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("curvprof: error:") and err.count("\n") == 1
    assert "batches of 2 to 4 examples" in err and "leaves one of 1" in err
