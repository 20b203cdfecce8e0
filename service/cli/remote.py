"""Service commands: ``serve`` and the REST client commands (submit, jobs, status, layers,
cancel, export). The server URL: ``--url`` or ``CURVPROF_URL``; token: ``CURVPROF_TOKEN``.
Every client command takes ``--json`` (JSON on stdout, one document per line)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, get_args

import typer

from api_schemas import LayerBrief, LayerKind, LayerRow
from api_schemas.jobs import BuiltinDataset
from service.cli import CliError
from service.cli.output import (
    JobProgressView,
    emit,
    exit_code,
    job_line,
    print_json,
    print_listing,
    print_table,
)
from service.cli.params import (
    ClientOptions,
    FollowFlag,
    JobArgument,
    JobLabels,
    LabelFilters,
    MeasureOptions,
    options,
    service_settings,
)
from service.logging_config import LogFormat

JOB_COLUMNS = (
    ("id", "id"),
    ("state", "state"),
    ("name", "name"),
    ("step", "step"),
    ("tags", "tags"),
    ("checkpoint", "spec.checkpoint_id"),
    ("created", "timings.created_at"),
)
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
LAYER_KINDS: tuple[str, ...] = get_args(LayerKind)
BUILTIN_DATASETS: tuple[str, ...] = get_args(BuiltinDataset)
CHECKPOINT_HELP = (
    "checkpoint id, zoo:<arch>, a .safetensors/.pt2/.zip file, a training directory "
    "(config.json + model.safetensors) or a Hugging Face directory"
)
ConfigOption = Annotated[
    str | None, typer.Option("--config", help="architecture config JSON for an uploaded file")
]
IdempotencyKey = Annotated[str | None, typer.Option("--idempotency-key")]


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: Annotated[
        str | None, typer.Option(help="everything the service writes (default ./curvprof-data)")
    ] = None,
    db_url: Annotated[
        str | None, typer.Option(help="database URL (default: SQLite under the data dir)")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="join this Ray cluster (default: a local Ray)")
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            envvar="CURVPROF_LOG_FORMAT",
            help="the serve log: text, or one JSON object per line",
        ),
    ] = "text",
    log_level: Annotated[str, typer.Option(envvar="CURVPROF_LOG_LEVEL")] = "info",
    as_json: Annotated[bool, typer.Option("--json", help="the same as --log-format json")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="server processes on the one port; one of them runs the jobs "
            "(default CURVPROF_WORKERS, 1)",
        ),
    ] = None,
) -> int:
    """Run the REST service (embedded DB and Ray)."""
    import uvicorn

    from service.app import create_app
    from service.logging_config import log_config
    from service.store import db

    given = {"data_dir": data_dir, "db_url": db_url, "ray_address": ray_address}
    settings = service_settings(**given)
    workers = workers or settings.workers
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": log_config("json" if as_json else log_format, log_level),
        "timeout_keep_alive": settings.keep_alive_s,
    }
    if workers > 1:
        # each worker process builds its settings from the environment; the schema is
        # migrated once here, not by N processes at once; the leader starts its own Ray
        os.environ.update({f"CURVPROF_{k.upper()}": v for k, v in given.items() if v})
        db.upgrade(settings.database_url)
        from service import worker_processes

        config = uvicorn.Config("service.app:create_app", factory=True, workers=workers, **common)
        with contextlib.suppress(KeyboardInterrupt):
            worker_processes.run(config)
        return 0
    if settings.run_jobs:
        # imported here: an API-only replica (CURVPROF_RUN_JOBS=false) never imports Ray
        from workers.execution import init_ray

        init_ray(settings.ray_address, num_cpus=settings.ray_num_cpus)
    uvicorn.run(create_app(settings), **common)
    return 0


def job_request(
    measure: MeasureOptions, labels: JobLabels, client: Any, checkpoint: str
) -> dict[str, Any]:
    """The spec fields the job options give (uploading a data file if one is named)."""
    spec: dict[str, Any] = {
        **measure.settings(),
        "loss": measure.loss,
        "name": labels.name,
        "tags": labels.tag or [],
    }
    if labels.zoo_config:
        spec["zoo_config"] = json.loads(Path(labels.zoo_config).read_text())
    data = measure.data or "digits"
    if data in BUILTIN_DATASETS:
        spec["dataset"] = data
    elif Path(data).suffix.lower() == ".txt":
        spec["dataset_id"] = _upload_text(client, measure, data, checkpoint)
    elif Path(data).is_file():
        spec["dataset_id"] = client.upload_dataset(data).id
    else:
        spec["dataset_id"] = data
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


@contextmanager
def connect(opts: ClientOptions) -> Iterator[Any]:
    """A client of the service; its refusals and an unreachable server are one-line errors."""
    from service.client import ApiError, CurvprofClient

    client = CurvprofClient(opts.url, token=opts.token)
    try:
        yield client
    except ApiError as exc:
        raise CliError(str(exc)) from exc
    except Exception as exc:
        import httpx

        if isinstance(exc, httpx.HTTPError):
            raise CliError(f"cannot reach {opts.url}: {exc}") from exc
        raise
    finally:
        client.close()


@options(client=ClientOptions, measure=MeasureOptions, labels=JobLabels)
def submit(
    checkpoint: Annotated[str, typer.Argument(help=CHECKPOINT_HELP)],
    client: ClientOptions,
    measure: MeasureOptions,
    labels: JobLabels,
    config: ConfigOption = None,
    step: Annotated[int | None, typer.Option(help="training step of the checkpoint")] = None,
    idempotency_key: IdempotencyKey = None,
    wait: Annotated[bool, typer.Option(help="show progress until done")] = False,
) -> int:
    """Submit a profiling job to the service."""
    with connect(client) as api:
        spec = job_request(measure, labels, api, checkpoint)
        spec["checkpoint_id"] = upload_if_file(api, checkpoint, config)
        spec["step"] = step
        job = api.submit(spec, idempotency_key=idempotency_key)
        if not wait:
            emit(job, client.json, job.id)
            return 0
        if not client.json:
            print(job.id, flush=True)
        return follow(api, job.id, as_json=client.json)


def _upload_text(client: Any, measure: MeasureOptions, data: str, checkpoint: str) -> str:
    """Plain text, tokenized here by the model directory's tokenizer.json (or --tokenizer)
    into next-token windows, uploaded as .npz: the service receives token ids only."""
    # imported on use: `curvprof --help` stays free of torch and Ray
    import tempfile

    import numpy as np

    from workers.data.text import tokenize_text

    tokenizer = measure.tokenizer or str(Path(checkpoint) / "tokenizer.json")
    ds = tokenize_text(data, tokenizer, measure.seq_len)
    with tempfile.TemporaryDirectory(prefix="curvprof-text-") as tmp:
        out = Path(tmp) / f"{Path(data).stem}.npz"
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


@options(client=ClientOptions)
def status(
    job: JobArgument,
    client: ClientOptions,
    follow_job: FollowFlag = True,
) -> int:
    """Show a job's progress (live until it finishes)."""
    with connect(client) as api:
        job_id = api.resolve_job_id(job)
        if follow_job:
            return follow(api, job_id, as_json=client.json)
        found = api.job(job_id)
    if client.json:
        print_json(found)
        return exit_code(found.state)
    print(job_line(found))
    if found.progress.layers:
        print_table(
            ("layer", "state", "error"),
            ((layer.name, layer.state, layer.error or "") for layer in found.progress.layers),
        )
    return exit_code(found.state)


