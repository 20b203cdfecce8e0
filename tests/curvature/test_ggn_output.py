"""Which layers take the GGN route's rank-1 output tangents (the products themselves are
tested against dense float64 Hessians in test_ggn_route.py)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from workers.curvature import layer_inventory
from workers.curvature.ggn_output import rank_one_layer, rest_of_network
from workers.curvature.measurement import make_batch


class TiedTwice(nn.Module):
    """fc's weight is used by its call and once more functionally: two uses."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.head = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(x)) + nn.functional.linear(x, self.fc.weight))


def test_only_single_use_linear_and_convolution_layers_apply() -> None:
    torch.manual_seed(0)
    model = TiedTwice().double().eval()
    x = torch.randn(6, 4, dtype=torch.float64)
    batch = make_batch(x, torch.randint(0, 3, (6,)), "cross_entropy", dtype=torch.float64)
    specs, _ = layer_inventory(model, batch.split(1, limit=1)[0].forward)
    by_name = {s.name: s for s in specs}
    assert rank_one_layer(model, by_name["fc"]) is None  # two uses
    assert rank_one_layer(model, by_name["head"]) is model.head
    grouped = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 3))
    x2 = torch.randn(3, 2, 3, 3)
    b2 = make_batch(x2, torch.randint(0, 3, (3,)), "cross_entropy", dtype=torch.float32)
    spec = replace(
        layer_inventory(grouped, b2.split(1, limit=1)[0].forward)[0][0], parameter="0.weight"
    )
    assert rank_one_layer(grouped, spec) is None  # a grouped kernel is not one (m, n) matrix
    untraced = layer_inventory(model)[0][0]
    assert rank_one_layer(model, untraced) is None  # uses unknown


def test_the_rest_of_the_network_leaves_the_model_as_it_was() -> None:
    model = TiedTwice()
    x = torch.randn(2, 4)
    batch = make_batch(x, torch.randint(0, 3, (2,)), "cross_entropy", dtype=torch.float32)
    rest = rest_of_network(model, model.head, batch)
    assert torch.equal(rest(torch.ones(2, 3)), torch.ones(2, 3))
    assert "forward" not in vars(model.head)
    torch.testing.assert_close(
        batch.forward(model), model.head(torch.relu(model.fc(x)) + x @ model.fc.weight.T)
    )
