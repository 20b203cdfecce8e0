"""The peer benchmark's campaign: cases 1–5 in one of two modes, each printed as it ends.

The cases themselves live in ``bench.hk`` (1), ``bench.eigen`` (2), ``bench.whole`` (3),
``bench.scaling`` (4) and ``bench.store`` (5); docs/benchmarks.md gives the protocol.
"""

from __future__ import annotations

import time
from typing import Any

from bench import cases, goals, peers, results

# quick: under 3 minutes on 2 shared cores (models cached); full: as long as it needs
MODES: dict[str, dict[str, Any]] = {
    "quick": {
        "batch": {"cnn": 32, "gpt": 8, "mlp": 256},
        "hk_models": ["cnn", "gpt", "mlp"],
        "hk_repeats": 3,
        "eig_models": ["gpt", "mlp"],
        "eig_repeats": 1,
        "eig_pyhessian": False,
        "whole_models": ["mlp"],
        "whole_repeats": 1,
        "scaling_model": "gpt",
        "scaling_repeats": 1,
        "store_rows": 20_000,
        "store_rounds": 5,
        "store_backends": ("sqlite",),
    },
    "full": {
        "batch": {"cnn": 256, "gpt": 32, "mlp": 1024},
        "hk_models": ["cnn", "gpt", "mlp"],
        "hk_repeats": 7,
        "eig_models": ["cnn", "gpt", "mlp"],
        "eig_repeats": 3,
        "eig_pyhessian": True,
        "whole_models": ["cnn", "gpt", "mlp"],
        "whole_repeats": 3,
        "scaling_model": "gpt",
        "scaling_repeats": 3,
        "store_rows": 100_000,
        "store_rounds": 30,
        "store_backends": ("sqlite", "postgresql"),
    },
}


MODEL_LISTS = ("hk_models", "eig_models", "whole_models")


def configured(
    mode: str, models: set[str] | None = None, batch: dict[str, int] | None = None
) -> dict[str, Any]:
    """``mode``'s settings with its model lists cut to ``models`` and batch sizes overridden."""
    cfg = {**MODES[mode], "batch": {**MODES[mode]["batch"], **(batch or {})}}
    if models is not None:
        unknown = models - set(cases.MODELS)
        if unknown:
            raise ValueError(f"unknown model {sorted(unknown)[0]!r}: one of {sorted(cases.MODELS)}")
        for key in MODEL_LISTS:
            cfg[key] = [n for n in cfg[key] if n in models]
    return cfg


def run(
    mode: str,
    which: set[int],
    models: set[str] | None = None,
    batch: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The cases in ``which`` (1–5) in ``mode``, each model's setup built once, and the goals;
    ``models`` and ``batch`` as ``configured``."""
    cfg = configured(mode, models, batch)
    out: dict[str, Any] = {
        "mode": mode,
        "machine": results.machine(),
        "versions": peers.versions(),
        "peers": peers.available(),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
    }
    setups: dict[str, cases.Setup] = {}

    def setup(name: str) -> cases.Setup:
        if name not in setups:
            setups[name] = cases.make_setup(name, mode, batch_size=cfg["batch"][name])
        return setups[name]

    t0 = time.perf_counter()
    if 1 in which:
        from bench import hk

        out["hk"] = [hk.run_case(setup(n), cfg["hk_repeats"]) for n in cfg["hk_models"]]
        print(f"[case 1 done at {time.perf_counter() - t0:.0f} s]", flush=True)
    if 2 in which:
        from bench import eigen

        out["eigen"] = [
            eigen.run_case(
                setup(n),
                cfg["eig_repeats"],
                with_pyhessian=cfg["eig_pyhessian"],
            )
            for n in cfg["eig_models"]
        ]
        print(f"[case 2 done at {time.perf_counter() - t0:.0f} s]", flush=True)
    if 3 in which:
        from bench import whole

        out["whole"] = [
            whole.run_case(setup(n), cases.trained_model(n), cfg["whole_repeats"])
            for n in cfg["whole_models"]
        ]
        print(f"[case 3 done at {time.perf_counter() - t0:.0f} s]", flush=True)
    if 4 in which:
        from bench import scaling

        n = cfg["scaling_model"]
        out["scaling"] = scaling.run_case(setup(n), cases.trained_model(n), cfg["scaling_repeats"])
        print(f"[case 4 done at {time.perf_counter() - t0:.0f} s]", flush=True)
    if 5 in which:
        from bench import store

        out["store"] = store.run_case(
            cfg["store_rows"], cfg["store_rounds"], backends=cfg["store_backends"]
        )
        print(f"[case 5 done at {time.perf_counter() - t0:.0f} s]", flush=True)
    out["wall_seconds"] = time.perf_counter() - t0
    out["goals"] = goals.goals(out)
    return out