@options(client=ClientOptions, labels=LabelFilters)
def jobs(
    client: ClientOptions,
    labels: LabelFilters,
    state: Annotated[str | None, typer.Option(help="state(s), comma-separated")] = None,
    name: Annotated[str | None, typer.Option(help="jobs of this name")] = None,
    batch_id: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many jobs")] = None,
) -> int:
    """List jobs (every page; --limit to stop early)."""
    filters = {"state": state, "batch_id": batch_id, "name": name, **labels.query()}
    with connect(client) as api:
        found = list(islice(api.iter_jobs(page_size=min(limit or 200, 200), **filters), limit))
    print_listing(found, JOB_COLUMNS, client.json)
    return 0


def checked_kinds(kind: str | None) -> str | None:
    """``--kind`` as given, after checking each comma-separated kind is a layer kind."""
    for value in (kind or "").split(","):
        if value.strip() and value.strip() not in LAYER_KINDS:
            raise CliError(
                f"unknown layer kind {value.strip()!r}; one of: {', '.join(LAYER_KINDS)}"
            )
    return kind


KindOption = Annotated[
    str | None, typer.Option(help=f"layer kind(s), comma-separated: {', '.join(LAYER_KINDS)}")
]
Bound = Annotated[float | None, typer.Option()]


@options(client=ClientOptions, labels=LabelFilters)
def layers(
    client: ClientOptions,
    labels: LabelFilters,
    job_id: Annotated[str | None, typer.Option(help="job id(s) or prefixes, comma-separated")] = (
        None
    ),
    checkpoint_id: Annotated[str | None, typer.Option()] = None,
    arch: Annotated[str | None, typer.Option()] = None,
    kind: KindOption = None,
    flag: Annotated[str | None, typer.Option()] = None,
    sort: Annotated[
        str | None, typer.Option(help="column, -column for descending (e.g. --sort -alpha)")
    ] = None,
    alpha_min: Bound = None,
    alpha_max: Bound = None,
    gamma_min: Bound = None,
    gamma_max: Bound = None,
    s_min: Bound = None,
    s_max: Bound = None,
    r2_min: Bound = None,
    job_name: Annotated[str | None, typer.Option(help="jobs of this name")] = None,
    limit: int = 100,
    full: Annotated[
        bool, typer.Option(help="with --json: every array of each layer, not the brief row")
    ] = False,
) -> int:
    """Query stored layers (a table; --json for rows)."""
    given = {
        "checkpoint_id": checkpoint_id,
        "arch": arch,
        "kind": checked_kinds(kind),
        "flag": flag,
        "sort": sort,
        "alpha_min": alpha_min,
        "alpha_max": alpha_max,
        "gamma_min": gamma_min,
        "gamma_max": gamma_max,
        "s_min": s_min,
        "s_max": s_max,
        "r2_min": r2_min,
        "job_name": job_name,
        **labels.query(),
    }
    filters = {key: value for key, value in given.items() if value is not None}
    with connect(client) as api:
        if job_id:
            filters["job_id"] = ",".join(
                api.resolve_job_id(j) for j in job_id.split(",") if j.strip()
            )
        query = api.layers if full else api.layer_briefs
        rows: list[LayerRow | LayerBrief] = list(
            islice(query(page_size=min(limit, 500), **filters), limit)
        )
    print_listing(rows, [(c, c) for c in TABLE_COLUMNS], client.json)
    return 0


@options(client=ClientOptions)
def cancel(job: JobArgument, client: ClientOptions) -> int:
    """Cancel a job (status 2 if it has already finished)."""
    with connect(client) as api:
        found = api.cancel(api.resolve_job_id(job))
    emit(found, client.json, f"{found.id} {found.state}")
    return 0


@options(client=ClientOptions)
def export(
    client: ClientOptions,
    job_id: Annotated[str | None, typer.Option(help="job id or a unique prefix of it")] = None,
    kind: KindOption = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="default: stdout")] = None,
) -> int:
    """Export the layer table as CSV (--json: the full rows)."""
    filters = {"kind": checked_kinds(kind)} if kind else {}
    with connect(client) as api:
        if job_id:
            filters["job_id"] = api.resolve_job_id(job_id)
        if client.json:  # the full rows, one JSON object per line
            text = "".join(row.model_dump_json() + "\n" for row in api.layers(**filters))
        else:
            text = api.export_csv(**filters)
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


# the commands, in the order `curvprof --help` lists them (service.cli.app registers them)
COMMANDS = (
    serve,
    submit,
    jobs,
    status,
    layers,
    cancel,
    export,
)
