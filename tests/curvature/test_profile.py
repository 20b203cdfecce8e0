"""``profile_model``: the softmax rank bound, α-less layers, NaN/Inf, provenance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from api_schemas import Provenance
from tests.curvature.dense import dense_reference
from tests.curvature.models import MLP
from workers.curvature import profile_model
from workers.curvature.graph import example_forward
from workers.curvature.inventory import layer_inventory
from workers.intake.errors import NonFiniteError
from workers.versions import library_versions


class TiedLM(nn.Module):
    """A tied LM head: G = G_head + G_table has rank up to min(V, d), not V − 1."""

    def __init__(self, vocab: int = 5, dim: int = 6, tied: bool = True) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        if tied:
            self.lm_head.weight = self.emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.tanh(self.mix(self.emb(idx))))


@pytest.mark.parametrize("tied", [True, False])
def test_the_softmax_rank_bound_holds_only_for_a_head_used_once(tied: bool) -> None:
    torch.manual_seed(0)
    model = TiedLM(tied=tied).double()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 5, (8, 6), generator=g), torch.randint(0, 5, (8, 6), generator=g)
    profile = profile_model(model, x, y, loss="lm", top_k=6, lanczos_steps=0, layers="lm_head")
    (head,) = profile.layers
    spec = next(s for s in layer_inventory(model, example_forward(x))[0] if s.name == "lm_head")
    G, _ = dense_reference(model, x, y, "lm", spec)
    S = torch.linalg.svdvals(G).numpy()
    true_rank = int((1e-6 * S[0] < S).sum())
    assert true_rank == (5 if tied else 4)  # tied: all V = 5 directions are real
    assert head.rank_num == true_rank and head.k == true_rank
    np.testing.assert_allclose(head.sigma, S[:true_rank], rtol=1e-10)


def test_no_alpha_no_decomposition() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(30, 6), torch.randint(0, 3, (30,))
    profile = profile_model(MLP((6, 8, 3)), x, y, top_k=5, lanczos_steps=0)  # 5 < 8 points
    assert profile.layers[0].k == 5 and len(profile.layers[0].h_kron_ef) == 5
    for layer in profile.layers:
        assert layer.alpha is None and "few_points" in layer.flags
        assert layer.decomposition is None


@pytest.mark.parametrize("where", ["inputs", "targets", "weight", "inf"])
def test_non_finite_values_name_the_tensor(where: str) -> None:
    torch.manual_seed(0)
    model = MLP((5, 7, 3))
    x, y = torch.randn(10, 5), torch.randn(10, 3)
    if where == "inputs":
        x[3, 1] = float("nan")
    elif where == "targets":
        y[0, 0] = float("nan")
    elif where == "weight":
        with torch.no_grad():
            model.net[2].weight[0, 0] = float("nan")
    else:
        x[0, 0] = float("inf")
    name = {"weight": "parameter net.2.weight", "inf": "inputs"}.get(where, where)
    with pytest.raises(NonFiniteError, match=rf"^{name} holds 1 non-finite value \("):
        profile_model(model, x, y, loss="mse", top_k=2, lanczos_steps=0)


def test_provenance_keeps_the_callers_indices_and_names_the_device() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(12, 5), torch.randint(0, 3, (12,))
    rows = [100 + 3 * i for i in range(12)]  # the rows' own indices in the caller's data set
    given = Provenance(data_name="mine", data_indices=rows)
    whole = profile_model(MLP((5, 3)), x, y, top_k=2, lanczos_steps=0, provenance=given)
    assert whole.provenance.data_indices == rows and whole.provenance.data_name == "mine"
    assert whole.provenance.device == "cpu"
    drawn = profile_model(
        MLP((5, 3)), x, y, top_k=2, lanczos_steps=0, provenance=given, batch_size=5, seed=4
    )
    positions = sorted(np.random.default_rng(4).choice(12, size=5, replace=False).tolist())
    assert drawn.provenance.data_indices == [rows[i] for i in positions]
    plain = profile_model(MLP((5, 3)), x, y, top_k=2, lanczos_steps=0, batch_size=5, seed=4)
    assert plain.provenance.data_indices == positions


def test_library_versions_are_defined_once() -> None:
    import service.jobs_runner as runner

    assert runner.library_versions is library_versions
    versions = library_versions()
    assert versions["torch"] == torch.__version__ and {"numpy", "scipy", "python"} <= set(versions)
    x, y = torch.randn(4, 5), torch.randint(0, 3, (4,))
    profile = profile_model(MLP((5, 3)), x, y, top_k=2, lanczos_steps=0)
    assert profile.provenance.versions == versions
