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
BATCH_RANGE_ATTR = "curvprof_batch_range"  # (min, max or None) of a dynamic batch


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


def batch_range_of(model: nn.Module) -> tuple[int, int | None] | None:
    """The (min, max) batch sizes a ``torch.export`` program with a bounded dynamic batch
    accepts, or None."""
    bounds = getattr(model, BATCH_RANGE_ATTR, None)
    return (bounds[0], bounds[1]) if isinstance(bounds, (tuple, list)) else None


def ranged_micro_batch(
    bounds: tuple[int, int | None], n_examples: int, micro_batch_size: int | None
) -> tuple[int | None, str | None]:
    """The micro-batch size that fits a dynamic batch of ``bounds`` = (min, max): the given
    one, else the whole batch capped at max; and why it cannot run (every micro-batch,
    the last included, needs min <= size <= max), or None."""
    lower, upper = bounds
    size = micro_batch_size or n_examples
    if upper is not None and size > upper:
        if micro_batch_size is not None:
            return None, (
                f"the exported program accepts batches of at most {upper} examples: use a "
                f"micro-batch size of at most {upper}"
            )
        size = upper
    last = n_examples % size or size
    if min(size, last) < lower:
        return None, (
            f"the exported program accepts batches of {lower} to {upper or 'any'} examples, "
            f"and the measurement batch of {n_examples} in micro-batches of {size} leaves one "
            f"of {min(size, last)}: use a batch size that splits into micro-batches of at "
            f"least {lower}"
        )
    return (size if size < n_examples else micro_batch_size), None
