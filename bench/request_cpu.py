"""Server CPU per request kind of bench.load's mix, one request at a time.

    python -m bench.request_cpu                    # 10^5 layers on SQLite, 30 requests a kind
    python -m bench.request_cpu --layers 2000 --requests 10

The store is filled as for bench.load and served by the same child process (job runner
off). Each kind's requests go one after another on one connection (after 5 of each kind
to warm up), and the figure is the server process's CPU seconds over them divided by
their count: what one request costs the server with no queue and no contention of its own
(the machine's other load still slows it). Report the load average beside it.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from bench.load import KINDS, _cpu_seconds, _request, http_stack, server_process
from bench.store import populate, template_profiles


def measure(db_url: str, data_dir: Path, requests: int) -> dict[str, tuple[float, float, int]]:
    """Per kind: (server CPU ms per request, wall ms per request, mean response bytes)."""
    import httpx

    out: dict[str, tuple[float, float, int]] = {}
    with (
        server_process(db_url, data_dir) as (url, pid),
        httpx.Client(base_url=url, timeout=120) as http,
    ):
        rng = random.Random(0)

        def send(kind: str, client: int, i: int) -> int:
            method, path, body = _request(kind, rng, client, i)
            key = {"Idempotency-Key": f"cpu-{time.time_ns()}-{i}"} if body else None
            response = http.request(method, path, json=body, headers=key)
            response.raise_for_status()
            return len(response.content)

        for kind in KINDS:
            for i in range(5):
                send(kind, -1, i)
        for kind in KINDS:
            cpu, started, size = _cpu_seconds(pid), time.perf_counter(), 0
            for i in range(requests):
                size += send(kind, -2, i)
            out[kind] = (
                1e3 * (_cpu_seconds(pid) - cpu) / requests,
                1e3 * (time.perf_counter() - started) / requests,
                size // requests,
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.request_cpu", description=__doc__)
    parser.add_argument("--layers", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30, help="per kind")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="curvprof-cpu-") as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'cpu.db'}"
        populate(
            db_url, args.layers, template_profiles(), per_job=min(1000, args.layers // 100 or 1)
        )
        before = os.getloadavg()
        figures = measure(db_url, Path(tmp), args.requests)
    print(
        f"{args.layers} layers, {http_stack()}, load average "
        + " ".join(f"{x:.1f}" for x in before)
    )
    print("  kind          server CPU ms   wall ms   bytes")
    for kind, (cpu, wall, size) in figures.items():
        print(f"  {kind:<14}{cpu:>13.1f}{wall:>10.1f}{size:>8}")
    print("  load average after " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
