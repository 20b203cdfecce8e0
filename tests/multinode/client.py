"""The test's client, run inside the namespace (``ip netns exec NS python -m
tests.multinode.client ...``) so that its traffic stays on the namespace's loopback.

``ready``: wait for ``/readyz``. ``run``: submit a job spec, write one JSON line of progress per
poll to ``--progress``, and when the job ends write to ``--out`` the job, every stored layer as
``GET /v1/layers/{id}`` returns it, and the raw ``layer_results`` / ``job_layers`` rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from service.client import CurvprofClient


def _ready(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    with CurvprofClient(args.url, timeout=5) as client:
        while time.monotonic() < deadline:
            if client.ready():
                return 0
            time.sleep(0.25)
    print(f"{args.url}/readyz not ready after {args.timeout} s", file=sys.stderr)
    return 1


def _stored_rows(db_url: str, job_id: str) -> dict[str, list[dict[str, Any]]]:
    from sqlalchemy import select

    from service.store import db
    from service.store.models import JobLayerRow, LayerResultRow

    engine = db.make_engine(db_url)
    try:
        with db.make_session_factory(engine)() as s:
            results = s.scalars(select(LayerResultRow).where(LayerResultRow.job_id == job_id))
            progress = s.scalars(select(JobLayerRow).where(JobLayerRow.job_id == job_id))
            return {
                "layer_results": [
                    {"id": r.id, "layer_name": r.layer_name, "node_id": r.node_id} for r in results
                ],
                "job_layers": [
                    {"layer_name": r.layer_name, "state": r.state, "attempts": r.attempts}
                    for r in progress
                ],
            }
    finally:
        engine.dispose()


def _run(args: argparse.Namespace) -> int:
    spec = json.loads(args.spec)
    progress = Path(args.progress) if args.progress else None
    started = time.monotonic()

    def record(job: Any) -> None:
        if progress is None:
            return
        line = {
            "t": round(time.monotonic() - started, 3),
            "state": job.state,
            "done": job.progress.done,
            "total": job.progress.total,
            "layers": [
                {"name": lp.name, "state": lp.state, "node_id": lp.node_id}
                for lp in job.progress.layers
            ],
        }
        with progress.open("a") as f:  # one whole line per write: the test tails this file
            f.write(json.dumps(line) + "\n")

    with CurvprofClient(args.url, timeout=60) as client:
        job = client.submit(spec)
        done = client.wait(job.id, timeout=args.timeout, poll=0.1, on_progress=record)
        elapsed = time.monotonic() - started
        layers = [
            client.layer(row.id).model_dump(mode="json") for row in client.layers(job_id=job.id)
        ]
    out = {
        "job": done.model_dump(mode="json"),
        "seconds": elapsed,
        "layers": layers,
        **_stored_rows(args.db_url, job.id),
    }
    Path(args.out).write_text(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests.multinode.client")
    sub = parser.add_subparsers(required=True)
    ready = sub.add_parser("ready")
    ready.add_argument("--url", required=True)
    ready.add_argument("--timeout", type=float, default=60.0)
    ready.set_defaults(func=_ready)
    run = sub.add_parser("run")
    run.add_argument("--url", required=True)
    run.add_argument("--db-url", required=True)
    run.add_argument("--spec", required=True, help="JobSpec JSON")
    run.add_argument("--out", required=True)
    run.add_argument("--progress")
    run.add_argument("--timeout", type=float, default=240.0)
    run.set_defaults(func=_run)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
