"""Service commands: ``serve`` and the REST client commands (submit, jobs, status, layers,
cancel, export). The server URL: ``--url`` or ``CURVPROF_URL``; token: ``CURVPROF_TOKEN``.
Every client command takes ``--json`` (JSON on stdout, one document per line)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, get_args

from api_schemas import Job, LayerBrief, LayerKind, LayerRow
from service.cli import CliError
from service.cli.output import JobProgressView, exit_code, job_line, print_json, print_table

DEFAULT_URL = "http://127.0.0.1:8000"
TABLE_COLUMNS = (
    "id",
    "name",
    "kind",
    "step",
    "alpha",
    "r2_alpha",
    "gamma",
    "s",
    "k",
    "wall_seconds",
)


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the REST service (embedded DB and Ray)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data-dir", help="everything the service writes (default ./curvprof-data)")
    serve.add_argument("--db-url", help="database URL (default: SQLite under the data dir)")
    serve.add_argument("--ray-address", help="join this Ray cluster (default: a local Ray)")
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("CURVPROF_LOG_FORMAT", "text"),
        help="the serve log: text, or one JSON object per line (CURVPROF_LOG_FORMAT)",
    )
    serve.add_argument("--log-level", default=os.environ.get("CURVPROF_LOG_LEVEL", "info"))
    serve.set_defaults(func=_serve)

    submit = client_parser(subparsers, "submit", "submit a profiling job to the service")
    submit.add_argument(
        "checkpoint",
        help="checkpoint id, zoo:<arch>, a .safetensors/.pt2/.zip file, a training directory "
        "(config.json + model.safetensors) or a Hugging Face directory",
    )
    submit.add_argument("--config", help="architecture config JSON file (for an uploaded file)")
    add_job_options(submit)
    submit.add_argument("--step", type=int, help="training step of the checkpoint")
    submit.add_argument("--idempotency-key")
    submit.add_argument("--wait", action="store_true", help="show progress until done")
    submit.set_defaults(func=_submit)

    jobs = client_parser(subparsers, "jobs", "list jobs (every page; --limit to stop early)")
    jobs.add_argument("--state", help="state(s), comma-separated")
    add_label_filters(jobs, name_flag="--name")
    jobs.add_argument("--batch-id")
    jobs.add_argument("--limit", type=int, default=None, help="at most this many jobs")
    jobs.set_defaults(func=_jobs)

    status = client_parser(subparsers, "status", "show a job's progress (live until it finishes)")
    status.add_argument("job", help="job id or a unique prefix of it")
    status.add_argument("--no-follow", action="store_true", help="print once; exit 1 if failed")
    status.set_defaults(func=_status)

    layers = client_parser(subparsers, "layers", "query stored layers (table)")
    for flag in ("job-id", "checkpoint-id", "arch", "kind", "flag"):
        layers.add_argument(f"--{flag}")
    layers.add_argument("--sort", help="column, -column for descending (e.g. --sort -alpha)")
    for flag in ("alpha-min", "alpha-max", "gamma-min", "gamma-max", "s-min", "s-max", "r2-min"):
        layers.add_argument(f"--{flag}", type=float)
    add_label_filters(layers, name_flag="--job-name")
    layers.add_argument("--limit", type=int, default=100)
    layers.add_argument(
        "--full",
        action="store_true",
        help="with --json: every array of each layer, not the brief row",
    )
    layers.set_defaults(func=_layers)

    cancel = client_parser(subparsers, "cancel", "cancel a job")
    cancel.add_argument("job", help="job id or a unique prefix of it")
    cancel.set_defaults(func=_cancel)

    export = client_parser(subparsers, "export", "export the layer table as CSV")
    export.add_argument("--job-id", help="job id or a unique prefix of it")
    export.add_argument("--kind")
    export.add_argument("--output", "-o", help="file (default: stdout)")
    export.set_defaults(func=_export)


def client_parser(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A sub-command talking to the service: --url, --token, --json."""
    p: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text)
    p.add_argument("--url", default=os.environ.get("CURVPROF_URL", DEFAULT_URL))
    p.add_argument("--token", default=os.environ.get("CURVPROF_TOKEN"))
    p.add_argument("--json", action="store_true", help="JSON on stdout, one document per line")
    return p


