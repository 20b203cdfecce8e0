"""The API under load: N concurrent clients against a real server process on 127.0.0.1.

    python -m bench.load                              # 200 clients x 10 requests, 1e5 layers
    python -m bench.load --workers 2                  # two server processes (serve --workers)
    python -m bench.load --clients 50 --layers 2000 --backend postgres --out load.json

The store is filled first (bench.store.populate: 10^5 layer rows over 100 jobs, real
compressed profiles). The server is ``curvprof serve`` in its own process
(the job runner off; the load generator must not share its interpreter). Every client is an
aiohttp session of its own connection that sends its requests one after another, each
drawn from the mix: ``GET /v1/jobs``, a filtered ``GET /v1/layers`` (bench.store.QUERIES,
brief and full views), ``POST /v1/jobs`` (a zoo job with an Idempotency-Key). An error is
any status >= 500 and any transport failure (refused, reset, timed out); 4xx would be a bug
of the mix and are counted apart. Latencies are per kind, p50/p99 over every request of a
repeat; the report gives the median of each figure over ``--repeats`` runs against the one
server.

Where the time goes, per repeat: the mean time each route spent inside the app (the
server's own ``curvprof_http_request_duration_seconds``, which starts once the admission
gate lets a request in; the rest of a client's latency is the queue), and the CPU seconds
of the server process and of this load generator. With no think time (``--think 0``, the
default) the clients are a closed loop: a client's latency is about clients / throughput,
whatever the server does, so the server's CPU time per request is the figure to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.store import QUERIES, populate, template_profiles

KINDS = ("jobs", "layers_brief", "layers_full", "submit")
KEEPALIVE_S = 4.0
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
class Repeat:
    """One drive of every client against the server."""

    seconds: float = 0.0
    requests: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, KindStats] = field(default_factory=dict)
    in_app_ms: dict[str, float] = field(default_factory=dict)  # mean per route, server-side
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def layer_p99_ms(self) -> float:
        return max(self.kinds[k].p99_ms or 0.0 for k in ("layers_brief", "layers_full"))


@dataclass
class LoadResult:
    """Every repeat, and the median of each figure over them (``kinds``, ``seconds``)."""

    backend: str
    clients: int
    requests_per_client: int
    layers: int
    think_s: float = 0.0
    workers: int = 1
    http_stack: str = field(default_factory=lambda: http_stack())
    seconds: float = 0.0
    requests: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, KindStats] = field(default_factory=dict)
    repeats: list[Repeat] = field(default_factory=list)
    load_average_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cpus: int = 0

    @property
    def layer_p99_ms(self) -> float:
        return statistics.median(r.layer_p99_ms for r in self.repeats)

    def add(self, repeat: Repeat) -> None:
        self.repeats.append(repeat)
        self.requests += repeat.requests
        self.errors += repeat.errors
        for outcome, n in repeat.error_kinds.items():
            self.error_kinds[outcome] = self.error_kinds.get(outcome, 0) + n
        self.seconds = statistics.median(r.seconds for r in self.repeats)
        self.kinds = {kind: _median_stats([r.kinds[kind] for r in self.repeats]) for kind in KINDS}


def http_stack() -> str:
    """What uvicorn picks here for its HTTP parser and event loop (``auto``): httptools and
    uvloop when installed (the ``server`` extra), else h11 and asyncio's loop."""
    import importlib.util

    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{parser}+{loop}"


