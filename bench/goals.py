"""The goals of issue 6, each with its measured ratio and whether it was met."""

from __future__ import annotations

from typing import Any


def _row(rows: list[dict[str, Any]], prefix: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["method"].startswith(prefix) and "error" not in r), None)


def goals(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal of the issue with the measured ratio (met or missed)."""
    g: list[dict[str, Any]] = []
    for c in res.get("hk", []):
        rows = c["rows"]
        cp = _row(rows, "curvprof")
        fl = _row(rows, "floor")
        if cp is None or fl is None:
            continue
        peers_rows = [
            r
            for r in rows
            if "error" not in r
            and not r["method"].startswith("curvprof")
            and not r["method"].startswith("floor")
        ]
        fastest = min(peers_rows, key=lambda r: r["per_dir"], default=None)
        g.append(
            {
                "goal": f"h_k at the floor ({c['model']})",
                "ratio": cp["per_dir"] / fl["per_dir"],
                "met": cp["per_dir"] <= 1.1 * fl["per_dir"],
                "note": "curvprof / floor, (setup+K)/K; <= 1.1 counts as at the floor",
            }
        )
        own = [r for r in rows if r["method"].startswith("curvprof") and "error" not in r]
        for mine in own if fastest is not None else []:
            assert fastest is not None
            label = "" if mine is cp else ", h-only"
            g.append(
                {
                    "goal": f"h_k never slower than the fastest peer ({c['model']}{label})",
                    "ratio": fastest["per_dir"] / mine["per_dir"],
                    "met": mine["per_dir"] <= fastest["per_dir"],
                    "note": f"fastest peer: {fastest['method']}",
                }
            )
        for r in peers_rows:
            if "docs" in r["method"]:
                g.append(
                    {
                        "goal": f"h_k >= 2x {r['method']} ({c['model']})",
                        "ratio": r["per_dir"] / cp["per_dir"],
                        "met": r["per_dir"] >= 2 * cp["per_dir"],
                        "note": "",
                    }
                )
        worst = max((r["rel_err"] for r in rows if "rel_err" in r), default=float("nan"))
        g.append(
            {
                "goal": f"h_k agreement rel 1e-8 ({c['model']})",
                "ratio": worst,
                "met": worst <= 1e-8,
                "note": "max relative difference over all methods",
            }
        )
    for c in res.get("eigen", []):
        cp = _row(c["rows"], "curvprof")
        cl = _row(c["rows"], "curvlinops")
        if cp and cl:
            g.append(
                {
                    "goal": f"top-20 eigenvalues >= 3x curvlinops+eigsh ({c['model']})",
                    "ratio": cl["grads"] / cp["grads"],
                    "met": cl["grads"] >= 3 * cp["grads"] and cp["agree_1e-6"] == 20,
                    "note": (
                        f"agree to 1e-6: curvprof {cp['agree_1e-6']}/20, "
                        f"curvlinops {cl['agree_1e-6']}/20"
                    ),
                }
            )
    for c in res.get("whole", []):
        cp = _row(c["rows"], "curvprof")
        others = [
            r for r in c["rows"] if "error" not in r and not r["method"].startswith("curvprof")
        ]
        best = min(others, key=lambda r: r["grads"], default=None)
        if cp and best:
            g.append(
                {
                    "goal": f"whole profile >= 5x best peer pipeline ({c['model']})",
                    "ratio": best["grads"] / cp["grads"],
                    "met": best["grads"] >= 5 * cp["grads"],
                    "note": f"best: {best['method']}",
                }
            )
    sc = res.get("scaling")
    if sc:
        g.append(
            {
                "goal": "2 workers >= 1.7x layers/s of 1",
                "ratio": sc["speedup"],
                "met": sc["speedup"] >= 1.7,
                "note": f"drift-corrected {sc['speedup_drift_corrected']:.2f}",
            }
        )
    st = res.get("store")
    if st:
        for backend in ("sqlite", "postgresql"):
            for view in ("brief", "full"):
                b = (st.get(backend) or {}).get(view)
                if b and "p99_ms" in b:
                    g.append(
                        {
                            "goal": (
                                f"store p99 <= 50 ms ({backend}, view={view}, {st['rows']} rows)"
                            ),
                            "ratio": b["p99_ms"] / 50.0,
                            "met": b["p99_ms"] <= 50.0,
                            "note": f"p50 {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms",
                        }
                    )
    return g
