"""Which phase of the engine is running, for the progress of ``curvprof profile``.

``workers.curvature.engine.profile_layers`` reports a layer only once it is finished; the
work before the first layer (one gradient pass, the SVD of every layer, the K-FAC
projections) and within a layer (h_k, Lanczos, the fits) is silent. ``engine_phases``
observes those steps, for the duration of one in-process profile, by wrapping the step
functions the engine calls (docs/engine.md lists the steps); the numbers are untouched.
``tests/cli/test_progress.py`` checks that every phase below is seen, so a renamed step
fails there rather than going quiet.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# (module, function, phase): the engine's steps in the order one profile runs them
STEPS = (
    ("workers.curvature.engine", "layer_gradients", "gradients"),
    ("workers.curvature.engine", "gradient_svd", "SVD"),
    ("workers.curvature.engine", "collect_projections", "K-FAC"),
    ("workers.curvature.engine", "routed_curvature", "h_k"),
    ("workers.curvature.engine", "_lanczos", "Lanczos"),
    ("workers.curvature.fits", "fit_exponents", "fits"),
)
PHASES = tuple(phase for _, _, phase in STEPS)
PhaseListener = Callable[[str], None]


@contextmanager
def engine_phases(on_phase: PhaseListener) -> Iterator[dict[str, float]]:
    """Call ``on_phase(name)`` as each step starts; yields the seconds spent in each phase."""
    import importlib

    seconds = dict.fromkeys(PHASES, 0.0)
    patched: list[tuple[Any, str, Any]] = []

    def timed(phase: str, step: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(step)
        def run(*args: Any, **kwargs: Any) -> Any:
            on_phase(phase)
            started = time.perf_counter()
            try:
                return step(*args, **kwargs)
            finally:
                seconds[phase] += time.perf_counter() - started

        return run

    try:
        for module_name, attribute, phase in STEPS:
            module = importlib.import_module(module_name)
            step = getattr(module, attribute, None)
            if step is None:  # a step the engine no longer has is not shown
                continue
            patched.append((module, attribute, step))
            setattr(module, attribute, timed(phase, step))
        yield seconds
    finally:
        for module, attribute, step in reversed(patched):
            setattr(module, attribute, step)