def _median_stats(runs: list[KindStats]) -> KindStats:
    def median(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    return KindStats(
        requests=sum(s.requests for s in runs),
        errors=sum(s.errors for s in runs),
        client_errors=sum(s.client_errors for s in runs),
        p50_ms=median([s.p50_ms for s in runs]),
        p99_ms=median([s.p99_ms for s in runs]),
        max_ms=median([s.max_ms for s in runs]),
    )


def _request(kind: str, rng: random.Random, client_id: int, i: int) -> tuple[str, str, Any]:
    if kind == "jobs":
        return "GET", "/v1/jobs?limit=50", None
    if kind == "submit":
        spec = {"checkpoint_id": "zoo:mlp", "dataset": "digits", "seed": client_id * 1000 + i}
        return "POST", "/v1/jobs", spec
    view = "brief" if kind == "layers_brief" else "full"
    return "GET", f"{rng.choice(QUERIES)}&view={view}", None


async def _client(
    base_url: str,
    client_id: int,
    n: int,
    seed: int,
    think_s: float,
    record: list[tuple[str, float, str]],
) -> None:
    """One client: one keep-alive connection, its requests one after another. aiohttp (a
    dependency of ray[default]) rather than httpx: the generator shares the CPUs with the
    server, and with httpx it spent 0.9 s of CPU on 40 requests that cost the server 0.4 s
    (aiohttp: about 0.1 s)."""
    import aiohttp

    rng = random.Random(seed * 100_003 + client_id)
    # idle connections are dropped before uvicorn's keep-alive timeout (5 s) closes them,
    # so no request goes out on a connection the server is closing (a reset, not the app)
    connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=KEEPALIVE_S)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as http:
        if think_s:  # users arrive as in the steady state: each one part-way into a pause
            await asyncio.sleep(rng.expovariate(1 / think_s))
        for i in range(n):
            kind = rng.choices(KINDS, WEIGHTS)[0]
            method, path, body = _request(kind, rng, client_id, i)
            headers = {"Idempotency-Key": f"load-{seed}-{client_id}-{i}"} if body else None
            started = time.perf_counter()
            try:
                async with http.request(method, path, json=body, headers=headers) as response:
                    await response.read()
                    outcome = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = type(exc).__name__
            record.append((kind, time.perf_counter() - started, outcome))
            if think_s:  # a user reading the answer: exponential pauses of mean think_s
                await asyncio.sleep(rng.expovariate(1 / think_s))


async def _drive(
    base_url: str, clients: int, n: int, seed: int, think_s: float
) -> list[tuple[str, float, str]]:
    record: list[tuple[str, float, str]] = []
    await asyncio.gather(*(_client(base_url, c, n, seed, think_s, record) for c in range(clients)))
    return record


def _warm_up(base_url: str) -> None:
    """One request of each kind first (imports on first use, query plans, caches)."""
    import httpx

    rng = random.Random(0)
    with httpx.Client(base_url=base_url, timeout=120) as http:
        for kind in KINDS:
            method, path, body = _request(kind, rng, -1, 0)
            http.request(method, path, json=body).raise_for_status()


ROUTE_TIME = re.compile(
    r'curvprof_http_request_duration_seconds_(sum|count)\{method="(\w+)",route="([^"]+)"\} (\S+)'
)


def _route_times(base_url: str) -> dict[tuple[str, str], float]:
    """The server's own (sum, count) of in-app seconds per route, from /metrics."""
    import httpx

    out: dict[tuple[str, str], float] = {}
    for line in httpx.get(base_url + "/metrics", timeout=120).text.splitlines():
        match = ROUTE_TIME.match(line)
        if match:
            out[(match[1], f"{match[2]} {match[3]}")] = float(match[4])
    return out


def _in_app_ms(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[str, float]:
    routes = {route for kind, route in after if kind == "count" and "/metrics" not in route}
    out = {}
    for route in sorted(routes):
        count = after[("count", route)] - before.get(("count", route), 0.0)
        if count:
            total = after[("sum", route)] - before.get(("sum", route), 0.0)
            out[route] = 1e3 * total / count
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and of its live children, the workers of
    ``--workers N`` (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(_cpu_seconds(int(child)) for child in children)


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _summarise(repeat: Repeat, record: list[tuple[str, float, str]]) -> None:
    repeat.requests = len(record)
    for kind in KINDS:
        rows = [(dt, outcome) for k, dt, outcome in record if k == kind]
        stats = KindStats(requests=len(rows))
        for _, outcome in rows:
            if not outcome.isdigit() or int(outcome) >= 500:
                stats.errors += 1
                repeat.error_kinds[outcome] = repeat.error_kinds.get(outcome, 0) + 1
            elif int(outcome) >= 400:
                stats.client_errors += 1
                repeat.error_kinds[outcome] = repeat.error_kinds.get(outcome, 0) + 1
        if rows:
            ms = np.array([dt for dt, _ in rows]) * 1e3
            stats.p50_ms = float(np.percentile(ms, 50))
            stats.p99_ms = float(np.percentile(ms, 99))
            stats.max_ms = float(ms.max())
        repeat.kinds[kind] = stats
        repeat.errors += stats.errors


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server_process(
    db_url: str,
    data_dir: Path,
    env: dict[str, str] | None = None,
    workers: int = 1,
    checkout: Path | None = None,
) -> Iterator[tuple[str, int]]:
    """``curvprof serve`` in a child process on loopback (``workers`` processes on its
    port), from ``checkout`` (default: this one); yields its URL and pid."""
    import httpx

    port = _free_port()
    code = str(checkout or Path(__file__).resolve().parents[1])
    child_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (code, os.environ.get("PYTHONPATH")) if p),
        "CURVPROF_DATA_DIR": str(data_dir),
        "CURVPROF_DB_URL": db_url,
        "CURVPROF_RUN_JOBS": "false",
        **(env or {}),
    }
    command = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning", "--workers", str(workers)]
    proc = subprocess.Popen(command, env=child_env, cwd=code)
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
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class LoadPlan:
    """What a run drives: the backend's name, ``clients`` each sending ``requests`` on a
    store of ``layers`` rows, ``repeats`` times, pausing ``think_s`` on average between
    requests, against ``workers`` server processes."""

    backend: str
    clients: int
    requests: int
    layers: int
    seed: int = 0
    repeats: int = 1
    think_s: float = 0.0
    workers: int = 1


