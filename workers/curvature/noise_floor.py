"""The rounding error of h_k, estimated by running the layer's route in two precisions
(docs/engine.md, step 5; the float32 noise floor).

The asymmetry of the K×K matrix M (``hvp.compressed_diagnostics``) sees only rounding that
breaks the symmetry of M; rounding in the forward pass and in the back-propagations moves
h_k to the value of a nearby model, symmetrically, and it stays unseen (issue 12 measured
ε_HVP 2.6–6,500× below the true float32 error). This estimate measures the error itself: on
a sub-batch S of the first min(16, B/8) examples of the first micro-batch, with its own
normaliser (so h_S is a mean over S, as h is a mean over the batch), the same route runs in
the working precision and in a higher one,

    ε_k = |h_k^S(working) − h_k^S(float64)|                       (working float32, bfloat16…)
    ε_k = |h_k^S(float32) − h_k^S(float64)| · u_64 / u_32         (working float64)

with u the unit roundoff (u_64/u_32 = 2⁻²⁹: to first order rounding errors scale with u).
One sub-batch is one draw of the rounding, and the reductions over the whole batch add
rounding that grows as √B, so the bound is

    ε = SAFETY · √(max(1, B/|S|)) · max_k ε_k,

with SAFETY = 4 set by measurement: on the 28 layer/route pairs of ``bench/hk_noise.py``
(ReLU and tanh MLPs with B = 64, a CNN and the zoo GPT with B = 32, so |S| = 8 and 4; every
route, with and without the diagnostics) the raw max_k ε_k lay between 0.24× and 22× the true
max_k |h_k(float32) − h_k(float64)| on the whole batch, so ε between 2.7× and 250× it, where
M's asymmetry lay between 2·10⁻⁵× and 1.5× it (docs/benchmarks.md). ε is the noise floor
(the fit keeps h_k > 10ε). Where the GGN route's check ran h^GGN on this same sub-batch in
the working precision (B ≥ 128: both take 16 examples; ``routes.ggn_decision``) only the
other precision is run again.

The estimate needs a copy of the model in the other precision (``copy.deepcopy``) that runs
on the sub-batch; a model that cannot be copied, cast or run on fewer examples (a program
traced for one batch size) gives None, and the caller keeps M's asymmetry.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from workers.curvature.measurement import MODEL_LOSS, Batch

EXAMPLES = 16
FRACTION = 8
SAFETY = 4.0
# (model, micro-batches) -> h_k (K,): one route, the same in both precisions
HCompute = Callable[[nn.Module, list[Batch]], torch.Tensor]
_UNIT_ROUNDOFF_RATIO = 2.0**-29  # u_64 / u_32


@dataclass(frozen=True)
class RoundingEstimate:
    """ε_k = |h_k^S(low) − h_k^S(high)| (scaled to the working precision) for every
    direction (K,) float64, the bound ε on the error of every h_k of the whole batch, and
    the sub-batch size |S|."""

    per_direction: torch.Tensor
    eps: float
    examples: int


def working_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter (None if it has none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def estimate_examples(batch: Batch) -> int:
    """|S| = min(``EXAMPLES``, B/``FRACTION``) examples (at least one): the estimate costs at
    most about 1/``FRACTION`` of the route in each precision."""
    return max(1, min(EXAMPLES, batch.n_examples // FRACTION))


def sub_batch(batch: Batch, examples: int | None = None) -> Batch:
    """The first ``examples`` examples of ``batch`` (default ``estimate_examples``) as a batch
    of their own: the loss is their mean (the normaliser scaled by the share of examples; the
    model's own loss is its own)."""
    sub = batch.split(examples or estimate_examples(batch), limit=1)[0]
    n = int(sub.inputs.shape[0])
    if batch.loss == MODEL_LOSS or n == batch.n_examples:
        return replace(sub, n_examples=n)
    return replace(sub, normaliser=batch.normaliser * n / batch.n_examples, n_examples=n)


def cast_batch(batch: Batch, dtype: torch.dtype) -> Batch:
    """``batch`` with its floating inputs and targets in ``dtype``."""

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if t.is_floating_point() else t

    return replace(batch, inputs=cast(batch.inputs), targets=cast(batch.targets))


def cast_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` with floating parameters and buffers in ``dtype``, in eval mode as
    the original is, every parameter frozen as the original's are."""
    other = copy.deepcopy(model).to(dtype)
    for mine, theirs in zip(model.parameters(), other.parameters(), strict=True):
        theirs.requires_grad_(mine.requires_grad)
    return other


def rounding_error(
    compute: HCompute,
    model: nn.Module,
    micro_batches: list[Batch],
    *,
    working: torch.Tensor | None = None,
) -> RoundingEstimate | None:
    """ε_k and ε for the route ``compute`` (see the module docstring), or None where the
    model cannot be copied into the other precision. ``working``: h on ``sub_batch`` (its
    default size) in the working precision, when the caller has it already (the GGN route's
    check, where the two sub-batches coincide)."""
    dtype = working_dtype(model)
    if dtype is None:
        return None
    sub = sub_batch(micro_batches[0])
    low_dtype = torch.float32 if dtype == torch.float64 else dtype
    try:
        other = cast_model(model, torch.float32 if dtype == torch.float64 else torch.float64)
    except (RuntimeError, TypeError, AttributeError, copy.Error):
        return None
    low_model, high_model = (other, model) if dtype == torch.float64 else (model, other)

    def h_of(m: nn.Module, dt: torch.dtype) -> torch.Tensor:
        if m is model and working is not None:
            return working.to(torch.float64).cpu()
        return compute(m, [cast_batch(sub, dt)]).to(torch.float64).cpu()

    try:
        low, high = h_of(low_model, low_dtype), h_of(high_model, torch.float64)
    except (RuntimeError, ValueError, AssertionError, NotImplementedError):
        return None  # e.g. a program traced for one batch size cannot run the sub-batch
    err = (low - high).abs()
    if dtype == torch.float64:
        err = err * _UNIT_ROUNDOFF_RATIO
    n = int(sub.n_examples)
    growth = math.sqrt(max(1.0, micro_batches[0].n_examples / n))
    eps = SAFETY * growth * float(err.max()) if err.numel() else 0.0
    return RoundingEstimate(err, eps, n)
