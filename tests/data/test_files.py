from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from workers.data import check_fits, load_builtin, load_data_file
from workers.intake.errors import IntakeError
from workers.zoo import build_model


def _arrays(n: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "inputs": rng.random((n, 1, 8, 8), dtype=np.float32),
        "targets": rng.integers(0, 10, n),
    }


def test_npz_and_safetensors_load(tmp_path: Path) -> None:
    arrays = _arrays()
    np.savez(tmp_path / "d.npz", inputs=arrays["inputs"], targets=arrays["targets"])
    ds = load_data_file(tmp_path / "d.npz")
    assert ds.inputs.shape == (5, 1, 8, 8) and ds.targets.dtype == torch.int64
    assert np.array_equal(ds.inputs.numpy(), arrays["inputs"]) and ds.attention_mask is None
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    tensors["attention_mask"] = torch.ones(5, 3, dtype=torch.bool)
    save_file(tensors, str(tmp_path / "d.safetensors"))
    st = load_data_file(tmp_path / "d.safetensors")
    assert torch.equal(st.inputs, ds.inputs) and st.attention_mask is not None
    assert st.attention_mask.dtype == torch.int64 and len(st.sha256 or "") == 64


def _bad_npz(tmp_path: Path, **arrays: object) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: _bad_npz(p, inputs=np.zeros((3, 2))), "lacks array 'targets'"),
        (lambda p: _bad_npz(p, **_arrays(), extra=np.zeros(5)), "unexpected array 'extra'"),
        (lambda p: _bad_npz(p, **_arrays(), labels=np.zeros(5)), "'targets' under two names"),
        (
            lambda p: _bad_npz(
                p, inputs=np.array([{"a": 1}] * 5, dtype=object), targets=np.zeros(5)
            ),
            "pickled/object arrays",
        ),
        (
            lambda p: _bad_npz(p, inputs=np.array([0.0, np.nan]), targets=np.zeros(2)),
            "array 'inputs' contains NaN or Inf",
        ),
        (
            lambda p: _bad_npz(p, inputs=np.zeros(2), targets=np.array([np.inf, 1.0])),
            "array 'targets' contains NaN or Inf",
        ),
        (
            lambda p: _bad_npz(p, inputs=np.zeros((3, 2)), targets=np.zeros(4)),
            "targets has 4 examples but inputs has 3",
        ),
        (lambda p: _bad_npz(p, inputs=np.array(["a", "b"]), targets=np.zeros(2)), "dtype <U1"),
        (lambda p: _bad_npz(p, inputs=np.zeros((0, 2)), targets=np.zeros(0)), "no examples"),
        (lambda p: _write(p / "r.npz", os.urandom(300)), "not a valid .npz file"),
        (lambda p: _write(p / "r.safetensors", os.urandom(300)), "not a valid safetensors file"),
        (lambda p: _truncated_safetensors(p), "not a valid safetensors file"),
        (lambda p: _write(p / "d.csv", b"1,2\n"), "unsupported data file type '.csv'"),
        (lambda p: p / "missing.npz", "data file not found"),
    ],
)
def test_bad_data_files_fail_cleanly(tmp_path: Path, make, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntakeError) as info:
        load_data_file(make(tmp_path))
    assert needle in str(info.value) and "\n" not in str(info.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated_safetensors(tmp_path: Path) -> Path:
    path = tmp_path / "t.safetensors"
    save_file({k: torch.from_numpy(v) for k, v in _arrays(50).items()}, str(path))
    return _write(path, path.read_bytes()[:-100])


def test_check_fits() -> None:
    digits = load_builtin("digits", split="test")
    vgg = build_model({"arch": "vgg", "features": [4, "M"], "hidden": [8]})
    check_fits(vgg, digits, "cross_entropy")
    check_fits(build_model({"arch": "mlp"}), load_builtin("digits", flatten=True), "cross_entropy")
    with pytest.raises(
        IntakeError, match=r"data shape \(1437, 64\) \(float32\) does not fit model vgg"
    ):
        check_fits(vgg, load_builtin("digits", flatten=True), "cross_entropy")
    wide = build_model({"arch": "mlp", "classes": 5})
    with pytest.raises(IntakeError, match=r"class index out of range \[0, 5\)"):
        check_fits(wide, digits, "cross_entropy")
    with pytest.raises(IntakeError, match=r"targets .* for mse"):
        check_fits(wide, digits, "mse")
    with pytest.raises(IntakeError, match="unknown loss 'hinge'"):
        check_fits(wide, digits, "hinge")
    text = load_builtin("text", seq_len=8, max_chars=2000)
    gpt = build_model({"arch": "gpt", "dim": 8, "heads": 2, "depth": 1, "block_size": 8})
    check_fits(gpt, text, "lm")
    with pytest.raises(IntakeError, match="does not fit model gpt"):
        check_fits(gpt, digits, "lm")
    with pytest.raises(IntakeError, match="need targets of shape"):
        check_fits(gpt, text, "cross_entropy")
    reg = load_builtin("synthetic", task="regression", n=8, dim=4, classes=2)
    check_fits(
        build_model({"arch": "mlp", "in_features": 4, "classes": 2, "loss": "mse"}), reg, "mse"
    )
