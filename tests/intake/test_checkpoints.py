from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.zoo.conftest import TINY, example_batch
from workers.intake.checkpoints import load_checkpoint, save_checkpoint, sha256_file
from workers.intake.errors import IntakeError
from workers.zoo import build_model


def _saved(tmp_path: Path, name: str = "vit") -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = build_model(TINY[name]).eval()
    return model, save_checkpoint(model, tmp_path / name)


@pytest.mark.parametrize("name", list(TINY))
def test_round_trip_every_arch(tmp_path: Path, name: str) -> None:
    model, directory = _saved(tmp_path, name)
    loaded = load_checkpoint(directory)
    assert loaded.format == "zoo" and loaded.arch == TINY[name]["arch"]
    assert loaded.config == model.curvprof_config
    assert loaded.sha256 == sha256_file(directory / "model.safetensors")
    assert not loaded.model.training and loaded.default_loss == model.default_loss
    assert loaded.model.curvprof_kinds == model.curvprof_kinds
    x, _ = example_batch(TINY[name]["arch"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)


def test_tied_weights_stored_once_and_stay_tied(tmp_path: Path) -> None:
    _, directory = _saved(tmp_path, "gpt_tied_fused")
    stored = load_file(str(directory / "model.safetensors"))
    assert "tok_emb.weight" in stored and "lm_head.weight" not in stored
    model: Any = load_checkpoint(directory).model
    assert model.lm_head.weight is model.tok_emb.weight


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"curvprof")
    assert sha256_file(path) == hashlib.sha256(b"curvprof").hexdigest()


def test_config_json_with_safetensors_or_pt_weights(tmp_path: Path) -> None:
    model, directory = _saved(tmp_path, "vgg")
    config = directory / "config.json"
    via_json = load_checkpoint(config, weights=directory / "model.safetensors")
    assert via_json.format == "zoo"
    torch.save(model.state_dict(), tmp_path / "w.pt")
    via_pt = load_checkpoint(config, weights=tmp_path / "w.pt")
    assert via_pt.format == "pt" and via_pt.sha256 == sha256_file(tmp_path / "w.pt")
    x, _ = example_batch("vgg")
    with torch.no_grad():
        torch.testing.assert_close(via_pt.model(x), model(x))
    loaded = load_checkpoint(tmp_path / "vgg", weights=tmp_path / "w.pt")  # dir + override
    assert loaded.format == "pt"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, legacy: bool) -> None:
    model, directory = _saved(tmp_path, "mlp")
    marker = tmp_path / "pwned"
    evil = {**model.state_dict(), "extra": _Payload(marker)}
    path = tmp_path / "evil.pt"
    if legacy:
        path.write_bytes(pickle.dumps(evil))
    else:
        torch.save(evil, path)
    with pytest.raises(IntakeError, match=r"refused evil.pt: not loadable with weights_only=True"):
        load_checkpoint(directory / "config.json", weights=path)
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    if legacy:
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


def test_pt_that_is_not_a_plain_state_dict(tmp_path: Path) -> None:
    model, directory = _saved(tmp_path, "mlp")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    with pytest.raises(IntakeError, match=r"ckpt.pt is not a plain state dict"):
        load_checkpoint(directory / "config.json", weights=tmp_path / "ckpt.pt")


def _edit_weights(directory: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-64])


def _set_config(directory: Path, **changes: object) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    ("corrupt", "needle"),
    [
        (
            lambda d: (d / "model.safetensors").write_bytes(os.urandom(500)),
            "not a valid safetensors file: model.safetensors",
        ),
        (
            lambda d: _truncate(d / "model.safetensors"),
            "not a valid safetensors file: model.safetensors",
        ),
        (lambda d: _set_config(d, arch="lstm"), "unknown arch 'lstm'"),
        (lambda d: _set_config(d, dropout=0.1), "unknown config key 'dropout'"),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json is not valid JSON"),
        (lambda d: (d / "config.json").write_text(json.dumps({"foo": 1})), "has no 'arch'"),
        (lambda d: _edit_weights(d, lambda t: t.pop("head.bias")), "missing key 'head.bias'"),
        (
            lambda d: _edit_weights(d, lambda t: t.update(extra=torch.zeros(1))),
            "unexpected key 'extra'",
        ),
        (
            lambda d: _set_config(d, widths=[8, 7]),
            "shape mismatch for 'layers.1.weight': file (6, 8) vs model (7, 8)",
        ),
        (
            lambda d: _edit_weights(d, lambda t: t["layers.0.weight"][0].fill_(float("nan"))),
            "tensor 'layers.0.weight' in model.safetensors contains NaN or Inf",
        ),
        (
            lambda d: _edit_weights(d, lambda t: t["head.bias"].fill_(float("inf"))),
            "tensor 'head.bias' in model.safetensors contains NaN or Inf",
        ),
        (lambda d: (d / "model.safetensors").unlink(), "weights file not found"),
        (lambda d: (d / "config.json").unlink(), "no config.json in"),
    ],
)
def test_bad_checkpoints_give_one_line_errors(tmp_path: Path, corrupt, needle: str) -> None:  # type: ignore[no-untyped-def]
    _, directory = _saved(tmp_path, "mlp")
    corrupt(directory)
    with pytest.raises(IntakeError) as info:
        load_checkpoint(directory)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_nan_in_pt_weights_and_misc_paths(tmp_path: Path) -> None:
    model, directory = _saved(tmp_path, "mlp")
    state = model.state_dict()
    state["head.weight"] = state["head.weight"].clone().fill_(float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(IntakeError, match=r"'head.weight' in nan.pt contains NaN"):
        load_checkpoint(directory / "config.json", weights=tmp_path / "nan.pt")
    with pytest.raises(IntakeError, match="needs weights=FILE"):
        load_checkpoint(directory / "config.json")
    with pytest.raises(IntakeError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(IntakeError, match=r"unsupported checkpoint model.safetensors"):
        load_checkpoint(directory / "model.safetensors")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(IntakeError, match=r"unsupported weights file type '.onnx'"):
        load_checkpoint(directory / "config.json", weights=tmp_path / "w.onnx")


class _TestOnlyNet(torch.nn.Module):
    """Defined only here, so loading it proves nothing from the zoo is needed."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 6)
        self.fc2 = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def test_pt2_needs_opt_in(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _TestOnlyNet().eval()
    x = torch.randn(5, 4)
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (x,)), str(path))
    with pytest.raises(IntakeError, match=r"net.pt2: .pt2 programs .* need the operator opt-in"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, allow_pickle=True)
    assert loaded.format == "pt2" and loaded.arch == "pt2" and loaded.sha256 == sha256_file(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), net(x))
    weight = dict(loaded.model.named_parameters())["fc1.weight"]
    (g,) = torch.autograd.grad(loaded.model(x).pow(2).mean(), weight, create_graph=True)
    (hv,) = torch.autograd.grad(g, weight, grad_outputs=torch.ones_like(weight))
    assert hv.abs().sum() > 0  # the exported program supports double backward
    path.write_bytes(os.urandom(200))
    with pytest.raises(IntakeError, match=r"not a valid .pt2 archive"):
        load_checkpoint(path, allow_pickle=True)


def test_hf_directory_without_transformers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    directory = tmp_path / "hf"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(IntakeError, match=r"has no model.safetensors"):
        load_checkpoint(directory)
    save_file({"w": torch.zeros(2)}, str(directory / "model.safetensors"))
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(IntakeError, match=r"install curvprof\[hf\]"):
        load_checkpoint(directory)
