"""Dashboard page times with 10⁵ stored layers (issue 15: every page under 1 s).

    OPENBLAS_NUM_THREADS=1 python -m bench.dashboard [--rows 100000] [--rounds 5] [--out FILE]

The store is filled the way ``bench.store`` fills it (10⁵ layer rows with real compressed
profiles, 1000 layers a job, SQLite), then a real uvicorn server on 127.0.0.1 serves the
pages. Two times per page: the server's (httpx GET of the HTML, median over ``rounds``)
and the browser's (Debian Chromium through Playwright: navigation until every Plotly chart
is drawn, median over ``rounds``; skipped when Chromium is absent). Results: JSON and a
table on stdout; docs/dashboard.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import store

PER_JOB = 1000


def pages(n_rows: int) -> dict[str, str]:
    """The page mix: every kind of page, sorted and second pages, a 3-job comparison."""
    n_jobs = max(1, n_rows // PER_JOB)
    mid = f"job{n_jobs // 2:05d}"
    compared = ",".join(f"job{j:05d}" for j in range(min(3, n_jobs)))
    return {
        "jobs list": "/ui",
        "jobs list, filtered": "/ui?state=succeeded&checkpoint_id=ckpt7",
        "job (1000 layers)": f"/ui/jobs/{mid}",
        "job, sorted by -alpha": f"/ui/jobs/{mid}?sort=-alpha",
        "layer": f"/ui/layers/{(n_jobs // 2) * PER_JOB + 17}",
        f"compare {min(3, n_jobs)} jobs": f"/ui/compare?jobs={compared}",
    }


def _second_page(client: Any, path: str) -> str | None:
    """The 'next' link of a job page (keyset cursor), to time a deeper page too."""
    import re

    html = client.get(path).text
    found = re.search(r'href="([^"]+)" data-page="next"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def server_times(base: str, mix: dict[str, str], rounds: int) -> dict[str, float]:
    import httpx

    out: dict[str, float] = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        nxt = _second_page(client, mix["job, sorted by -alpha"])
        if nxt:
            mix = {**mix, "job, sorted, page 2": nxt}
        for name, path in mix.items():
            client.get(path).raise_for_status()  # warm-up
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                r = client.get(path)
                times.append(time.perf_counter() - t0)
                r.raise_for_status()
            out[name] = 1e3 * statistics.median(times)
    return out


def browser_times(
    base: str, mix: dict[str, str], rounds: int
) -> tuple[dict[str, float], dict[str, float]] | None:
    """Per page: navigation until every chart is drawn, and until DOMContentLoaded (the
    HTML parsed and the deferred scripts, Plotly's 4.8 MB among them, run); medians in ms."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        return None
    from playwright.sync_api import sync_playwright

    out: dict[str, float] = {}
    parsed: dict[str, float] = {}
    dcl = "performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        for name, path in mix.items():
            page.goto(base + path)  # warm-up: Plotly's script is cached after this
            times, html = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                page.goto(base + path)
                page.wait_for_function("document.body.dataset.chartsReady !== undefined")
                times.append(time.perf_counter() - t0)
                html.append(float(page.evaluate(dcl)) / 1e3)
            out[name] = 1e3 * statistics.median(times)
            parsed[name] = 1e3 * statistics.median(html)
        browser.close()
    return out, parsed


def run(n_rows: int, rounds: int, *, browser: bool = True) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="curvprof-bench-dashboard-"))
    try:
        url = f"sqlite:///{tmp / 'bench.db'}"
        insert_s = store.populate(url, n_rows, store.template_profiles(), per_job=PER_JOB)
        mix = pages(n_rows)
        with store.server(url, tmp / "data") as base:
            served = server_times(base, mix, rounds)
            timed = browser_times(base, mix, rounds) if browser else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "rows": n_rows,
        "layers_per_job": PER_JOB,
        "rounds": rounds,
        "insert_seconds": insert_s,
        "pages": mix,
        "server_ms": served,
        "browser_ms": timed[0] if timed else None,
        "browser_html_ms": timed[1] if timed else None,
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['rows']} layers stored, {result['layers_per_job']} a job; median of "
        f"{result['rounds']}",
        f"{result['cpus']} CPUs, load average {result['load_average_1min']:.1f} at the end",
        "| page | server (ms) | browser, DOMContentLoaded (ms) | browser, charts drawn (ms) |",
        "| --- | ---: | ---: | ---: |",
    ]
    drawn = result.get("browser_ms") or {}
    parsed = result.get("browser_html_ms") or {}

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:.0f}"

    for name, served in result["server_ms"].items():
        lines.append(f"| {name} | {served:.0f} | {ms(parsed.get(name))} | {ms(drawn.get(name))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results/dashboard.json"))
    args = parser.parse_args()
    result = run(args.rows, args.rounds, browser=not args.no_browser)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
