"""Layer kinds from the structure of the traced forward, not from names or registration order."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workers.curvature import profile_model
from workers.curvature.graph import example_forward
from workers.curvature.inventory import layer_inventory
from workers.zoo import build_model


class ConvThenFC(nn.Module):
    """A conv net ending in fc1/fc2: fc2 is the head and fc1 is no MLP expansion."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc1 = nn.Linear(8, 12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.tanh(self.conv(x)).flatten(1))))


class HeadFirst(nn.Module):
    """The output layer registered before the hidden one (and named neither head nor fc)."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(6, 3)
        self.hidden = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


class SequentialFFN(nn.Module):
    """A residual block whose FFN is an ``nn.Sequential`` (ffn.0, ffn.1, ffn.2)."""

    def __init__(self) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Linear(16, 4))
        self.norm = nn.LayerNorm(4)
        self.classifier = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(x + self.ffn(x)))


def _kinds(profile_layers: list) -> dict[str, str]:
    return {layer.name: layer.kind for layer in profile_layers}


def test_conv_net_fc2_is_the_head_and_fc1_is_not_mlp_up() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 4, 4), torch.randint(0, 3, (16,))
    profile = profile_model(ConvThenFC(), x, y, top_k=2, lanczos_steps=0, variants=())
    assert _kinds(profile.layers) == {"conv": "conv", "fc1": "linear", "fc2": "head"}


def test_a_head_registered_first_is_still_the_head() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    profile = profile_model(HeadFirst(), x, y, top_k=2, lanczos_steps=0, variants=())
    assert _kinds(profile.layers) == {"out": "head", "hidden": "linear"}


def test_a_sequential_ffn_is_mlp_up_then_mlp_down() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(8, 5, 4), torch.randint(0, 3, (8, 5))
    profile = profile_model(SequentialFFN(), x, y, loss="lm", top_k=2, lanczos_steps=0)
    assert _kinds(profile.layers) == {
        "ffn.0": "mlp_up",
        "ffn.2": "mlp_down",
        "classifier": "head",
    }


def test_spectral_newton_takes_the_structural_kinds() -> None:
    from workers.optim import SpectralNewton
    from workers.optim.defaults import default_alpha

    model = ConvThenFC()
    opt = SpectralNewton.for_model(model, example_inputs=torch.randn(2, 1, 4, 4))
    by = {a.parameter: a for a in opt.assignments}
    assert by["fc2.weight"].kind == "head" and by["fc2.weight"].optimizer == "adamw"
    assert by["fc1.weight"].kind == "linear" and by["fc1.weight"].optimizer == "sn"
    assert by["fc1.weight"].alpha == default_alpha("linear") != default_alpha("mlp_up")


ZOO_INPUTS = {
    "mlp": lambda: torch.randn(2, 64),
    "vgg": lambda: torch.randn(2, 1, 8, 8),
    "resnet": lambda: torch.randn(2, 1, 8, 8),
    "vit": lambda: torch.randn(2, 1, 8, 8),
    "gpt": lambda: torch.randint(0, 10, (2, 8)),
}


@pytest.mark.parametrize(
    ("arch", "extra"),
    [(a, {}) for a in ZOO_INPUTS] + [("gpt", {"fused_qkv": True, "tie_weights": True})],
)
def test_structure_agrees_with_the_zoo_kinds(arch: str, extra: dict) -> None:
    model = build_model({"arch": arch, **extra})
    declared = vars(model).pop("curvprof_kinds")
    names, _ = layer_inventory(model)
    model.curvprof_kinds = {}
    specs, _ = layer_inventory(model, example_forward(ZOO_INPUTS[arch]()))
    assert [s.name for s in specs] == [s.name for s in names]
    for spec in specs:
        if spec.rows is None:
            assert spec.kind == declared[f"{spec.module}.weight"], spec.name


def test_every_unanalysed_matrix_is_listed() -> None:
    model = build_model({"arch": "vit"})
    _, skipped = layer_inventory(model, example_forward(torch.randn(1, 1, 8, 8)))
    assert skipped == {
        "cls_token": "used by cat, not as a matrix on the data",
        "pos_embed": "used by add, not as a matrix on the data",
    }
    gpt = build_model({"arch": "gpt", "tie_weights": True})
    specs, skipped = layer_inventory(gpt, example_forward(torch.randint(0, 10, (1, 8))))
    assert set(skipped) == {"pos_emb"} and "embedding lookup" in skipped["pos_emb"]
    head = next(s for s in specs if s.name == "lm_head")
    assert head.parameter == "tok_emb.weight" and "tied_embedding" in head.flags
    assert head.uses == 2 and not head.softmax_rank_bound


class FunctionalUses(nn.Module):
    """One weight called as a module and again functionally; a table used for lookups only."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(5, 4)
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 5)
        self.unused = nn.Linear(4, 4)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.lin(self.table(idx)))
        return self.head(torch.tanh(F.linear(h, self.lin.weight)))


