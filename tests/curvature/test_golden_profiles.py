"""The numbers are unchanged: each zoo profile recorded in ``tests/curvature/golden/`` is
reproduced bit for bit (every σ, h, λ, fit, K-FAC, Φ, χ and preconditioner value; wall times
and the run's versions and host left out). Re-record deliberately, with the reason in the
commit: ``python -m tests.curvature.golden_profiles``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch

from tests.curvature.golden_profiles import (
    CONFIGS,
    GOLDEN_DIR,
    differences,
    exact_tree,
    golden_path,
    measure,
)
from workers.zoo import ARCHS


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Recorded on one intra-op thread; more threads may sum in another order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_zoo_architecture_has_a_recording() -> None:
    assert set(CONFIGS) == set(ARCHS)
    assert {p.stem for p in GOLDEN_DIR.glob("*.json")} == set(ARCHS)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_the_recorded_profile_is_reproduced_bit_for_bit(arch: str) -> None:
    recorded = json.loads(golden_path(arch).read_text())
    assert recorded["config"] == CONFIGS[arch]
    diffs = differences(recorded["profile"], exact_tree(measure(arch)))
    assert not diffs, f"{len(diffs)} values differ, first: " + "; ".join(diffs[:5])


def test_the_comparison_sees_a_one_ulp_change() -> None:
    tree = {"h": [(0.1).hex()], "alpha": (1.5).hex(), "flags": ["x"]}
    nudged = {"h": [(0.1 + 2**-56).hex()], "alpha": (1.5).hex(), "flags": ["x"]}
    assert differences(tree, tree) == []
    assert differences(tree, nudged) == [f".h[0]: {(0.1).hex()!r} != {(0.1 + 2**-56).hex()!r}"]
    assert differences(tree, {"h": [], "alpha": tree["alpha"]}) != []


def test_only_bic_values_may_differ_in_their_last_bits() -> None:
    value = -43.4
    near, far = (value * (1 + 1e-14)).hex(), (value * (1 + 1e-12)).hex()
    assert differences({"bic": {"power_law": value.hex()}}, {"bic": {"power_law": near}}) == []
    assert differences({"bic": {"power_law": value.hex()}}, {"bic": {"power_law": far}}) != []
    assert differences({"pr_h": value.hex()}, {"pr_h": near}) != []
