"""``curvprof train`` and ``curvprof profile`` on one machine: formats, outputs, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from api_schemas import Profile
from service.cli import main

FAST = ["--top-k", "8", "--lanczos", "4", "--batch-size", "256", "--quiet"]


@pytest.fixture(scope="module")
def trained_vgg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "vgg"
    assert main(["train", "vgg", "--epochs", "2", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.8
    return out


def test_trained_cnn_profiles_with_finite_alpha(
    trained_vgg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "profile.json"
    plots = tmp_path / "plots"
    code = main(
        [
            "profile",
            str(trained_vgg),
            "--data",
            "digits",
            "--out",
            str(out),
            "--plots",
            str(plots),
            *FAST,
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "alpha" in printed and "features.0" in printed
    profile = Profile.model_validate_json(out.read_text())
    convs = [layer for layer in profile.layers if layer.kind == "conv"]
    assert len(convs) == 4
    assert all(layer.alpha is not None and np.isfinite(layer.alpha) for layer in convs)
    assert len(profile.provenance.data_indices) == 256
    assert profile.provenance.checkpoint_sha256 and profile.settings.top_k == 8
    assert {p.name for p in plots.iterdir()} >= {"identity.png", "features.0.png"}
    assert (plots / "identity.png").read_bytes()[:4] == b"\x89PNG"


def test_h_only_profile_matches_the_full_h(trained_vgg: Path, tmp_path: Path) -> None:
    runs = {}
    for name, extra in (("full", []), ("h_only", ["--h-only"])):
        out = tmp_path / f"{name}.json"
        args = ["profile", str(trained_vgg), "--data", "digits", "--out", str(out), *FAST]
        assert main([*args, "--lanczos", "0", *extra]) == 0
        runs[name] = Profile.model_validate_json(out.read_text())
    assert runs["h_only"].settings.hvp_diagnostics is False
    for full, fast in zip(runs["full"].layers, runs["h_only"].layers, strict=True):
        np.testing.assert_allclose(fast.h, full.h, rtol=1e-9, atol=1e-14)
        # h alone skips the stored K x K matrix and residuals on every route but the
        # weight-space one; every route still estimates the noise floor
        skipped = fast.route != "weight_double_backward"
        assert (not fast.compressed and not fast.residuals) == skipped
        assert fast.hvp_noise is not None and full.hvp_noise is not None


def test_config_with_pt_weights_matches_safetensors(trained_vgg: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(trained_vgg / "model.safetensors"))
    torch.save(state, tmp_path / "weights.pt")
    outs = []
    for weights in (trained_vgg / "model.safetensors", tmp_path / "weights.pt"):
        out = tmp_path / f"{weights.suffix}.json"
        args = [
            "profile",
            str(trained_vgg / "config.json"),
            "--weights",
            str(weights),
            "--data",
            "digits",
            "--layers",
            "features.3",
            "--out",
            str(out),
            *FAST,
        ]
        assert main(args) == 0
        outs.append(Profile.model_validate_json(out.read_text()).layers[0])
    assert outs[0].h == outs[1].h and outs[0].sigma == outs[1].sigma


class ExportedOnlyNet(nn.Module):
    """A model the zoo does not know, exported as a torch.export program."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.hidden = nn.Linear(4 * 6 * 6, 16)
        self.out = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(torch.relu(self.conv(x)).flatten(1))))


def test_pt2_program_profiles_with_the_right_layers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ExportedOnlyNet().eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        model, (torch.randn(2, 1, 8, 8),), dynamic_shapes={"x": {0: batch}}
    )
    torch.export.save(program, tmp_path / "net.pt2")
    out = tmp_path / "p.json"
    assert (
        main(["profile", str(tmp_path / "net.pt2"), "--data", "digits", "--out", str(out), *FAST])
        == 0
    )
    layers = Profile.model_validate_json(out.read_text()).layers
    assert [(layer.name, layer.kind) for layer in layers] == [
        ("conv", "conv"),
        ("hidden", "linear"),
        ("out", "head"),
    ]


def _bad(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    out = tmp_path / "never.json"
    code = main([*args, "--out", str(out), *FAST])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert not out.exists()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_bad_inputs_give_one_line_errors(
    trained_vgg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    config = trained_vgg / "config.json"
    assert "safetensors" in _bad(
        tmp_path, capsys, ["profile", str(config), "--weights", str(junk), "--data", "digits"]
    )
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes((trained_vgg / "model.safetensors").read_bytes()[:5000])
    assert _bad(
        tmp_path, capsys, ["profile", str(config), "--weights", str(truncated), "--data", "digits"]
    )
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"arch": "transformer-xl"}))
    assert "arch" in _bad(
        tmp_path,
        capsys,
        [
            "profile",
            str(unknown),
            "--weights",
            str(trained_vgg / "model.safetensors"),
            "--data",
            "digits",
        ],
    )
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"arch": "mlp"}))
    assert _bad(
        tmp_path,
        capsys,
        [
            "profile",
            str(wrong),
            "--weights",
            str(trained_vgg / "model.safetensors"),
            "--data",
            "digits",
        ],
    )
    from safetensors.torch import load_file

    state = load_file(str(trained_vgg / "model.safetensors"))
    state["features.0.weight"][0, 0, 0, 0] = float("nan")
    nan_dir = tmp_path / "nan"
    nan_dir.mkdir()
    save_file(state, str(nan_dir / "model.safetensors"))
    (nan_dir / "config.json").write_text(config.read_text())
    assert "nan" in _bad(tmp_path, capsys, ["profile", str(nan_dir), "--data", "digits"]).lower()
    bad_shape = tmp_path / "shape.npz"
    np.savez(bad_shape, inputs=np.zeros((20, 3, 5, 5), np.float32), targets=np.zeros(20, np.int64))
    assert "shape" in _bad(
        tmp_path, capsys, ["profile", str(trained_vgg), "--data", str(bad_shape)]
    )
    nan_data = tmp_path / "nan.npz"
    x = np.zeros((20, 1, 8, 8), np.float32)
    x[3, 0, 0, 0] = np.inf
    np.savez(nan_data, inputs=x, targets=np.zeros(20, np.int64))
    assert (
        "inf"
        in _bad(tmp_path, capsys, ["profile", str(trained_vgg), "--data", str(nan_data)]).lower()
    )
    assert _bad(
        tmp_path, capsys, ["profile", str(trained_vgg), "--data", "digits", "--layers", "nothing*"]
    )


def test_command_line_exit_status_and_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "profile",
            str(tmp_path / "missing"),
            "--data",
            "digits",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("curvprof: error:") and "Traceback" not in done.stderr


def test_hugging_face_gpt2_directory_profiles(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=30, n_positions=16)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "hf", safe_serialization=True)
    tokens = np.random.default_rng(0).integers(0, 30, size=(40, 9))
    np.savez(tmp_path / "tokens.npz", inputs=tokens[:, :-1], targets=tokens[:, 1:])
    out = tmp_path / "p.json"
    args = [
        "profile",
        str(tmp_path / "hf"),
        "--data",
        str(tmp_path / "tokens.npz"),
        "--out",
        str(out),
    ]
    assert main([*args, *FAST]) == 0
    profile = Profile.model_validate_json(out.read_text())
    assert profile.settings.loss == "lm"
    assert {layer.kind for layer in profile.layers} >= {
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_qkv",
        "attn_o",
        "mlp_up",
        "mlp_down",
    }
    assert all(layer.k > 0 for layer in profile.layers)