def test_use_counts_cover_functional_uses() -> None:
    model = FunctionalUses()
    specs, skipped = layer_inventory(model, example_forward(torch.randint(0, 5, (1, 3))))
    by = {s.name: s for s in specs}
    assert by["lin"].uses == 2 and "shared" in by["lin"].flags  # the module call and F.linear
    assert "kfac_unavailable" in by["lin"].flags  # hooks see the module call only
    assert by["head"].uses == 1 and by["head"].softmax_rank_bound
    assert skipped["unused"] == "not used by the forward (zero gradient)"
    assert "embedding lookup" in skipped["table"]


def _hf(name: str):  # type: ignore[no-untyped-def]
    transformers = pytest.importorskip("transformers")
    small = {"vocab_size": 32, "max_position_embeddings": 16}
    if name == "gpt_neox":
        config = transformers.GPTNeoXConfig(
            hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, **small
        )
        model = transformers.GPTNeoXForCausalLM(config)
    elif name == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=32, n_embd=8, n_layer=1, n_head=2, n_positions=16
        )
        model = transformers.GPT2LMHeadModel(config)
    elif name == "llama":
        config = transformers.LlamaConfig(
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=16,
            **small,
        )
        model = transformers.LlamaForCausalLM(config)
    elif name == "bert":
        config = transformers.BertConfig(
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            num_labels=3,
            **small,
        )
        model = transformers.BertForSequenceClassification(config)
    else:
        config = transformers.T5Config(
            vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2
        )
        model = transformers.T5ForConditionalGeneration(config)
    config._attn_implementation = "eager"
    return model.eval()


HF_KINDS = {
    "gpt_neox": {
        "gpt_neox.layers.0.attention.query_key_value": "attn_qkv",  # per-head interleaved
        "gpt_neox.layers.0.attention.dense": "attn_o",
        "gpt_neox.layers.0.mlp.dense_h_to_4h": "mlp_up",
        "gpt_neox.layers.0.mlp.dense_4h_to_h": "mlp_down",
        "lm_head": "head",
    },
    "gpt2": {
        **{f"transformer.h.0.attn.c_attn:{p}": f"attn_{p}" for p in "qkv"},
        "transformer.h.0.attn.c_attn": "attn_qkv",
        "transformer.h.0.attn.c_proj": "attn_o",
        "transformer.h.0.mlp.c_fc": "mlp_up",
        "transformer.h.0.mlp.c_proj": "mlp_down",
        "lm_head": "head",
    },
    "llama": {
        **{f"model.layers.0.self_attn.{p}_proj": f"attn_{p}" for p in "qkvo"},
        "model.layers.0.mlp.gate_proj": "mlp_up",
        "model.layers.0.mlp.up_proj": "mlp_up",
        "model.layers.0.mlp.down_proj": "mlp_down",
        "lm_head": "head",
    },
    "bert": {
        **{
            f"bert.encoder.layer.0.attention.self.{n}": f"attn_{n[0]}"
            for n in ("query", "key", "value")
        },
        "bert.encoder.layer.0.attention.output.dense": "attn_o",
        "bert.encoder.layer.0.intermediate.dense": "mlp_up",
        "bert.encoder.layer.0.output.dense": "mlp_down",
        "bert.pooler.dense": "linear",
        "classifier": "head",
    },
    "t5": {
        **{
            f"{stack}.block.0.layer.{i}.{att}.{p}": f"attn_{p}"
            for stack, i, att in (
                ("encoder", 0, "SelfAttention"),
                ("decoder", 0, "SelfAttention"),
                ("decoder", 1, "EncDecAttention"),
            )
            for p in "qkvo"
        },
        "encoder.block.0.layer.1.DenseReluDense.wi": "mlp_up",
        "encoder.block.0.layer.1.DenseReluDense.wo": "mlp_down",
        "decoder.block.0.layer.2.DenseReluDense.wi": "mlp_up",
        "decoder.block.0.layer.2.DenseReluDense.wo": "mlp_down",
        "lm_head": "head",
    },
}


@pytest.mark.parametrize("name", sorted(HF_KINDS))
def test_hugging_face_layouts_get_their_kinds_from_structure(name: str) -> None:
    model = _hf(name)
    ids = torch.randint(0, 32, (1, 6))
    if name == "t5":
        forward = lambda m: m(input_ids=ids, decoder_input_ids=ids).logits  # noqa: E731
    else:
        forward = example_forward(ids)
    specs, skipped = layer_inventory(model, forward)
    assert {s.name: s.kind for s in specs} == HF_KINDS[name]
    assert skipped and all("embedding lookup" in why for why in skipped.values())
    tied = name in ("gpt2", "t5")  # their lm_head is the token embedding
    head = next(s for s in specs if s.name == "lm_head" or s.name == "classifier")
    assert head.softmax_rank_bound is not tied and ("tied_embedding" in head.flags) is tied
