"""``curvprof reproduce``: train the zoo on offline data, profile it through a running service
as one batch, and build the paper comparison from the store (docs/reproduction.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from service.cli import CliError

# (arch, data, epochs): the paper's families on data that ships with Python and scikit-learn.
MODELS = (
    ("vgg", "digits", 3),
    ("resnet", "digits", 3),
    ("mlp", "digits", 8),
    ("vit", "digits", 10),
    ("gpt", "text", 2),
)
PAPER_DATA = Path(__file__).resolve().parents[2] / "data" / "paper-data"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("reproduce", help="the paper's tables and figure, from the store")
    p.add_argument(
        "--url",
        default=os.environ.get("CURVPROF_URL"),
        help="a running `curvprof serve` (default: start one in-process)",
    )
    p.add_argument("--token", default=os.environ.get("CURVPROF_TOKEN"))
    p.add_argument("--data-dir", type=Path, default=Path("curvprof-data"))
    p.add_argument("--out", type=Path, default=Path("docs/reproduction"))
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--text-batch-size", type=int, default=256, help="windows of 64 characters")
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--lanczos", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_reproduce)


def _reproduce(args: argparse.Namespace) -> int:
    from service.reproduce import alpha_by_kind, identity_summary, markdown_report, refit_paper_data
    from workers.train import train

    models_dir = args.data_dir.resolve() / "models"
    checkpoints: dict[str, Path] = {}
    for arch, data, epochs in MODELS:
        out = models_dir / f"{arch}-{data}-e{epochs}-s{args.seed}"
        if not (out / "model.safetensors").is_file():
            print(f"training {arch} on {data} ({epochs} epochs)", file=sys.stderr)
            train(arch, data, epochs=epochs, out_dir=out, seed=args.seed)
        checkpoints[arch] = out
    with ExitStack() as stack:
        client = stack.enter_context(_connect(args, stack))
        ids = {arch: _upload(client, path) for arch, path in checkpoints.items()}
        common = {
            "top_k": args.top_k,
            "lanczos_steps": args.lanczos,
            "dtype": "float64",
            "seed": args.seed,
        }
        vision = [ids[a] for a, data, _ in MODELS if data == "digits"]
        batch = client.batch(
            {
                "checkpoint_ids": vision,
                "dataset": "digits",
                "loss": "cross_entropy",
                "batch_size": args.batch_size,
                **common,
            }
        )
        text = client.submit(
            {
                "checkpoint_id": ids["gpt"],
                "dataset": "text",
                "loss": "lm",
                "batch_size": args.text_batch_size,
                **common,
            }
        )
        jobs = [j.id for j in batch.jobs] + [text.id]
        finished = [_follow(client, job_id) for job_id in jobs]
        failed = [j for j in finished if j.state != "succeeded"]
        if failed:
            raise CliError(f"job {failed[0].id} {failed[0].state}: {failed[0].error}")
        rows = [row for job_id in jobs for row in client.layers(job_id=job_id)]
        identity_png = client.http.get("/v1/plots/identity", params={"jobs": ",".join(jobs)})
        identity_png.raise_for_status()
    kinds = alpha_by_kind(rows)
    identity = identity_summary(rows)
    refit = refit_paper_data(PAPER_DATA)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "identity.png").write_bytes(identity_png.content)
    (args.out / "report.md").write_text(markdown_report(kinds, identity, refit, jobs))
    results = {"jobs": jobs, "alpha_by_kind": kinds, "identity": identity, "refit": refit}
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print((args.out / "report.md").read_text())
    print(f"wrote {args.out}/report.md, results.json, identity.png")
    return 0


def _connect(args: argparse.Namespace, stack: ExitStack) -> Any:
    from service.client import CurvprofClient

    if args.url:
        return CurvprofClient(args.url, token=args.token, timeout=120)
    from service.embedded import EmbeddedServer
    from service.settings import Settings
    from workers.execution import init_ray, shutdown_ray

    init_ray(None)
    stack.callback(shutdown_ray)
    server = stack.enter_context(EmbeddedServer(Settings(data_dir=args.data_dir.resolve())))
    print(f"started the service in-process at {server.url}", file=sys.stderr)
    return server.client(timeout=120)


def _upload(client: Any, checkpoint: Path) -> str:
    config = json.loads((checkpoint / "config.json").read_text())
    return str(client.upload_checkpoint(checkpoint / "model.safetensors", config).id)


def _follow(client: Any, job_id: str) -> Any:
    from tqdm import tqdm

    with tqdm(total=0, unit="layer", file=sys.stderr, desc=job_id[:8]) as bar:

        def show(job: Any) -> None:
            bar.total = job.progress.total
            bar.set_postfix_str(job.architecture or "")
            bar.update(job.progress.done - bar.n)

        return client.wait(job_id, timeout=6 * 3600, poll=1.0, on_progress=show)
