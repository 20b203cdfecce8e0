"""The traced forward: each parameter's uses with their roles, the (out × in) matrix shapes,
transposed layouts, functional and tied uses, and the data flow between ops."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workers.curvature.graph import MATRIX_ROLES, example_forward, trace_forward


class _Uses(nn.Module):
    """An embedding tied to the head, a module linear, a functional x @ W (stored in × out),
    a conv, and a norm gain (used, but not as a matrix)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.fc = nn.Linear(4, 4)
        self.w = nn.Parameter(torch.randn(4, 6))
        self.conv = nn.Conv1d(1, 2, 3)
        self.norm = nn.LayerNorm(6)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.fc(self.emb(idx)))  # (b, t, 4)
        z = self.norm(x @ self.w)  # (b, t, 6)
        c = self.conv(z.reshape(-1, 1, 6)).mean()
        return F.linear(x, self.emb.weight) + c  # tied head: (b, t, 7)


def test_every_use_has_its_role_shape_and_owner() -> None:
    torch.manual_seed(0)
    model = _Uses()
    idx = torch.randint(0, 7, (2, 3))
    graph = trace_forward(model, example_forward(idx))
    roles = {(u.parameter, u.role) for u in graph.uses}
    assert {
        ("emb.weight", "embedding"),
        ("emb.weight", "linear"),
        ("fc.weight", "linear"),
        ("w", "linear"),
        ("conv.weight", "conv"),
        ("norm.weight", "other"),
    } <= roles
    by = {(u.parameter, u.role): u for u in graph.uses}
    assert by["w", "linear"].transpose and by["w", "linear"].shape == (6, 4)
    assert not by["fc.weight", "linear"].transpose and by["fc.weight", "linear"].module == "fc"
    assert by["emb.weight", "linear"].module is None and by["emb.weight", "linear"].shape == (7, 4)
    assert by["conv.weight", "conv"].shape == (2, 3)
    assert len(graph.uses_of("emb.weight")) == 2
    assert graph.output is not None and graph.nodes[graph.output].shapes[0] == (
        1,
        3,
        7,
    )  # first example
    for node in graph.nodes:  # the data flow only points backwards, and children mirror it
        for parent, _ in node.inputs:
            assert parent < node.index and node.index in graph.children[parent]
    assert "linear" in MATRIX_ROLES and "embedding" not in MATRIX_ROLES
