from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workers import train as train_module
from workers.intake.checkpoints import load_checkpoint
from workers.intake.errors import IntakeError
from workers.train import evaluate, train


def test_mlp_on_digits_exceeds_90_percent_and_writes_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "mlp"
    metrics = train("mlp", "digits", epochs=6, out_dir=out, progress=False)
    assert metrics["test_accuracy"] > 0.9, metrics
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["epochs"] == 6 and saved["seed"] == 0 and saved["wall_seconds"] > 0
    assert saved["test_accuracy"] == metrics["test_accuracy"] and saved["steps"] == 6 * 12
    loaded = load_checkpoint(out)
    from workers.data import load_builtin

    _, acc = evaluate(loaded.model, load_builtin("digits", split="test"))
    assert acc == metrics["test_accuracy"]
    assert [p.name for p in tmp_path.iterdir()] == ["mlp"]  # no temporary leftovers


def test_gpt_text_steps_are_capped(tmp_path: Path) -> None:
    metrics = train(
        "gpt",
        "text",
        epochs=1,
        out_dir=tmp_path / "gpt",
        progress=False,
        max_steps=2,
        dim=8,
        heads=2,
        depth=1,
        mlp_dim=16,
        block_size=16,
    )
    assert metrics["steps"] == 2 and metrics["batch_size"] == 32
    assert load_checkpoint(tmp_path / "gpt").config["block_size"] == 16


def test_failed_run_leaves_nothing_and_keeps_old_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("old")

    def broken(model: torch.nn.Module, directory: Path) -> Path:
        Path(directory).mkdir(parents=True)
        (Path(directory) / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(train_module, "save_checkpoint", broken)
    with pytest.raises(OSError, match="disk full"):
        train("mlp", "digits", epochs=1, out_dir=out, progress=False, max_steps=1, widths=[4])
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("rnn", "digits"), "unknown arch 'rnn'"),
        (("gpt", "digits"), "arch 'gpt' trains on text, not 'digits'"),
        (("vgg", "text"), "arch 'vgg' trains on digits, not 'text'"),
    ],
)
def test_train_rejects_bad_combinations(tmp_path: Path, args: tuple[str, str], needle: str) -> None:
    with pytest.raises(IntakeError, match=needle):
        train(*args, epochs=1, out_dir=tmp_path / "x", progress=False)