def add_job_options(p: argparse.ArgumentParser) -> None:
    """Every field of a job spec but the checkpoint (``api_schemas.ProfileRequest``)."""
    p.add_argument("--data", default="digits", help="built-in name, dataset id, data file or .txt")
    p.add_argument(
        "--loss",
        choices=["cross_entropy", "mse", "lm", "model"],
        default=None,
        help="default: the loss that fits the model's head; model: a Hugging Face model's "
        "own outputs.loss from the labels",
    )
    p.add_argument("--tokenizer", help="tokenizer.json for a .txt --data file")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per .txt window")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--micro-batch-size", type=int, default=None)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--lanczos-steps", type=int, default=20)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--layers", help="fnmatch glob on layer names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default="ef,kron", help="of ggn,ef,kron,mc (comma-separated)")
    p.add_argument(
        "--h-only", action="store_true", help="h_k without the K x K diagnostics (faster)"
    )
    p.add_argument("--zoo-config", help="JSON file: architecture config for zoo:<arch>")
    p.add_argument("--name", help="a label for the job(s), e.g. the training run")
    p.add_argument("--tag", action="append", default=[], help="a tag (repeat for several)")


def add_label_filters(p: argparse.ArgumentParser, *, name_flag: str) -> None:
    p.add_argument(name_flag, dest="label_name", help="jobs of this name")
    p.add_argument("--tag", action="append", default=[], help="carrying this tag (repeatable)")
    p.add_argument("--step", type=int, help="at this training step")
    p.add_argument("--step-min", type=int)
    p.add_argument("--step-max", type=int)


def label_filters(args: argparse.Namespace) -> dict[str, Any]:
    values = {
        "tag": args.tag or None,
        "step": args.step,
        "step_min": args.step_min,
        "step_max": args.step_max,
    }
    return {k: v for k, v in values.items() if v is not None}


def job_request(args: argparse.Namespace, client: Any) -> dict[str, Any]:
    """The spec fields the job options give (uploading a data file if one is named)."""
    from service.artifacts import BUILTIN_DATASETS

    spec: dict[str, Any] = {
        "loss": args.loss,
        "batch_size": args.batch_size,
        "micro_batch_size": args.micro_batch_size,
        "top_k": args.top_k,
        "lanczos_steps": args.lanczos_steps,
        "dtype": args.dtype,
        "layers": args.layers,
        "seed": args.seed,
        "variants": [v.strip() for v in args.variants.split(",") if v.strip()],
        "hvp_diagnostics": not args.h_only,
        "name": args.name,
        "tags": args.tag,
    }
    if args.zoo_config:
        spec["zoo_config"] = json.loads(Path(args.zoo_config).read_text())
    if args.data in BUILTIN_DATASETS:
        spec["dataset"] = args.data
    elif Path(args.data).suffix.lower() == ".txt":
        spec["dataset_id"] = _upload_text(client, args)
    elif Path(args.data).is_file():
        spec["dataset_id"] = client.upload_dataset(args.data).id
    else:
        spec["dataset_id"] = args.data
    return spec


