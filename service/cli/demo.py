"""``curvprof demo``: the main job end to end on the embedded defaults.

Trains a small CNN on scikit-learn's digits (once), starts the service in-process (SQLite
under the data directory, a loopback-only local Ray, the local artifact store), uploads the
checkpoint, submits a profiling job, follows its progress, and prints the stored result.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="train, serve, profile and query: the main job")
    demo.add_argument("--data-dir", type=Path, default=Path("curvprof-data"))
    demo.add_argument("--arch", choices=["mlp", "vgg", "resnet", "vit"], default="vgg")
    demo.add_argument("--epochs", type=int, default=3)
    demo.add_argument("--batch-size", type=int, default=2048)
    demo.add_argument("--top-k", type=int, default=20)
    demo.add_argument("--lanczos", type=int, default=20)
    demo.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from service.embedded import EmbeddedServer
    from service.plots import write_plots
    from service.report import format_table
    from service.settings import Settings
    from workers.execution import init_ray, shutdown_ray

    data_dir: Path = args.data_dir.resolve()
    checkpoint = _trained_checkpoint(args, data_dir)
    settings = Settings(data_dir=data_dir)
    print(f"service: data under {data_dir} (SQLite, artifacts), local Ray on 127.0.0.1")
    init_ray(None)
    try:
        with EmbeddedServer(settings) as server, server.client() as client:
            config = _read_json(checkpoint / "config.json")
            uploaded = client.upload_checkpoint(checkpoint / "model.safetensors", config)
            job = client.submit(
                {
                    "checkpoint_id": uploaded.id,
                    "dataset": "digits",
                    "loss": "cross_entropy",
                    "batch_size": args.batch_size,
                    "top_k": args.top_k,
                    "lanczos_steps": args.lanczos,
                    "dtype": args.dtype,
                    "seed": args.seed,
                }
            )
            print(f"job {job.id}: {job.state}")
            with tqdm(total=0, unit="layer", file=sys.stderr, desc="profiling") as bar:

                def show(current: Any) -> None:
                    bar.total = current.progress.total
                    bar.update(current.progress.done - bar.n)

                done = client.wait(job.id, timeout=3600, on_progress=show)
            if done.state != "succeeded":
                print(f"job {job.id} {done.state}: {done.error}", file=sys.stderr)
                return 1
            order = {lp.name: i for i, lp in enumerate(done.progress.layers)}
            rows = sorted(client.layers(job_id=job.id), key=lambda r: order.get(r.name, 0))
            layers = [r.profile() for r in rows]
            print(format_table(layers))
            print()
            for row in client.summary([job.id]).rows:
                print(
                    f"{row.kind:>8}: alpha {_fmt(row.alpha_mean)} ± {_fmt(row.alpha_sd)}, "
                    f"gamma {_fmt(row.gamma_mean)}, s {_fmt(row.s_mean)} (n={row.n})"
                )
            plots = write_plots(layers, data_dir / "plots" / job.id)
            nodes = sorted({r.node_id or "?" for r in rows})
            print(f"\n{len(rows)} layers stored in {settings.database_url} (computed on {nodes})")
            print(f"plots: {plots[-1].parent}")
            print(
                f"query: curvprof serve --data-dir {data_dir} & curvprof layers --job-id {job.id}"
            )
    finally:
        shutdown_ray()
    return 0


def _trained_checkpoint(args: argparse.Namespace, data_dir: Path) -> Path:
    from workers.train import train

    out = data_dir / "models" / f"{args.arch}-digits-e{args.epochs}-s{args.seed}"
    if not (out / "model.safetensors").is_file():
        print(f"training {args.arch} on digits for {args.epochs} epochs → {out}")
        metrics = train(args.arch, "digits", epochs=args.epochs, out_dir=out, seed=args.seed)
        print(f"test accuracy {metrics.get('test_accuracy', float('nan')):.3f}")
    return out


def _read_json(path: Path) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
