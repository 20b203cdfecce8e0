"""The API under load: N concurrent clients against a real server process on 127.0.0.1.

    python -m bench.load                              # 200 clients x 10 requests, 1e5 layers
    python -m bench.load --clients 50 --layers 2000 --backend postgres --out load.json

The store is filled first (bench.store.populate: 10^5 layer rows over 100 jobs, real
compressed profiles). The server is ``uvicorn service.app:create_app`` in its own process
(the job runner off; the load generator must not share its interpreter). Every client is an
httpx.AsyncClient of its own connection that sends its requests one after another, each
drawn from the mix: ``GET /v1/jobs``, a filtered ``GET /v1/layers`` (bench.store.QUERIES,
brief and full views), ``POST /v1/jobs`` (a zoo job with an Idempotency-Key). An error is
any status >= 500 and any transport failure (refused, reset, timed out); 4xx would be a bug
of the mix and are counted apart. Latencies are per kind, p50/p99 over every request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.store import QUERIES, populate, template_profiles

KINDS = ("jobs", "layers_brief", "layers_full", "submit")
WEIGHTS = (0.3, 0.3, 0.2, 0.2)


@dataclass
class KindStats:
    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None


@dataclass
class LoadResult:
    backend: str
    clients: int
    requests_per_client: int
    layers: int
    seconds: float = 0.0
    requests: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, KindStats] = field(default_factory=dict)
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cpus: int = 0

    @property
    def layer_p99_ms(self) -> float:
        return max(self.kinds[k].p99_ms or 0.0 for k in ("layers_brief", "layers_full"))


def _request(kind: str, rng: random.Random, client_id: int, i: int) -> tuple[str, str, Any]:
    if kind == "jobs":
        return "GET", "/v1/jobs?limit=50", None
    if kind == "submit":
        spec = {"checkpoint_id": "zoo:mlp", "dataset": "digits", "seed": client_id * 1000 + i}
        return "POST", "/v1/jobs", spec
    view = "brief" if kind == "layers_brief" else "full"
    return "GET", f"{rng.choice(QUERIES)}&view={view}", None


async def _client(
    base_url: str, client_id: int, n: int, seed: int, record: list[tuple[str, float, str]]
) -> None:
    import httpx

    rng = random.Random(seed * 100_003 + client_id)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:
        for i in range(n):
            kind = rng.choices(KINDS, WEIGHTS)[0]
            method, path, body = _request(kind, rng, client_id, i)
            headers = {"Idempotency-Key": f"load-{seed}-{client_id}-{i}"} if body else None
            started = time.perf_counter()
            try:
                response = await http.request(method, path, json=body, headers=headers)
                outcome = str(response.status_code)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            record.append((kind, time.perf_counter() - started, outcome))


async def _drive(base_url: str, clients: int, n: int, seed: int) -> list[tuple[str, float, str]]:
    record: list[tuple[str, float, str]] = []
    await asyncio.gather(*(_client(base_url, c, n, seed, record) for c in range(clients)))
    return record


def _warm_up(base_url: str) -> None:
    """One request of each kind first (imports on first use, query plans, caches)."""
    import httpx

    rng = random.Random(0)
    with httpx.Client(base_url=base_url, timeout=120) as http:
        for kind in KINDS:
            method, path, body = _request(kind, rng, -1, 0)
            http.request(method, path, json=body).raise_for_status()


def _summarise(result: LoadResult, record: list[tuple[str, float, str]]) -> None:
    result.requests = len(record)
    for kind in KINDS:
        rows = [(dt, outcome) for k, dt, outcome in record if k == kind]
        stats = KindStats(requests=len(rows))
        for _, outcome in rows:
            if not outcome.isdigit() or int(outcome) >= 500:
                stats.errors += 1
                result.error_kinds[outcome] = result.error_kinds.get(outcome, 0) + 1
            elif int(outcome) >= 400:
                stats.client_errors += 1
                result.error_kinds[outcome] = result.error_kinds.get(outcome, 0) + 1
        if rows:
            ms = np.array([dt for dt, _ in rows]) * 1e3
            stats.p50_ms = float(np.percentile(ms, 50))
            stats.p99_ms = float(np.percentile(ms, 99))
            stats.max_ms = float(ms.max())
        result.kinds[kind] = stats
        result.errors += stats.errors


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server_process(db_url: str, data_dir: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``uvicorn service.app:create_app`` in a child process on loopback; yields its URL."""
    import httpx

    port = _free_port()
    child_env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "CURVPROF_DATA_DIR": str(data_dir),
        "CURVPROF_DB_URL": db_url,
        "CURVPROF_RUN_JOBS": "false",
        **(env or {}),
    }
    command = [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--no-access-log"]
    proc = subprocess.Popen(command, env=child_env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_load(
    db_url: str,
    data_dir: Path,
    *,
    backend: str,
    clients: int,
    requests: int,
    layers: int,
    seed: int = 0,
) -> LoadResult:
    """Fill ``db_url`` with ``layers`` rows, serve it, and drive the clients once."""
    populate(db_url, layers, template_profiles(), per_job=min(1000, max(1, layers // 100)))
    result = LoadResult(backend, clients, requests, layers, cpus=os.cpu_count() or 0)
    with server_process(db_url, data_dir) as url:
        _warm_up(url)
        started = time.perf_counter()
        record = asyncio.run(_drive(url, clients, requests, seed))
        result.seconds = time.perf_counter() - started
    result.load_average = os.getloadavg()
    _summarise(result, record)
    return result


def report(result: LoadResult) -> str:
    lines = [
        f"{result.backend}: {result.clients} clients x {result.requests_per_client} requests "
        f"on {result.layers} layers in {result.seconds:.1f} s "
        f"({result.requests / max(result.seconds, 1e-9):.0f} req/s); errors {result.errors}"
        f"{' ' + str(result.error_kinds) if result.error_kinds else ''}; load average "
        + " ".join(f"{x:.1f}" for x in result.load_average)
        + f" on {result.cpus} CPUs",
        "  kind          requests  errors   4xx   p50 ms   p99 ms   max ms",
    ]
    for kind, s in result.kinds.items():
        lines.append(
            f"  {kind:<14}{s.requests:>9}{s.errors:>8}{s.client_errors:>6}"
            f"{s.p50_ms or 0:>9.0f}{s.p99_ms or 0:>9.0f}{s.max_ms or 0:>9.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=10, help="per client")
    parser.add_argument("--layers", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="curvprof-load-") as tmp:
        if args.backend == "sqlite":
            db = f"sqlite:///{Path(tmp) / 'load.db'}"
            result = run_load(
                db,
                Path(tmp),
                backend="sqlite",
                clients=args.clients,
                requests=args.requests,
                layers=args.layers,
                seed=args.seed,
            )
        else:
            from bench.live import fresh_pg_database

            pg = os.environ.get("CURVPROF_TEST_PG_URL")
            if pg is None:
                print("postgres: CURVPROF_TEST_PG_URL is not set")
                return 2
            with fresh_pg_database(pg) as db:
                result = run_load(
                    db,
                    Path(tmp),
                    backend="postgres",
                    clients=args.clients,
                    requests=args.requests,
                    layers=args.layers,
                    seed=args.seed,
                )
    print(report(result))
    if args.out:
        args.out.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0 if result.errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
