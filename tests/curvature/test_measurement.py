"""The measurement batch: loss normalisers, micro-batches that add up to the full batch's
mean loss, the lm targets of a mask, the drawn indices and the modes restored afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workers.curvature.measurement import (
    IGNORE_INDEX,
    draw_indices,
    grad_only_for,
    make_batch,
    measurement_mode,
    output_tensor,
    own_loss_split_problem,
)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "lm"])
def test_micro_batch_losses_sum_to_the_full_batch_mean(loss: str) -> None:
    g = torch.Generator().manual_seed(0)
    out = torch.randn(7, 5, 4, generator=g, dtype=torch.float64)
    if loss == "cross_entropy":
        out, y = out[:, 0], torch.randint(0, 4, (7,), generator=g)
        reference = F.cross_entropy(out, y)
    elif loss == "mse":
        out, y = out[:, 0], torch.randn(7, 4, generator=g, dtype=torch.float64)
        reference = 0.5 * ((out - y) ** 2).sum() / 7
    else:
        y = torch.randint(0, 4, (7, 5), generator=g)
        mask = torch.ones(7, 5, dtype=torch.long)
        mask[2, 3:] = 0
        kept = y.masked_fill(mask == 0, IGNORE_INDEX)
        reference = F.cross_entropy(out.reshape(-1, 4), kept.reshape(-1), ignore_index=IGNORE_INDEX)
    batch = make_batch(
        out, y, loss, dtype=torch.float64, attention_mask=mask if loss == "lm" else None
    )
    assert batch.normaliser == (33.0 if loss == "lm" else 7.0)  # lm: the 35 − 2 target tokens
    parts = batch.split(3)
    assert [p.n_examples for p in parts] == [7, 7, 7] and [len(p.inputs) for p in parts] == [
        3,
        3,
        1,
    ]
    total = sum(p.loss_of_output(p.inputs) for p in parts)
    torch.testing.assert_close(total, reference, rtol=1e-13, atol=0.0)


def test_refusals_and_indices() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        make_batch(torch.ones(2, 3), torch.ones(2), "hinge", dtype=torch.float64)
    with pytest.raises(ValueError, match="integer class targets"):
        make_batch(torch.ones(2, 3), torch.ones(2), "cross_entropy", dtype=torch.float64)
    with pytest.raises(ValueError, match="no target tokens"):
        make_batch(
            torch.ones(1, 2, 3),
            torch.ones(1, 2, dtype=torch.long),
            "lm",
            dtype=torch.float64,
            attention_mask=torch.zeros(1, 2, dtype=torch.long),
        )
    assert (
        own_loss_split_problem("model", 4, 8) and own_loss_split_problem("model", None, 8) is None
    )
    assert own_loss_split_problem("lm", 4, 8) is None
    assert draw_indices(5, None, 0) == [0, 1, 2, 3, 4] == draw_indices(5, 9, 0)
    drawn = draw_indices(100, 10, 3)
    expected = sorted(int(i) for i in np.random.default_rng(3).choice(100, size=10, replace=False))
    assert drawn == expected


def test_output_tensor_and_modes_are_restored() -> None:
    t = torch.ones(2)
    assert output_tensor({"logits": t}) is t and output_tensor((t, 1)) is t
    with pytest.raises(TypeError, match="holds no tensor"):
        output_tensor(3)
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    precision = torch.get_float32_matmul_precision()
    with measurement_mode(model):
        assert not model.training and torch.get_float32_matmul_precision() == "highest"
    assert model.training and torch.get_float32_matmul_precision() == precision
    w, b = model[0].weight, model[0].bias
    with grad_only_for(model, [w]):
        assert w.requires_grad and not b.requires_grad
    assert b.requires_grad
