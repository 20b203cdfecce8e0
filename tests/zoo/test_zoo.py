from __future__ import annotations

import json
from typing import Any, get_args

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp

from api_schemas import LayerKind
from tests.zoo.conftest import TINY, example_batch
from workers.intake.errors import IntakeError
from workers.zoo import ARCHS, build_model


@pytest.mark.parametrize("arch", list(ARCHS))
def test_defaults_build_and_carry_metadata(arch: str) -> None:
    model: Any = build_model({"arch": arch})
    x, _ = example_batch(arch, n=2)
    if arch == "gpt":
        x = torch.randint(0, 96, (2, 64))
    out = model(x)
    assert out.shape == ((2, 64, 96) if arch == "gpt" else (2, 10))
    cfg = model.curvprof_config
    assert cfg["arch"] == arch and json.loads(json.dumps(cfg)) == cfg
    assert model.default_loss == ("lm" if arch == "gpt" else "cross_entropy")
    modules = dict(model.named_modules())
    for name, kind in model.curvprof_kinds.items():
        assert isinstance(modules[name.removesuffix(".weight")].weight, torch.nn.Parameter)
        assert kind in get_args(LayerKind)
    assert list(model.curvprof_kinds.values()).count("head") == 1


def kinds(config: dict[str, Any]) -> dict[str, str]:
    return dict(getattr(build_model(config), "curvprof_kinds", {}))


def test_kind_names() -> None:
    vit = kinds(TINY["vit"])
    assert vit["blocks.0.attn.q_proj.weight"] == "attn_q"
    assert vit["blocks.0.attn.out_proj.weight"] == "attn_o"
    assert vit["blocks.0.mlp.fc1.weight"] == "mlp_up"
    assert vit["blocks.0.mlp.fc2.weight"] == "mlp_down"
    assert vit["patch_embed.proj.weight"] == "conv" and vit["head.weight"] == "head"
    fused: Any = build_model(TINY["vit_fused_linear"])
    assert fused.curvprof_kinds["blocks.0.attn.qkv.weight"] == "attn_qkv"
    assert fused.blocks[0].attn.qkv.weight.shape == (24, 8)
    assert fused.curvprof_kinds["patch_embed.proj.weight"] == "linear"
    vgg = kinds({"arch": "vgg"})
    assert vgg["classifier.6.weight"] == "head" and vgg["classifier.0.weight"] == "linear"
    assert vgg["features.0.weight"] == "conv"
    mlp = kinds({"arch": "mlp"})
    assert mlp == {"layers.0.weight": "linear", "layers.1.weight": "linear", "head.weight": "head"}
    tied: Any = build_model(TINY["gpt_tied_fused"])
    assert tied.lm_head.weight is tied.tok_emb.weight
    assert tied.curvprof_kinds["lm_head.weight"] == "head"


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"arch": "transformer"}, "unknown arch 'transformer'"),
        ({"widths": [4]}, "unknown arch None"),
        ({"arch": "mlp", "hidden": [4]}, "unknown config key 'hidden'"),
        ({"arch": "mlp", "activation": "swish"}, "'activation' must be one of"),
        ({"arch": "mlp", "widths": [4, 0]}, "'widths' has a bad entry 0"),
        ({"arch": "mlp", "widths": "64"}, "'widths' must be a list of 1 to 64 entries"),
        ({"arch": "vit", "dim": 10, "heads": 4}, "not divisible by heads"),
        ({"arch": "vit", "fused_qkv": 1}, "'fused_qkv' must be true or false"),
        ({"arch": "gpt", "depth": 2.5}, "'depth' must be an integer from 1 to"),
        ({"arch": "vgg", "features": [8, "M", "M", "M", "M"]}, "too many 'M' pools"),
        ({"arch": "vgg", "dropout": 1.5}, "dropout must be in [0, 1)"),
        ({"arch": "resnet", "widths": [4, 8], "blocks": [1]}, "same length"),
        ({"arch": "resnet", "stem": "huge"}, "'stem' must be one of"),
    ],
)
def test_bad_configs_raise_one_line_intake_error(config: dict, needle: str) -> None:
    with pytest.raises(IntakeError) as info:
        build_model(config)
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_gpt_is_causal_and_checks_length() -> None:
    model = build_model(TINY["gpt"]).eval()
    x, _ = example_batch("gpt", n=1)
    y = x.clone()
    y[0, 4:] = (y[0, 4:] + 1) % 96
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(torch.zeros(1, 7, dtype=torch.long))


def test_no_fused_sdpa_in_zoo() -> None:
    import inspect

    from workers.zoo import attention

    source = inspect.getsource(attention).split('"""', 2)[2]
    assert "scaled_dot_product_attention" not in source


def _loss(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return 0.5 * (out - y).pow(2).mean()
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


@pytest.mark.parametrize("name", list(TINY))
def test_double_backward_and_forward_over_reverse_agree_float64(name: str) -> None:
    """H[V] for every analysed weight, by jvp(grad) and by double backward, in float64."""
    cfg = TINY[name]
    model: Any = build_model(cfg).double().eval()
    x, y = example_batch(cfg["arch"], n=3)
    x = x.double() if x.is_floating_point() else x
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    names = dict(model.named_parameters())
    checked = 0
    for pname in model.curvprof_kinds:
        if pname not in names:  # tied alias: the shared tensor is checked under its own name
            continue
        w0 = params[pname]

        def loss_of(w: torch.Tensor, pname: str = pname) -> torch.Tensor:
            p = {**params, pname: w}
            return _loss(functional_call(model, (p, buffers), (x,)), y, model.default_loss)

        v = torch.randn(w0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        hv_fwd = jvp(grad(loss_of), (w0,), (v,))[1]
        w = w0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_of(w), w, create_graph=True)
        (hv_rev,) = torch.autograd.grad(g, w, grad_outputs=v)
        torch.testing.assert_close(hv_fwd, hv_rev, rtol=1e-9, atol=1e-12)
        assert hv_rev.abs().max() > 0, pname
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("arch", sorted(TINY))
def test_meta_shapes_are_the_built_model_s_and_kept_per_config(arch: str) -> None:
    """The meta-device shapes equal a real model's; asked again, the same config is answered
    from the cache (a copy: changing it changes nothing kept), another config is built."""
    from workers.zoo import _cached_state_shapes, meta_state_shapes

    config = TINY[arch]
    real = {name: tuple(t.shape) for name, t in build_model(config).state_dict().items()}
    first = meta_state_shapes(config)
    assert first == real
    hits = _cached_state_shapes.cache_info().hits
    first.clear()
    assert meta_state_shapes(dict(config)) == real
    assert _cached_state_shapes.cache_info().hits == hits + 1
    if arch == "mlp":
        wider = meta_state_shapes({**config, "widths": [w + 1 for w in config["widths"]]})
        assert wider != real
