"""Service commands: ``serve`` and the REST client commands (submit, jobs, status, layers,
cancel, export). The server URL: ``--url`` or ``CURVPROF_URL``; token: ``CURVPROF_TOKEN``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from api_schemas import LayerBrief, LayerRow
from service.cli import CliError

DEFAULT_URL = "http://127.0.0.1:8000"
TABLE_COLUMNS = ("id", "name", "kind", "alpha", "r2_alpha", "gamma", "s", "k", "wall_seconds")


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the REST service (embedded DB and Ray)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data-dir", help="everything the service writes (default ./curvprof-data)")
    serve.add_argument("--db-url", help="database URL (default: SQLite under the data dir)")
    serve.add_argument("--ray-address", help="join this Ray cluster (default: a local Ray)")
    serve.set_defaults(func=_serve)

    def client_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text)
        p.add_argument("--url", default=os.environ.get("CURVPROF_URL", DEFAULT_URL))
        p.add_argument("--token", default=os.environ.get("CURVPROF_TOKEN"))
        return p

    submit = client_parser("submit", "submit a profiling job to the service")
    submit.add_argument(
        "checkpoint",
        help="checkpoint id, zoo:<arch>, a .safetensors/.pt2/.zip file, a training directory "
        "(config.json + model.safetensors) or a Hugging Face directory",
    )
    submit.add_argument("--config", help="architecture config JSON file (for an uploaded file)")
    submit.add_argument(
        "--data", default="digits", help="built-in name, dataset id, data file or .txt"
    )
    submit.add_argument(
        "--loss",
        choices=["cross_entropy", "mse", "lm", "model"],
        default=None,
        help="default: the loss that fits the model's head; model: a Hugging Face model's "
        "own outputs.loss from the labels",
    )
    submit.add_argument("--micro-batch-size", type=int, default=None)
    submit.add_argument("--tokenizer", help="tokenizer.json for a .txt --data file")
    submit.add_argument("--seq-len", type=int, default=128, help="tokens per .txt window")
    submit.add_argument("--batch-size", type=int, default=2048)
    submit.add_argument("--top-k", type=int, default=20)
    submit.add_argument("--lanczos-steps", type=int, default=20)
    submit.add_argument("--dtype", default="float64")
    submit.add_argument("--layers", help="fnmatch glob on layer names")
    submit.add_argument("--seed", type=int, default=0)
    submit.add_argument("--idempotency-key")
    submit.add_argument("--wait", action="store_true", help="show progress until done")
    submit.set_defaults(func=_submit)

    jobs = client_parser("jobs", "list jobs")
    jobs.add_argument("--state")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.set_defaults(func=_jobs)

    status = client_parser("status", "show a job's progress (live bar until it finishes)")
    status.add_argument("job")
    status.add_argument("--no-follow", action="store_true")
    status.set_defaults(func=_status)

    layers = client_parser("layers", "query stored layers (table)")
    for flag in ("job-id", "checkpoint-id", "arch", "kind", "flag", "sort"):
        layers.add_argument(f"--{flag}")
    for flag in ("alpha-min", "alpha-max", "gamma-min", "gamma-max", "s-min", "s-max", "r2-min"):
        layers.add_argument(f"--{flag}", type=float)
    layers.add_argument("--limit", type=int, default=100)
    layers.add_argument("--json", action="store_true", help="one JSON object per line")
    layers.add_argument(
        "--full",
        action="store_true",
        help="with --json: every array of each layer, not the brief row",
    )
    layers.set_defaults(func=_layers)

    cancel = client_parser("cancel", "cancel a job")
    cancel.add_argument("job")
    cancel.set_defaults(func=_cancel)

    export = client_parser("export", "export the layer table as CSV")
    export.add_argument("--job-id")
    export.add_argument("--kind")
    export.add_argument("--output", "-o", help="file (default: stdout)")
    export.set_defaults(func=_export)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    overrides: dict[str, Any] = {}
    for key in ("data_dir", "db_url", "ray_address"):
        if getattr(args, key):
            overrides[key] = getattr(args, key)
    settings = Settings(**overrides)
    from workers.execution import init_ray

    init_ray(settings.ray_address, num_cpus=settings.ray_num_cpus)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


@contextmanager
def _client(args: argparse.Namespace) -> Iterator[Any]:
    from service.client import ApiError, CurvprofClient

    client = CurvprofClient(args.url, token=args.token)
    try:
        yield client
    except ApiError as exc:
        raise CliError(str(exc)) from exc
    except Exception as exc:
        import httpx

        if isinstance(exc, httpx.HTTPError):
            raise CliError(f"cannot reach {args.url}: {exc}") from exc
        raise
    finally:
        client.close()


def _submit(args: argparse.Namespace) -> int:
    from service.artifacts import BUILTIN_DATASETS

    with _client(args) as client:
        checkpoint = _upload_checkpoint(client, args.checkpoint, args.config)
        spec: dict[str, Any] = {
            "checkpoint_id": checkpoint,
            "loss": args.loss,
            "batch_size": args.batch_size,
            "micro_batch_size": args.micro_batch_size,
            "top_k": args.top_k,
            "lanczos_steps": args.lanczos_steps,
            "dtype": args.dtype,
            "layers": args.layers,
            "seed": args.seed,
        }
        if args.data in BUILTIN_DATASETS:
            spec["dataset"] = args.data
        elif Path(args.data).suffix.lower() == ".txt":
            spec["dataset_id"] = _upload_text(client, args)
        elif Path(args.data).is_file():
            spec["dataset_id"] = client.upload_dataset(args.data).id
        else:
            spec["dataset_id"] = args.data
        job = client.submit(spec, idempotency_key=args.idempotency_key)
        print(job.id)
        if args.wait:
            return _follow(client, job.id)
    return 0


def _upload_checkpoint(client: Any, checkpoint: str, config_file: str | None) -> str:
    """The checkpoint id: ``checkpoint`` itself, or the id of what it names on disk (a file;
    a training directory's weights with its config; a Hugging Face directory as a .zip)."""
    import tempfile

    from service.hf_archive import ArchiveRejected, write_archive

    path = Path(checkpoint)
    config = json.loads(Path(config_file).read_text()) if config_file else None
    if path.is_file():
        return str(client.upload_checkpoint(path, config).id)
    if not path.is_dir():
        return checkpoint
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CliError(f"{path} has no config.json (not a checkpoint directory)")
    try:
        dir_config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CliError(f"{config_path} is not valid JSON: {exc}") from None
    if isinstance(dir_config, dict) and "arch" in dir_config:  # written by `curvprof train`
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise CliError(f"{path} has no model.safetensors")
        return str(client.upload_checkpoint(weights, config or dir_config).id)
    with tempfile.TemporaryDirectory(prefix="curvprof-hf-") as tmp:
        archive = Path(tmp) / f"{path.resolve().name or 'model'}.zip"
        try:
            write_archive(path, archive)
        except ArchiveRejected as exc:
            raise CliError(str(exc)) from None
        return str(client.upload_checkpoint(archive).id)


def _upload_text(client: Any, args: argparse.Namespace) -> str:
    """Plain text, tokenized here by the model directory's tokenizer.json (or --tokenizer)
    into next-token windows, uploaded as .npz: the service receives token ids only."""
    import tempfile

    import numpy as np

    from workers.data.text import tokenize_text

    tokenizer = args.tokenizer or str(Path(args.checkpoint) / "tokenizer.json")
    ds = tokenize_text(args.data, tokenizer, args.seq_len)
    with tempfile.TemporaryDirectory(prefix="curvprof-text-") as tmp:
        out = Path(tmp) / f"{Path(args.data).stem}.npz"
        np.savez(out, input_ids=ds.inputs.numpy(), labels=ds.targets.numpy())
        return str(client.upload_dataset(out).id)


def _follow(client: Any, job_id: str) -> int:
    from tqdm import tqdm

    bar = tqdm(total=0, unit="layer", desc=job_id[:12], file=sys.stderr)

    def show(job: Any) -> None:
        bar.total = job.progress.total
        bar.n = job.progress.done
        bar.set_postfix_str(job.state)
        bar.refresh()

    try:
        job = client.wait(job_id, timeout=7 * 24 * 3600, poll=0.5, on_progress=show)
    finally:
        bar.close()
    print(f"{job.id} {job.state}" + (f": {job.error}" if job.error else ""))
    return 0 if job.state == "succeeded" else 1


def _jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        page = client.jobs(state=args.state, limit=args.limit)
        print(f"{'id':32}  {'state':10} {'checkpoint':20} created")
        for job in page.items:
            created = job.timings.created_at.isoformat(timespec="seconds")
            print(f"{job.id:32}  {job.state:10} {job.spec.checkpoint_id[:20]:20} {created}")
    return 0


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if not args.no_follow:
            return _follow(client, args.job)
        job = client.job(args.job)
        print(f"{job.id} {job.state} {job.progress.done}/{job.progress.total}")
        for layer in job.progress.layers:
            print(f"  {layer.name:40} {layer.state:10} {layer.error or ''}")
    return 0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _layers(args: argparse.Namespace) -> int:
    filters = {
        key: getattr(args, key)
        for key in (
            "job_id",
            "checkpoint_id",
            "arch",
            "kind",
            "flag",
            "sort",
            "alpha_min",
            "alpha_max",
            "gamma_min",
            "gamma_max",
            "s_min",
            "s_max",
            "r2_min",
        )
        if getattr(args, key) is not None
    }
    with _client(args) as client:
        rows: list[LayerRow | LayerBrief] = []
        query = client.layers if args.full else client.layer_briefs
        for row in query(page_size=min(args.limit, 500), **filters):
            rows.append(row)
            if len(rows) >= args.limit:
                break
    if args.json:
        for row in rows:
            print(row.model_dump_json())
        return 0
    table = [list(TABLE_COLUMNS)] + [[_fmt(getattr(r, c)) for c in TABLE_COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(TABLE_COLUMNS))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel(args.job)
    print(f"{job.id} {job.state}")
    return 0


def _export(args: argparse.Namespace) -> int:
    filters = {k: v for k, v in (("job_id", args.job_id), ("kind", args.kind)) if v}
    with _client(args) as client:
        text = client.export_csv(**filters)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
