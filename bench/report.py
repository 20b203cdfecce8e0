"""Markdown tables from benchmark JSON files (``python -m bench --out FILE`` writes them).

    python -m bench.report bench/results/full-case1.json [more.json ...]

Each case found in the files becomes one table, the goals one more, so docs/benchmarks.md
quotes the measured numbers as they were written, not retyped.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table: the one renderer of every benchmark table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: Any, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def _method_table(
    title: str,
    header: list[str],
    rows: list[dict[str, Any]],
    cells: Callable[[dict[str, Any]], list[str]],
) -> str:
    """One row per method: its cells, or the error it raised across the remaining columns."""
    body = [
        [r["method"], "error: " + r["error"], *[""] * (len(header) - 2)]
        if "error" in r
        else [r["method"], *cells(r)]
        for r in rows
    ]
    return title + "\n\n" + table(header, body)


def hk_tables(cases: list[dict[str, Any]]) -> list[str]:
    out = []
    for c in cases:
        title = (
            f"**h_k, {c['model']} `{c['layer']}` {tuple(c['shape'])}, B = {c['batch']}, "
            f"K = {c['K']}** (per direction, in gradients of the layer; floor marginal "
            f"{c['floor_marginal_per_dir']:.2f}, setup {c['floor_setup']:.2f})"
        )

        def cells(r: dict[str, Any], K: int = c["K"]) -> list[str]:
            spread = (
                f"{min(r['ratios']) / K:.2f}–{max(r['ratios']) / K:.2f}" if r.get("ratios") else ""
            )
            return [_num(r["per_dir"]), spread, f"{r['rel_err']:.1e}"]

        header = ["method", "per direction (median)", "range over repeats", "max rel. diff of h_k"]
        out.append(_method_table(title, header, c["rows"], cells))
    return out


def _eigen_cells(r: dict[str, Any]) -> list[str]:
    return [_num(r["grads"], ".1f"), str(r["n_hvp"]), f"{r['agree_1e-6']}/20"]


def eigen_tables(cases: list[dict[str, Any]]) -> list[str]:
    header = ["method", "cost in gradients", "HVPs", "agree to 1e-6"]
    return [
        _method_table(
            f"**Top-20 eigenvalues, {c['model']} `{c['layer']}` {tuple(c['shape'])}, "
            f"B = {c['batch']}** (reference {c['reference']}; λ19/λ20 = "
            f"{c['gap_ratio_19_20']:.3f})",
            header,
            c["rows"],
            _eigen_cells,
        )
        for c in cases
    ]


def _whole_cells(r: dict[str, Any]) -> list[str]:
    return [_num(r["grads"], ".1f"), _num(r["seconds"], ".2f")]


def whole_tables(cases: list[dict[str, Any]]) -> list[str]:
    return [
        _method_table(
            f"**Whole profile, {c['model']} ({c['layers']} matrices, B = {c['batch']})** "
            "(in gradients of all matrices)",
            ["method", "gradients", "seconds"],
            c["rows"],
            _whole_cells,
        )
        for c in cases
    ]


def scaling_table(sc: dict[str, Any]) -> str:
    rows = [
        [
            str(sc[key]["workers"]),
            _num(sc[key]["layers_per_second"], ".3f"),
            _num(sc[key]["layers_per_gradient"], ".4f"),
        ]
        for key in ("one", "two")
    ]
    title = (
        f"**Ray scaling, {sc['model']} ({sc['one']['layers']} matrices, B = {sc['batch']})**: "
        f"speedup {sc['speedup']:.2f}, drift-corrected {sc['speedup_drift_corrected']:.2f}"
    )
    return title + "\n\n" + table(["workers", "layers/s", "layers per driver gradient"], rows)


def store_table(st: dict[str, Any]) -> str:
    rows = []
    for backend in ("sqlite", "postgresql"):
        b = st.get(backend)
        if not b:
            continue
        if "error" in b:
            rows.append([backend, "error: " + b["error"], *[""] * 5])
            continue
        for view in ("brief", "full"):
            v = b[view]
            rows.append(
                [
                    backend,
                    view,
                    _num(v["p50_ms"], ".1f"),
                    _num(v["p99_ms"], ".1f"),
                    _num(v["max_ms"], ".1f"),
                    _num(v["query_p50_ms"], ".1f"),
                    f"{b['insert_seconds']:.0f} s",
                ]
            )
    header = ["backend", "view", "p50 ms", "p99 ms", "max ms", "query alone p50 ms", "insert"]
    return f"**`GET /v1/layers` at {st['rows']} layers ({st['via']})**\n\n" + table(header, rows)


def goals_table(goals: list[dict[str, Any]]) -> str:
    rows = [
        [g["goal"], f"{g['ratio']:.3g}", "met" if g["met"] else "**missed**", g.get("note", "")]
        for g in goals
    ]
    return table(["goal", "ratio", "status", "note"], rows)


def render(results: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    goals: list[dict[str, Any]] = []
    for res in results:
        parts += hk_tables(res.get("hk", []))
        parts += eigen_tables(res.get("eigen", []))
        parts += whole_tables(res.get("whole", []))
        if res.get("scaling"):
            parts.append(scaling_table(res["scaling"]))
        if res.get("store"):
            parts.append(store_table(res["store"]))
        goals += res.get("goals", [])
    if goals:
        parts.append("**Goals**\n\n" + goals_table(goals))
    return "\n\n".join(parts) + "\n"


def summary(res: dict[str, Any]) -> str:
    """One run's tables between the machine it ran on and its wall time (``python -m bench``)."""
    m = res["machine"]
    head = (
        f"curvprof vs peers ({res['mode']}), {m['nproc']} x {m['cpu']}, torch "
        f"{res['versions']['torch']}, OPENBLAS_NUM_THREADS={m['OPENBLAS_NUM_THREADS']}"
    )
    return f"{head}\n\n{render([res])}\nwall {res['wall_seconds']:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    print(render([json.loads(f.read_text()) for f in args.files]), end="")


if __name__ == "__main__":
    main()
