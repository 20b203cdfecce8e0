"""Where a whole profile's time goes: the engine's phases, timed by its ``on_phase`` listener.

``python -m bench.whole_stages [--models cnn,gpt,mlp] [--repeats 3] [--out FILE]``: case 3's
``profile_model(top_k=20, lanczos_steps=20)`` with each phase (gradients, SVD, K-FAC
projections, then per layer h_k, Lanczos, fits; "fits" runs to the next phase and so also
holds the row's assembly) summed over layers, in gradients of every analysable matrix
(each repeat beside one, median over repeats), with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import cases
from bench.timing import timed
from workers.curvature.profile import profile_model


def stages(name: str, repeats: int) -> dict[str, Any]:
    """Median per-phase cost (gradients of all matrices) of ``name``'s whole profile."""
    s = cases.make_setup(name, "full", batch_size={"cnn": 256, "gpt": 32, "mlp": 1024}[name])
    model32 = cases.trained_model(name)
    per: dict[str, list[float]] = defaultdict(list)
    totals: list[float] = []
    with open("/proc/loadavg") as f:
        before = f.read().split()[:3]
    for rep in range(repeats + 1):  # the first run is the warm-up
        marks: list[tuple[str, float]] = []

        def mark(phase: object, into: list[tuple[str, float]] = marks) -> None:
            into.append((str(phase), time.perf_counter()))

        t_grad, _ = timed(s.full_gradient)
        t0 = time.perf_counter()
        profile_model(
            model32, s.x, s.y, loss=s.loss, top_k=cases.K, lanczos_steps=20,
            dtype=cases.DTYPE, on_phase=mark,
        )  # fmt: skip
        end = time.perf_counter()
        if rep == 0:
            continue
        sums: dict[str, float] = defaultdict(float)
        sums["setup (copy, inventory)"] = (marks[0][1] - t0) / t_grad
        for (phase, start), (_, stop) in zip(marks, [*marks[1:], ("end", end)], strict=True):
            sums[phase] += (stop - start) / t_grad
        for phase, v in sums.items():
            per[phase].append(v)
        totals.append((end - t0) / t_grad)
    with open("/proc/loadavg") as f:
        after = f.read().split()[:3]
    return {
        "model": name,
        "layers": len(s.specs),
        "total": statistics.median(totals),
        "stages": {p: statistics.median(v) for p, v in per.items()},
        "loadavg": {"before": before, "after": after},
    }


def main() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,gpt,mlp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    out = []
    for name in args.models.split(","):
        r = stages(name, args.repeats)
        out.append(r)
        print(f"\n**{name}** ({r['layers']} matrices): total {r['total']:.1f} gradients, "
              f"load {r['loadavg']}")  # fmt: skip
        print("| phase | gradients of all matrices | share |\n|---|---|---|")
        for phase, v in sorted(r["stages"].items(), key=lambda kv: -kv[1]):
            print(f"| {phase} | {v:.1f} | {100 * v / r['total']:.0f}% |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