def run_load(db_url: str, data_dir: Path, plan: LoadPlan) -> LoadResult:
    """Fill ``db_url`` with ``plan.layers`` rows, serve it, and drive the clients
    ``plan.repeats`` times (each repeat its own Idempotency-Keys)."""
    _populate(db_url, plan)
    result = _new_result(plan)
    with server_process(db_url, data_dir, workers=plan.workers) as (url, pid):
        _warm_up(url)
        for r in range(plan.repeats):
            result.add(_one_repeat(url, pid, plan, plan.seed * 1000 + r))
    return result


def run_paired_load(
    db_url: str, data_dir: Path, plan: LoadPlan, against: Path
) -> tuple[LoadResult, LoadResult]:
    """:func:`run_load` for this checkout's server and for ``against``'s (another checkout,
    e.g. a ``git worktree`` of an earlier commit), both serving one store and driven in
    turn, repeat by repeat (which goes first alternates), so that both meet the same drift
    of the machine. Each drive has Idempotency-Keys of its own."""
    _populate(db_url, plan)
    ours, theirs = _new_result(plan), _new_result(plan)
    workers = plan.workers
    with (
        server_process(db_url, data_dir / "this", workers=workers) as this_server,
        server_process(db_url, data_dir / "against", workers=workers, checkout=against) as other,
    ):
        _warm_up(this_server[0])
        _warm_up(other[0])
        for r in range(plan.repeats):
            turns = [(ours, this_server, 0), (theirs, other, 1)]
            for result, (url, pid), side in turns if r % 2 == 0 else turns[::-1]:
                result.add(_one_repeat(url, pid, plan, plan.seed * 1000 + 2 * r + side))
    return ours, theirs


