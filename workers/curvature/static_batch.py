"""Models that accept one batch size only (a ``torch.export`` program with a static batch).

Such a model carries ``curvprof_static_batch = b`` (set by ``workers.intake`` when it loads
the program). The engine then runs every forward on exactly b examples: the measurement batch
is cut into micro-batches of b, whose gradients and Hessian-vector products add up exactly to
the full batch's (docs/engine.md, micro-batches), and a batch that is not a multiple of b is
refused with what to do instead.
"""

from __future__ import annotations

from torch import nn

STATIC_BATCH_ATTR = "curvprof_static_batch"


def static_batch_of(model: nn.Module) -> int | None:
    """The one batch size ``model`` accepts, or None when it takes any."""
    static = getattr(model, STATIC_BATCH_ATTR, None)
    return int(static) if isinstance(static, int) and not isinstance(static, bool) else None


def static_batch_problem(static: int, n_examples: int, micro_batch_size: int | None) -> str | None:
    """Why a measurement batch of ``n_examples`` cannot run on a program with a static batch
    of ``static`` (micro-batches of exactly that size), or None when it can."""
    how_dynamic = (
        "or export with a dynamic batch: torch.export.export(model, (x,), "
        "dynamic_shapes=({0: torch.export.Dim('batch')},))"
    )
    if micro_batch_size is not None and micro_batch_size != static:
        return (
            f"the exported program has a static batch of {static} examples, so it runs in "
            f"micro-batches of exactly {static}: leave the micro-batch size unset or set it "
            f"to {static}, {how_dynamic}"
        )
    if n_examples % static:
        fit = n_examples // static * static
        use = f"--batch-size {fit}" if fit else f"at least {static} examples"
        return (
            f"the exported program has a static batch of {static} examples (torch.export "
            f"without dynamic_shapes) and the measurement batch of {n_examples} is not a "
            f"multiple of it: use a batch size that is a multiple of {static} ({use}), "
            f"{how_dynamic}"
        )
    return None
