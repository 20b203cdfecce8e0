"""``torch.export`` programs: the batch size their input constraints allow.

``torch.export.export(model, (x,))`` specialises every dimension of ``x`` unless
``dynamic_shapes`` marks it dynamic, so a program exported the default way accepts exactly
the example's batch size and nothing else. The size is read from the program itself: the
first dimension of its first user input's example value, a plain ``int`` when static and a
symbol when dynamic.
"""

from __future__ import annotations

from typing import Any

from workers.curvature.static_batch import BATCH_RANGE_ATTR, STATIC_BATCH_ATTR

__all__ = ["BATCH_RANGE_ATTR", "STATIC_BATCH_ATTR", "exported_batch_range", "exported_static_batch"]


def exported_static_batch(program: Any) -> int | None:
    """The static batch size of an ``ExportedProgram``'s first input; None when dynamic."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        value = node.meta.get("val")
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) == 0:
            return None
        first = shape[0]
        return int(first) if isinstance(first, int) else None
    return None


def exported_batch_range(program: Any) -> tuple[int, int | None] | None:
    """(min, max) of a dynamic batch from the program's range constraints (max None when
    unbounded); None for a static batch or a program whose first input has no batch."""
    from torch.utils._sympy.numbers import int_oo

    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        shape = getattr(node.meta.get("val"), "shape", None)
        if not shape or isinstance(shape[0], int):
            return None
        bounds = program.range_constraints.get(shape[0].node.expr)
        if bounds is None:
            return None
        upper = None if bounds.upper == int_oo else int(bounds.upper)
        return int(bounds.lower), upper
    return None