def _populate(db_url: str, plan: LoadPlan) -> None:
    per_job = min(1000, max(1, plan.layers // 100))
    populate(db_url, plan.layers, template_profiles(), per_job=per_job)


def _new_result(plan: LoadPlan) -> LoadResult:
    result = LoadResult(
        plan.backend,
        plan.clients,
        plan.requests,
        plan.layers,
        think_s=plan.think_s,
        workers=plan.workers,
        cpus=os.cpu_count() or 0,
    )
    result.load_average_before = os.getloadavg()
    return result


def _one_repeat(url: str, pid: int, plan: LoadPlan, seed: int) -> Repeat:
    repeat = Repeat()
    times, server_cpu, own_cpu = _route_times(url), _cpu_seconds(pid), _own_cpu_seconds()
    started = time.perf_counter()
    record = asyncio.run(_drive(url, plan.clients, plan.requests, seed, plan.think_s))
    repeat.seconds = time.perf_counter() - started
    repeat.server_cpu_s = _cpu_seconds(pid) - server_cpu
    repeat.client_cpu_s = _own_cpu_seconds() - own_cpu
    # each process keeps its own /metrics: with several, a scrape reads one of them
    repeat.in_app_ms = _in_app_ms(times, _route_times(url)) if plan.workers == 1 else {}
    repeat.load_average = os.getloadavg()
    _summarise(repeat, record)
    return repeat


def paired_report(ours: LoadResult, theirs: LoadResult, against: Path) -> str:
    lines = ["this checkout:", report(ours), f"against {against}:", report(theirs)]
    lines.append("  repeat   this p99 ms   against p99 ms   this req/s   against req/s")
    for i, (a, b) in enumerate(zip(ours.repeats, theirs.repeats, strict=True)):
        lines.append(
            f"  {i:>6}{a.layer_p99_ms:>14.0f}{b.layer_p99_ms:>17.0f}"
            f"{a.requests / max(a.seconds, 1e-9):>13.0f}{b.requests / max(b.seconds, 1e-9):>16.0f}"
        )
    lines.append(
        f"  median layer p99: this {ours.layer_p99_ms:.0f} ms, against {theirs.layer_p99_ms:.0f} ms"
    )
    return "\n".join(lines)


def report(result: LoadResult) -> str:
    n = len(result.repeats)
    lines = [
        f"{result.backend}: {result.clients} clients x {result.requests_per_client} requests "
        f"(think {result.think_s:g} s) on {result.layers} layers, {result.workers} server "
        f"process(es) ({result.http_stack}), {n} repeats; errors "
        f"{result.errors}{' ' + str(result.error_kinds) if result.error_kinds else ''}; "
        f"{result.cpus} CPUs, load average before "
        + " ".join(f"{x:.1f}" for x in result.load_average_before),
    ]
    for i, r in enumerate(result.repeats):
        per_request = 1e3 * r.server_cpu_s / max(r.requests, 1)
        lines.append(
            f"  repeat {i}: {r.seconds:.1f} s ({r.requests / max(r.seconds, 1e-9):.0f} req/s), "
            f"errors {r.errors}, layer p99 {r.layer_p99_ms:.0f} ms; server CPU "
            f"{r.server_cpu_s:.1f} s ({per_request:.1f} ms/request), load generator CPU "
            f"{r.client_cpu_s:.1f} s; load average " + " ".join(f"{x:.1f}" for x in r.load_average)
        )
        in_app = ", ".join(f"{route} {ms:.0f}" for route, ms in r.in_app_ms.items())
        lines.append(
            "    in the app (mean ms): "
            + (in_app or "not measured (each server process keeps its own /metrics)")
        )
    lines.append(f"  median over repeats: {result.seconds:.1f} s per repeat")
    lines.append("  kind          requests  errors   4xx   p50 ms   p99 ms   max ms")
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
    parser.add_argument("--repeats", type=int, default=3, help="drives of every client")
    parser.add_argument(
        "--think", type=float, default=0.0, help="mean seconds a client pauses between requests"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes (curvprof serve --workers)"
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="another checkout (e.g. a git worktree of an earlier commit) to serve beside "
        "this one on the same store, the two driven in turn repeat by repeat",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="curvprof-load-") as tmp:
        database: AbstractContextManager[str]
        if args.backend == "sqlite":
            database = nullcontext(f"sqlite:///{Path(tmp) / 'load.db'}")
        else:
            from bench.live import fresh_pg_database

            pg = os.environ.get("CURVPROF_TEST_PG_URL")
            if pg is None:
                print("postgres: CURVPROF_TEST_PG_URL is not set")
                return 2
            database = fresh_pg_database(pg)
        plan = LoadPlan(
            backend=args.backend,
            clients=args.clients,
            requests=args.requests,
            layers=args.layers,
            seed=args.seed,
            repeats=args.repeats,
            think_s=args.think,
            workers=args.workers,
        )
        with database as db:
            if args.against is None:
                results = [run_load(db, Path(tmp), plan)]
                printed, saved = report(results[0]), asdict(results[0])
            else:
                ours, theirs = run_paired_load(db, Path(tmp), plan, args.against.resolve())
                results = [ours, theirs]
                printed = paired_report(ours, theirs, args.against)
                saved = {"this": asdict(ours), "against": asdict(theirs)}
                saved["against_checkout"] = str(args.against)
    print(printed)
    if args.out:
        args.out.write_text(json.dumps(saved, indent=2) + "\n")
    return 0 if all(result.errors == 0 for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
