from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from workers.intake.hf import hf_kinds, hf_transposed


class Conv1D(nn.Module):
    """Same name and storage as transformers' GPT-2 Conv1D: weight is (in, out)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.zeros(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))


def _tree(spec: dict[str, nn.Module]) -> nn.Module:
    root = nn.Module()
    for path, module in spec.items():
        parent = root
        for part in path.split(".")[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(path.split(".")[-1], module)
    return root


def test_bert_names() -> None:
    layer = "bert.encoder.layer.0"
    model = _tree(
        {
            "bert.embeddings.word_embeddings": nn.Embedding(10, 4),
            f"{layer}.attention.self.query": nn.Linear(4, 4),
            f"{layer}.attention.self.key": nn.Linear(4, 4),
            f"{layer}.attention.self.value": nn.Linear(4, 4),
            f"{layer}.attention.output.dense": nn.Linear(4, 4),
            f"{layer}.attention.output.LayerNorm": nn.LayerNorm(4),
            f"{layer}.intermediate.dense": nn.Linear(4, 8),
            f"{layer}.output.dense": nn.Linear(8, 4),
            "bert.pooler.dense": nn.Linear(4, 4),
            "classifier": nn.Linear(4, 2),
        }
    )
    assert hf_kinds(model) == {
        f"{layer}.attention.self.query.weight": "attn_q",
        f"{layer}.attention.self.key.weight": "attn_k",
        f"{layer}.attention.self.value.weight": "attn_v",
        f"{layer}.attention.output.dense.weight": "attn_o",
        f"{layer}.intermediate.dense.weight": "mlp_up",
        f"{layer}.output.dense.weight": "mlp_down",
        "bert.pooler.dense.weight": "linear",
        "classifier.weight": "head",
    }
    assert hf_transposed(model) == []


def test_gpt2_names_and_conv1d_transposed() -> None:
    h = "transformer.h.0"
    model: Any = _tree(
        {
            "transformer.wte": nn.Embedding(10, 4),
            f"{h}.attn.c_attn": Conv1D(12, 4),
            f"{h}.attn.c_proj": Conv1D(4, 4),
            f"{h}.mlp.c_fc": Conv1D(16, 4),
            f"{h}.mlp.c_proj": Conv1D(4, 16),
            "lm_head": nn.Linear(4, 10, bias=False),
        }
    )
    model.lm_head.weight = model.transformer.wte.weight  # tied, as in GPT2LMHeadModel
    assert hf_kinds(model) == {
        f"{h}.attn.c_attn.weight": "attn_qkv",
        f"{h}.attn.c_proj.weight": "attn_o",
        f"{h}.mlp.c_fc.weight": "mlp_up",
        f"{h}.mlp.c_proj.weight": "mlp_down",
        "lm_head.weight": "head",
    }
    assert hf_transposed(model) == [
        f"{h}.attn.c_attn.weight",
        f"{h}.attn.c_proj.weight",
        f"{h}.mlp.c_fc.weight",
        f"{h}.mlp.c_proj.weight",
    ]


@pytest.mark.parametrize("arch", ["GPT2LMHeadModel", "BertForSequenceClassification"])
def test_real_transformers_models_load(tmp_path: Path, arch: str) -> None:
    transformers = pytest.importorskip("transformers")
    from workers.intake.checkpoints import load_checkpoint

    if arch.startswith("GPT2"):
        config = transformers.GPT2Config(
            n_layer=1, n_head=2, n_embd=8, vocab_size=50, n_positions=16
        )
    else:
        config = transformers.BertConfig(
            num_hidden_layers=1,
            num_attention_heads=2,
            hidden_size=8,
            intermediate_size=16,
            vocab_size=50,
            max_position_embeddings=16,
            num_labels=3,
        )
    torch.manual_seed(0)
    getattr(transformers, arch)(config).save_pretrained(tmp_path, safe_serialization=True)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [arch]
    loaded = load_checkpoint(tmp_path)
    assert loaded.format == "hf" and loaded.arch == arch
    model: Any = loaded.model.double()
    x = torch.randint(0, 50, (2, 5))
    out = model(x)
    if arch.startswith("GPT2"):
        assert model.default_loss == "lm" and out.shape == (2, 5, 50)
        assert model.curvprof_kinds["model.transformer.h.0.attn.c_attn.weight"] == "attn_qkv"
    else:
        assert model.default_loss == "cross_entropy" and out.shape == (2, 3)
        assert "model.bert.encoder.layer.0.attention.self.query.weight" in model.curvprof_kinds
    name = next(n for n, k in model.curvprof_kinds.items() if k.startswith("attn"))
    w = dict(model.named_parameters())[name]
    loss = out.double().pow(2).mean()
    (g,) = torch.autograd.grad(loss, w, create_graph=True)
    (hv,) = torch.autograd.grad(g, w, grad_outputs=torch.ones_like(w))
    assert torch.isfinite(hv).all()
