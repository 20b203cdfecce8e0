"""Case 5: ``GET /v1/layers`` with filters at 10⁵ stored layers, SQLite and PostgreSQL.

Rows go in directly through the store layer (``LayerResultRow`` bulk inserts after
``db.upgrade``), spread over jobs, archs and kinds with realistic compressed profile blobs.
Queries go through a real uvicorn server on 127.0.0.1 (``create_app`` with the job runner
off) with httpx; p50/p99 are over every request of a fixed mix of filtered, sorted, keyset-
paginated queries. The time inside ``queries.query_layers`` alone is measured too.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KINDS = ["conv", "attn_q", "attn_k", "attn_v", "attn_o", "mlp_up", "mlp_down", "head", "linear"]
ARCHS = ["vgg", "gpt", "mlp", "resnet", "vit"]


def template_profiles(n: int = 64) -> list[bytes]:
    """Compressed blobs of real LayerProfiles (a tiny MLP profiled once), renamed n ways."""
    import torch

    from service.store.codec import pack_profile
    from workers.curvature.profile import profile_model
    from workers.zoo import build_model

    torch.manual_seed(0)
    model = build_model({"arch": "mlp", "widths": [64, 64]})
    x, y = torch.randn(128, 64), torch.randint(0, 10, (128,))
    prof = profile_model(model, x, y, top_k=20, lanczos_steps=20)
    base = prof.layers[0]
    rng = random.Random(0)
    return [
        pack_profile(
            base.model_copy(
                update={
                    "name": f"layer.{i}",
                    "kind": KINDS[i % len(KINDS)],
                    "alpha": rng.uniform(0, 3),
                }
            )
        )
        for i in range(n)
    ]


def populate(url: str, n_rows: int, blobs: list[bytes], *, per_job: int = 1000) -> float:
    """``alembic upgrade head`` then n_rows layer rows in n_rows/per_job jobs; seconds taken."""
    from sqlalchemy import insert

    from api_schemas import JobSpec
    from service.store import db, job_summary
    from service.store.models import (
        JobLayerRow,
        JobRow,
        LayerProfileRow,
        LayerResultRow,
        utcnow,
    )

    started = time.perf_counter()
    db.upgrade(url)
    engine = db.make_engine(url)
    rng = np.random.default_rng(0)
    now = utcnow()
    n_jobs = max(1, n_rows // per_job)
    with engine.begin() as conn:
        conn.execute(
            insert(JobRow),
            [
                {
                    "id": f"job{j:05d}",
                    "state": "succeeded",
                    "spec_json": JobSpec(
                        checkpoint_id=f"ckpt{j % 50}", dataset="digits"
                    ).model_dump_json(),
                    "checkpoint_id": f"ckpt{j % 50}",
                    "dataset_ref": "builtin:digits",
                    "arch": ARCHS[j % len(ARCHS)],
                    "runs": 1,
                    "created_at": now,
                }
                for j in range(n_jobs)
            ],
        )
    chunk = 5000
    for lo in range(0, n_rows, chunk):
        rows = []
        for i in range(lo, min(lo + chunk, n_rows)):
            j = i // per_job
            a, g = float(rng.uniform(0, 3)), float(rng.uniform(0, 2))
            rows.append(
                {
                    "id": i + 1,
                    "job_id": f"job{j:05d}",
                    "layer_name": f"layer.{i % per_job}",
                    "kind": KINDS[i % len(KINDS)],
                    "checkpoint_id": f"ckpt{j % 50}",
                    "arch": ARCHS[j % len(ARCHS)],
                    "alpha": a,
                    "gamma": g,
                    "s": a * g,
                    "s_eig": float(rng.uniform(0, 2)),
                    "predicted_s": a * g,
                    "triangle_relative_error": float(rng.uniform(0, 0.2)),
                    "r2_alpha": float(rng.uniform(0.5, 1)),
                    "r2_gamma": float(rng.uniform(0.5, 1)),
                    "pr_h": float(rng.uniform(1, 10)),
                    "flags": json.dumps(["low_r2"] if rng.uniform() < 0.1 else []),
                    "k": 20,
                    "node_id": f"node{i % 4}",
                    "hostname": "bench",
                    "wall_seconds": float(rng.uniform(0.1, 5)),
                    "data_seed": 0,
                    "data_indices": "[]",
                    "dtype": "float64",
                    "top_k": 20,
                    "versions": "{}",
                    "created_at": now,
                }
            )
        with engine.begin() as conn:
            conn.execute(insert(LayerResultRow), rows)
            conn.execute(
                insert(LayerProfileRow),
                [{"layer_id": row["id"], "blob": blobs[row["id"] % len(blobs)]} for row in rows],
            )
            conn.execute(
                insert(JobLayerRow),
                [
                    {
                        "job_id": row["job_id"],
                        "position": (row["id"] - 1) % per_job,
                        "layer_name": row["layer_name"],
                        "state": "succeeded",
                        "attempts": 1,
                    }
                    for row in rows
                ],
            )
    with db.make_session_factory(engine)() as session:  # the jobs have ended: as the runner does
        for j in range(n_jobs):
            job_summary.fix(session, f"job{j:05d}")
        session.commit()
    engine.dispose()
    return time.perf_counter() - started


QUERIES = [
    "/v1/layers?kind=conv&alpha_min=0.5&alpha_max=1.5&sort=-alpha&limit=100",
    "/v1/layers?arch=gpt&r2_min=0.9&limit=100",
    "/v1/layers?job_id=job00042&sort=gamma&limit=100",
    "/v1/layers?kind=mlp_up,attn_q&s_min=1&sort=-s&limit=50",
    "/v1/layers?checkpoint_id=ckpt7&flag=low_r2&limit=100",
    "/v1/layers?node_id=node2&gamma_min=1.5&sort=-wall_seconds&limit=100",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(url: str, data_dir: Path) -> Iterator[str]:
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(data_dir=data_dir, db_url=url, run_jobs=False))
    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.time() + 60
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        th.join(timeout=10)


VIEWS = ("brief", "full")


def _latencies(client: Any, rounds: int, view: str) -> tuple[list[float], dict[str, float], int]:
    """Every query of QUERIES (plus its second page) ``rounds`` times in one view."""
    lat: list[float] = []
    per_query: dict[str, list[float]] = {q: [] for q in QUERIES}
    pages = 0
    suffix = f"&view={view}"
    for q in QUERIES:  # warm-up (first touch, plan caches)
        client.get(q + suffix).raise_for_status()
    for _ in range(rounds):
        for q in QUERIES:
            t0 = time.perf_counter()
            r = client.get(q + suffix)
            dt = time.perf_counter() - t0
            r.raise_for_status()
            lat.append(dt)
            per_query[q].append(dt)
            cursor = r.json().get("next_cursor")
            if cursor:  # the next page of the same query
                t0 = time.perf_counter()
                r2 = client.get(q + suffix + f"&cursor={cursor}")
                lat.append(time.perf_counter() - t0)
                r2.raise_for_status()
                pages += 1
    return lat, {q: 1e3 * statistics.median(v) for q, v in per_query.items()}, pages


def measure(url: str, data_dir: Path, rounds: int) -> dict[str, Any]:
    """p50/p99 of the query mix per view (``brief``: indexed columns; ``full``: every array)."""
    import httpx

    from service.store import db, queries

    out: dict[str, Any] = {}
    with server(url, data_dir) as base, httpx.Client(base_url=base, timeout=60) as client:
        for view in VIEWS:
            lat, per_query, pages = _latencies(client, rounds, view)
            arr = np.array(lat) * 1e3
            out[view] = {
                "requests": len(lat),
                "second_pages": pages,
                "p50_ms": float(np.percentile(arr, 50)),
                "p99_ms": float(np.percentile(arr, 99)),
                "max_ms": float(arr.max()),
                "per_query_p50_ms": per_query,
            }
    # the same query functions the router calls, without HTTP/JSON
    engine = db.make_engine(url)
    sessions = db.make_session_factory(engine)
    q0 = queries.LayerFilters(kind=["conv"], alpha_min=0.5, alpha_max=1.5)
    for view, fn in (("brief", queries.query_layer_briefs), ("full", queries.query_layers)):
        inner: list[float] = []
        with sessions() as session:
            for _ in range(max(5, rounds // 2)):
                t0 = time.perf_counter()
                fn(session, q0, sort="-alpha", limit=100)  # type: ignore[operator]
                inner.append(time.perf_counter() - t0)
        out[view]["query_p50_ms"] = 1e3 * statistics.median(inner)
    engine.dispose()
    return out


@contextlib.contextmanager
def postgres() -> Iterator[str | None]:
    script = REPO / "tests" / "pg.sh"
    if shutil.which("pg_ctl") is None and not Path("/usr/local/bin/pg_ctl").exists():
        yield None
        return
    out = subprocess.run(
        ["bash", str(script), "start"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        yield None
        return
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in out.stdout.split("\n")
        if line.startswith("export ")
    )
    try:
        yield env["CURVPROF_TEST_PG_URL"]
    finally:
        subprocess.run(["bash", str(script), "stop", env["CURVPROF_TEST_PG_DIR"]], check=False)


def run_case(
    n_rows: int, rounds: int, *, backends: tuple[str, ...] = ("sqlite", "postgresql")
) -> dict[str, Any]:
    blobs = template_profiles()
    results: dict[str, Any] = {
        "rows": n_rows,
        "queries": QUERIES,
        "via": "uvicorn on 127.0.0.1 + httpx",
    }
    tmp = Path(tempfile.mkdtemp(prefix="curvprof-bench-store-"))
    try:
        if "sqlite" in backends:
            url = f"sqlite:///{tmp / 'bench.db'}"
            insert_s = populate(url, n_rows, blobs)
            results["sqlite"] = {"insert_seconds": insert_s, **measure(url, tmp / "sqlite", rounds)}
        if "postgresql" in backends:
            with postgres() as pg_url:
                if pg_url is None:
                    results["postgresql"] = {"error": "no PostgreSQL server could be started"}
                else:
                    insert_s = populate(pg_url, n_rows, blobs)
                    results["postgresql"] = {
                        "insert_seconds": insert_s,
                        **measure(pg_url, tmp / "pg", rounds),
                    }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["threads"] = os.cpu_count()
    return results
