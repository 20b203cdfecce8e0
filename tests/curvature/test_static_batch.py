"""Programs that take one batch size, or a bounded range: the micro-batch sizes chosen and
the refusals, with what to do instead."""

from __future__ import annotations

import pytest
from torch import nn

from workers.curvature.static_batch import (
    BATCH_RANGE_ATTR,
    STATIC_BATCH_ATTR,
    batch_range_of,
    ranged_micro_batch,
    static_batch_of,
    static_batch_problem,
)


def test_attributes_are_read_strictly() -> None:
    model = nn.Linear(2, 2)
    assert static_batch_of(model) is None and batch_range_of(model) is None
    setattr(model, STATIC_BATCH_ATTR, 4)
    setattr(model, BATCH_RANGE_ATTR, [2, None])
    assert static_batch_of(model) == 4 and batch_range_of(model) == (2, None)
    setattr(model, STATIC_BATCH_ATTR, True)  # a bool is not a batch size
    assert static_batch_of(model) is None


def test_static_batch_problems() -> None:
    assert static_batch_problem(4, 12, None) is None and static_batch_problem(4, 12, 4) is None
    assert "micro-batches of exactly 4" in (static_batch_problem(4, 12, 3) or "")
    assert "--batch-size 8" in (static_batch_problem(4, 10, None) or "")
    assert "at least 4 examples" in (static_batch_problem(4, 3, None) or "")


@pytest.mark.parametrize(
    ("bounds", "n", "micro", "size", "problem"),
    [
        ((1, None), 10, None, None, None),  # the whole batch in one forward
        ((1, 4), 10, None, 4, None),  # capped at the maximum: 4, 4, 2
        ((1, 4), 10, 5, None, "at most 4"),
        ((3, 4), 10, None, None, "leaves one of 2"),
        ((2, None), 10, 4, 4, None),
    ],
)
def test_ranged_micro_batch(
    bounds: tuple[int, int | None], n: int, micro: int | None, size: int | None, problem: str | None
) -> None:
    got, why = ranged_micro_batch(bounds, n, micro)
    assert got == size
    assert (why is None) if problem is None else (problem in (why or ""))