def upload_if_file(client: Any, checkpoint: str, config_file: str | None) -> str:
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


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    overrides: dict[str, Any] = {}
    for key in ("data_dir", "db_url", "ray_address"):
        if getattr(args, key):
            overrides[key] = getattr(args, key)
    settings = Settings(**overrides)
    if settings.run_jobs:  # an API-only replica (CURVPROF_RUN_JOBS=false) needs no Ray
        from workers.execution import init_ray

        init_ray(settings.ray_address, num_cpus=settings.ray_num_cpus)
    from service.logging_config import log_config

    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_config=log_config(args.log_format, args.log_level),
    )
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
    with _client(args) as client:
        spec = job_request(args, client)
        spec["checkpoint_id"] = upload_if_file(client, args.checkpoint, args.config)
        spec["step"] = args.step
        job = client.submit(spec, idempotency_key=args.idempotency_key)
        if not args.wait:
            if args.json:
                print_json(job)
            else:
                print(job.id)
            return 0
        if not args.json:
            print(job.id, flush=True)
        return follow(client, job.id, as_json=args.json)


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


def follow(client: Any, job_id: str, *, as_json: bool = False) -> int:
    """Show a job's progress until it finishes; the exit status follows its final state."""
    view = JobProgressView(job_id[:12])
    try:
        job = client.wait(job_id, timeout=7 * 24 * 3600, poll=0.5, on_progress=view.show)
    finally:
        view.close()
    if as_json:
        print_json(job)
    else:
        print(job_line(job))
    return exit_code(job.state)


def _jobs(args: argparse.Namespace) -> int:
    filters = {"state": args.state, "batch_id": args.batch_id, "name": args.label_name}
    filters.update(label_filters(args))
    with _client(args) as client:
        jobs: list[Job] = []
        for job in client.iter_jobs(page_size=min(args.limit or 200, 200), **filters):
            jobs.append(job)
            if args.limit is not None and len(jobs) >= args.limit:
                break
    if args.json:
        for job in jobs:
            print_json(job)
        return 0
    print_table(
        ("id", "state", "name", "step", "tags", "checkpoint", "created"),
        (
            (
                j.id,
                j.state,
                j.name,
                j.step,
                j.tags,
                j.spec.checkpoint_id,
                j.timings.created_at.isoformat(timespec="seconds"),
            )
            for j in jobs
        ),
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job_id = client.resolve_job_id(args.job)
        if not args.no_follow:
            return follow(client, job_id, as_json=args.json)
        job = client.job(job_id)
    if args.json:
        print_json(job)
        return exit_code(job.state)
    print(job_line(job))
    if job.progress.layers:
        print_table(
            ("layer", "state", "error"),
            ((layer.name, layer.state, layer.error or "") for layer in job.progress.layers),
        )
    return exit_code(job.state)


LAYER_KINDS: tuple[str, ...] = get_args(LayerKind)


def _checked_kinds(kind: str | None) -> str | None:
    """``--kind`` as given, after checking each comma-separated kind is a layer kind."""
    for value in (kind or "").split(","):
        if value.strip() and value.strip() not in LAYER_KINDS:
            raise CliError(
                f"unknown layer kind {value.strip()!r}; one of: {', '.join(LAYER_KINDS)}"
            )
    return kind


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
    _checked_kinds(args.kind)
    filters.update(label_filters(args))
    if args.label_name is not None:
        filters["job_name"] = args.label_name
    with _client(args) as client:
        if args.job_id:
            filters["job_id"] = ",".join(
                client.resolve_job_id(j) for j in args.job_id.split(",") if j.strip()
            )
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
    print_table(TABLE_COLUMNS, ([getattr(r, c) for c in TABLE_COLUMNS] for r in rows))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel(client.resolve_job_id(args.job))
    if args.json:
        print_json(job)
    else:
        print(f"{job.id} {job.state}")
    return 0


def _export(args: argparse.Namespace) -> int:
    filters = {"kind": _checked_kinds(args.kind)} if args.kind else {}
    with _client(args) as client:
        if args.job_id:
            filters["job_id"] = client.resolve_job_id(args.job_id)
        if args.json:  # the full rows, one JSON object per line
            text = "".join(row.model_dump_json() + "\n" for row in client.layers(**filters))
        else:
            text = client.export_csv(**filters)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
