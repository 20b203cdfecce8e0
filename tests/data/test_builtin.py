from __future__ import annotations

import pytest
import torch

from workers.data import TEXT_VOCAB, load_builtin, measurement_batch
from workers.intake.errors import IntakeError


def test_digits_shapes_range_and_deterministic_split() -> None:
    train = load_builtin("digits", seed=0)
    test = load_builtin("digits", seed=0, split="test")
    assert train.inputs.shape == (1437, 1, 8, 8) and train.inputs.dtype == torch.float32
    assert len(test) == 360 and train.targets.dtype == torch.int64
    assert float(train.inputs.min()) >= 0.0 and float(train.inputs.max()) == 1.0
    assert set(train.targets.tolist()) == set(range(10))
    again = load_builtin("digits", seed=0)
    assert torch.equal(again.inputs, train.inputs) and torch.equal(again.targets, train.targets)
    other = load_builtin("digits", seed=1)
    assert not torch.equal(other.targets, train.targets)
    flat = load_builtin("digits", seed=0, flatten=True)
    assert flat.inputs.shape == (1437, 64)
    assert torch.equal(flat.inputs, train.inputs.reshape(-1, 64))
    assert train.sha256 and train.meta["classes"] == 10


def test_text_windows_and_next_char_targets() -> None:
    ds = load_builtin("text", seq_len=32, max_chars=20_000)
    assert ds.inputs.shape[1] == 32 and ds.inputs.dtype == torch.int64
    assert torch.equal(ds.inputs[:, 1:], ds.targets[:, :-1])
    assert torch.equal(ds.inputs[1:, 0], ds.targets[:-1, -1])  # windows are contiguous
    assert int(ds.inputs.max()) < len(TEXT_VOCAB) == 96 and int(ds.inputs.min()) >= 0
    assert ds.meta["files"][0] == "argparse.py" and ds.meta["chars"] == 20_000
    text = "".join(TEXT_VOCAB[i] for i in ds.inputs[0].tolist())
    assert text.isascii()
    test = load_builtin("text", seq_len=32, max_chars=20_000, split="test")
    assert len(test) == (20_000 - 1) // 32 - len(ds)
    assert load_builtin("text", seq_len=32, max_chars=20_000).sha256 == ds.sha256


def test_synthetic_teacher_student() -> None:
    cls = load_builtin("synthetic", n=100, dim=5, classes=3, seed=4)
    assert cls.inputs.shape == (100, 5) and cls.targets.shape == (100,)
    assert int(cls.targets.max()) < 3
    reg = load_builtin("synthetic", task="regression", n=100, dim=5, classes=2, split="test")
    assert reg.targets.shape == (25, 2) and reg.targets.dtype == torch.float32
    again = load_builtin("synthetic", n=100, dim=5, classes=3, seed=4)
    assert torch.equal(again.inputs, cls.inputs)


@pytest.mark.parametrize(
    ("name", "kw", "needle"),
    [
        ("imagenet", {}, "unknown built-in data set 'imagenet'"),
        ("digits", {"split": "val"}, "unknown split 'val'"),
        ("digits", {"colour": True}, "bad option for data set 'digits'"),
        ("synthetic", {"task": "ranking"}, "task must be classification or regression"),
    ],
)
def test_builtin_errors(name: str, kw: dict, needle: str) -> None:
    with pytest.raises(IntakeError, match=needle):
        load_builtin(name, **kw)


def test_measurement_batch_is_deterministic_and_records_indices() -> None:
    ds = load_builtin("digits")
    batch, idx = measurement_batch(ds, batch_size=100, seed=3)
    again, idx2 = measurement_batch(ds, batch_size=100, seed=3)
    assert idx == idx2 == sorted(idx) and len(set(idx)) == 100
    assert torch.equal(batch.inputs, ds.inputs[idx]) and torch.equal(again.targets, batch.targets)
    assert batch.meta["batch_indices"] == idx and batch.meta["batch_seed"] == 3
    import numpy as np

    assert idx == sorted(np.random.default_rng(3).choice(len(ds), 100, replace=False).tolist())
    assert measurement_batch(ds, batch_size=100, seed=4)[1] != idx
    full, all_idx = measurement_batch(ds)  # B = min(2048, N)
    assert len(full) == len(ds) and all_idx == list(range(len(ds)))
    assert "batch_indices" not in ds.meta
