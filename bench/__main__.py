"""curvprof against PyHessian, curvlinops, hessian-eigenthings and BackPACK (issue 6).

    OPENBLAS_NUM_THREADS=1 python -m bench [--quick] [--out FILE] [--cases 1,2,3,4,5]
        [--models cnn,gpt,mlp] [--batch MODEL=SIZE ...]

Peers come from the ``bench`` extra; a missing peer is skipped. Results: the tables of
``bench.report`` on stdout and JSON (default ``bench/results/{quick,full}.json``). See
docs/benchmarks.md.
"""

from __future__ import annotations

import os

# ARPACK's OpenBLAS threads fight torch's on 2 cores: one BLAS thread for the whole process.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import argparse
import warnings
from pathlib import Path

from bench import campaign, report, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 3 minutes on 2 cores")
    parser.add_argument("--out", help="JSON output (default bench/results/{quick,full}.json)")
    parser.add_argument("--cases", default="1,2,3,4,5", help="comma-separated case numbers")
    parser.add_argument(
        "--models", help="comma-separated models of cases 1–3 (default: the mode's)"
    )
    parser.add_argument(
        "--batch", action="append", default=[], metavar="MODEL=SIZE",
        help="a model's measurement batch size instead of the mode's (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    mode = "quick" if args.quick else "full"
    models = {m.strip() for m in args.models.split(",") if m.strip()} if args.models else None
    try:
        batch = {k.strip(): int(v) for k, v in (item.split("=", 1) for item in args.batch)}
    except ValueError:
        parser.error("--batch takes MODEL=SIZE, e.g. --batch mlp=512")
    which = {int(c) for c in args.cases.split(",") if c.strip()}
    try:
        res = campaign.run(mode, which, models, batch)
    except ValueError as exc:
        parser.error(str(exc))
    print("\n" + report.summary(res))
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"{mode}.json"
    results.write_json(res, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
