"""ResNet parameter names match torchvision's resnet18 (list written out from its definition)."""

from __future__ import annotations

import pytest
import torch

from workers.zoo import build_model

RESNET18_KEYS = (
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
    "layer1.0.conv1.weight",
    "layer1.0.bn1.weight",
    "layer1.0.bn1.bias",
    "layer1.0.bn1.running_mean",
    "layer1.0.bn1.running_var",
    "layer1.0.bn1.num_batches_tracked",
    "layer1.0.conv2.weight",
    "layer1.0.bn2.weight",
    "layer1.0.bn2.bias",
    "layer1.0.bn2.running_mean",
    "layer1.0.bn2.running_var",
    "layer1.0.bn2.num_batches_tracked",
    "layer1.1.conv1.weight",
    "layer1.1.bn1.weight",
    "layer1.1.bn1.bias",
    "layer1.1.bn1.running_mean",
    "layer1.1.bn1.running_var",
    "layer1.1.bn1.num_batches_tracked",
    "layer1.1.conv2.weight",
    "layer1.1.bn2.weight",
    "layer1.1.bn2.bias",
    "layer1.1.bn2.running_mean",
    "layer1.1.bn2.running_var",
    "layer1.1.bn2.num_batches_tracked",
    "layer2.0.conv1.weight",
    "layer2.0.bn1.weight",
    "layer2.0.bn1.bias",
    "layer2.0.bn1.running_mean",
    "layer2.0.bn1.running_var",
    "layer2.0.bn1.num_batches_tracked",
    "layer2.0.conv2.weight",
    "layer2.0.bn2.weight",
    "layer2.0.bn2.bias",
    "layer2.0.bn2.running_mean",
    "layer2.0.bn2.running_var",
    "layer2.0.bn2.num_batches_tracked",
    "layer2.0.downsample.0.weight",
    "layer2.0.downsample.1.weight",
    "layer2.0.downsample.1.bias",
    "layer2.0.downsample.1.running_mean",
    "layer2.0.downsample.1.running_var",
    "layer2.0.downsample.1.num_batches_tracked",
    "layer2.1.conv1.weight",
    "layer2.1.bn1.weight",
    "layer2.1.bn1.bias",
    "layer2.1.bn1.running_mean",
    "layer2.1.bn1.running_var",
    "layer2.1.bn1.num_batches_tracked",
    "layer2.1.conv2.weight",
    "layer2.1.bn2.weight",
    "layer2.1.bn2.bias",
    "layer2.1.bn2.running_mean",
    "layer2.1.bn2.running_var",
    "layer2.1.bn2.num_batches_tracked",
    "layer3.0.conv1.weight",
    "layer3.0.bn1.weight",
    "layer3.0.bn1.bias",
    "layer3.0.bn1.running_mean",
    "layer3.0.bn1.running_var",
    "layer3.0.bn1.num_batches_tracked",
    "layer3.0.conv2.weight",
    "layer3.0.bn2.weight",
    "layer3.0.bn2.bias",
    "layer3.0.bn2.running_mean",
    "layer3.0.bn2.running_var",
    "layer3.0.bn2.num_batches_tracked",
    "layer3.0.downsample.0.weight",
    "layer3.0.downsample.1.weight",
    "layer3.0.downsample.1.bias",
    "layer3.0.downsample.1.running_mean",
    "layer3.0.downsample.1.running_var",
    "layer3.0.downsample.1.num_batches_tracked",
    "layer3.1.conv1.weight",
    "layer3.1.bn1.weight",
    "layer3.1.bn1.bias",
    "layer3.1.bn1.running_mean",
    "layer3.1.bn1.running_var",
    "layer3.1.bn1.num_batches_tracked",
    "layer3.1.conv2.weight",
    "layer3.1.bn2.weight",
    "layer3.1.bn2.bias",
    "layer3.1.bn2.running_mean",
    "layer3.1.bn2.running_var",
    "layer3.1.bn2.num_batches_tracked",
    "layer4.0.conv1.weight",
    "layer4.0.bn1.weight",
    "layer4.0.bn1.bias",
    "layer4.0.bn1.running_mean",
    "layer4.0.bn1.running_var",
    "layer4.0.bn1.num_batches_tracked",
    "layer4.0.conv2.weight",
    "layer4.0.bn2.weight",
    "layer4.0.bn2.bias",
    "layer4.0.bn2.running_mean",
    "layer4.0.bn2.running_var",
    "layer4.0.bn2.num_batches_tracked",
    "layer4.0.downsample.0.weight",
    "layer4.0.downsample.1.weight",
    "layer4.0.downsample.1.bias",
    "layer4.0.downsample.1.running_mean",
    "layer4.0.downsample.1.running_var",
    "layer4.0.downsample.1.num_batches_tracked",
    "layer4.1.conv1.weight",
    "layer4.1.bn1.weight",
    "layer4.1.bn1.bias",
    "layer4.1.bn1.running_mean",
    "layer4.1.bn1.running_var",
    "layer4.1.bn1.num_batches_tracked",
    "layer4.1.conv2.weight",
    "layer4.1.bn2.weight",
    "layer4.1.bn2.bias",
    "layer4.1.bn2.running_mean",
    "layer4.1.bn2.running_var",
    "layer4.1.bn2.num_batches_tracked",
    "fc.weight",
    "fc.bias",
)
RESNET18_SHAPES = {
    "conv1.weight": (64, 3, 7, 7),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer4.1.conv2.weight": (512, 512, 3, 3),
    "layer4.1.bn2.running_var": (512,),
    "fc.weight": (1000, 512),
    "fc.bias": (1000,),
}
RESNET18_CONFIG = {
    "arch": "resnet",
    "in_channels": 3,
    "classes": 1000,
    "widths": [64, 128, 256, 512],
    "blocks": [2, 2, 2, 2],
    "stem": "imagenet",
}


def test_resnet18_state_dict_keys_and_shapes_match_torchvision() -> None:
    assert len(RESNET18_KEYS) == 122
    state = build_model(RESNET18_CONFIG).state_dict()
    assert list(state) == list(RESNET18_KEYS)
    for key, shape in RESNET18_SHAPES.items():
        assert tuple(state[key].shape) == shape


def test_resnet18_named_state_dict_loads_strictly() -> None:
    source = build_model(RESNET18_CONFIG).state_dict()
    foreign = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in source.items()}
    model = build_model(RESNET18_CONFIG)
    model.load_state_dict(foreign, strict=True)
    out = model.eval()(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 1000)


def test_small_stem_keeps_names_and_handles_8x8() -> None:
    model = build_model({"arch": "resnet", "widths": [8, 8, 16], "blocks": [2, 1, 1]})
    keys = set(model.state_dict())
    assert {"conv1.weight", "bn1.weight", "layer1.1.conv2.weight", "fc.weight"} <= keys
    assert "layer2.0.downsample.0.weight" in keys  # stride 2 needs a projection
    assert not any(k.startswith("layer1.0.downsample") for k in keys)  # same width, stride 1
    assert model.eval()(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_real_torchvision_resnet18_loads_if_installed() -> None:
    models = pytest.importorskip("torchvision.models")
    reference = models.resnet18(weights=None).eval()
    model = build_model(RESNET18_CONFIG).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(model(x), reference(x))
