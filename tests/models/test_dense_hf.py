"""σ_k and h_k of Hugging Face models against a dense float64 Hessian of their own loss.

The reference never touches curvprof's wrapper or losses: the loss is written here from the
model's logits (cross-entropy for sequence classification, half the squared error for a
one-label regression head, the next-token loss of a causal LM on the unshifted ids), the
gradient G and Hessian H of one weight matrix W come from ``torch.autograd.functional``, and
h_k = vec(u_k v_kᵀ)ᵀ H vec(u_k v_kᵀ) for the singular pairs of G.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from api_schemas import ProfileSettings
from tests.curvature.dense import dense_top_directions
from tests.models.archs import ARCHS
from workers.curvature import profile_model
from workers.execution.prepare import DataSource, ModelSource, prepare

pytest.importorskip("transformers")

CASES = {
    "bert": "bert.encoder.layer.0.intermediate.dense",  # cross-entropy over examples
    "distilbert": "distilbert.transformer.layer.0.ffn.lin1",  # one label: mse
    "gpt2": "transformer.h.0.mlp.c_fc",  # next-token lm, an HF Conv1D stored (in, out)
}
# Not Llama or T5: their RMSNorms compute in float32 whatever the model's dtype
# (``hidden_states.to(torch.float32)``), which caps any float64 comparison near 1e-7.
K = 4


def _reference_loss(hf: Any, name: str, batch: Any) -> Any:
    """The head's loss written here from the model's float64 logits, as a function of one
    weight. (transformers' own ``labels=`` losses cast the logits to float32, which would cap
    the comparison at float32 precision.)"""
    params = {n: p.detach() for n, p in hf.named_parameters()}
    kwargs: dict[str, Any] = {"input_ids": batch.inputs}
    if batch.attention_mask is not None:
        kwargs["attention_mask"] = batch.attention_mask
    labels = batch.targets

    def loss(weight: torch.Tensor) -> torch.Tensor:
        state = {**params, CASES[name] + ".weight": weight}
        logits = functional_call(hf, state, (), kwargs).logits
        if name == "bert":  # sequence classification: mean over examples
            return F.cross_entropy(logits, labels)
        if name == "distilbert":  # regression: mean over examples of half the squared error
            return 0.5 * ((logits - labels) ** 2).sum() / logits.shape[0]
        # position t predicts token t+1: the ids shifted (targets[:, -1] is -100, archs.py)
        pred, gold = logits[:, :-1], batch.inputs[:, 1:]
        return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), gold.reshape(-1))

    return loss


@pytest.mark.parametrize("name", sorted(CASES))
def test_sigma_and_h_match_a_dense_hessian(tmp_path: Path, name: str) -> None:
    arch = next(a for a in ARCHS if a.name == name)
    checkpoint, data = arch.build(tmp_path), arch.data(tmp_path)
    settings = ProfileSettings(top_k=K, lanczos_steps=0, seed=0, layers=f"model.{CASES[name]}")
    prepared = prepare(settings, ModelSource(path=str(checkpoint)), DataSource(str(data)))
    assert prepared.settings.loss == arch.loss
    batch = prepared.batch
    profile = profile_model(
        prepared.model,
        batch.inputs,
        batch.targets,
        loss=prepared.settings.loss,
        top_k=K,
        lanczos_steps=0,
        layers=settings.layers,
        attention_mask=batch.attention_mask,
    )
    (layer,) = profile.layers

    hf = prepared.model.model.double()  # type: ignore[union-attr]
    hf.eval()
    loss = _reference_loss(hf, name, batch)
    weight = dict(hf.named_parameters())[CASES[name] + ".weight"].detach().clone()
    S, h = dense_top_directions(loss, weight, layer.k)
    # relative 1e-8: BERT's initialiser (std 0.02) makes its curvature small in absolute terms
    np.testing.assert_allclose(layer.sigma, S[: layer.k].numpy(), rtol=1e-8, atol=1e-15)
    np.testing.assert_allclose(layer.h, h, rtol=1e-8, atol=1e-15)
    assert max(abs(a - b) for a, b in zip(layer.h, h, strict=True)) < 1e-8
    assert layer.k == K and min(abs(v) for v in h) > 0
