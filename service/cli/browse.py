"""Client commands over what the service stores: ``batch`` (a checkpoint series as one
batch), ``summary``, ``plot``, ``preconditioner``, ``checkpoints`` and ``logs``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from api_schemas import TERMINAL_STATES
from service.cli import CliError
from service.cli.output import emit, exit_code, fmt, print_json, print_listing, print_table
from service.cli.params import (
    ClientOptions,
    FollowFlag,
    JobArgument,
    JobLabels,
    MeasureOptions,
    options,
)
from service.cli.remote import (
    CHECKPOINT_HELP,
    ConfigOption,
    IdempotencyKey,
    connect,
    follow,
    job_request,
    upload_if_file,
)

CHECKPOINT_COLUMNS = (
    ("id", "id"),
    ("format", "format"),
    ("arch", "architecture"),
    ("size", "size"),
    ("filename", "filename"),
    ("created", "created_at"),
)
SUMMARY_COLUMNS = (
    ("kind", "kind"),
    ("n", "n"),
    *(
        column
        for q in ("alpha", "gamma", "s")
        for column in ((q, f"{q}_mean"), ("sd", f"{q}_sd"), (f"n_{q[0]}", f"{q}_n"))
    ),
)

JobIds = Annotated[list[str] | None, typer.Option(help="job id or prefix (repeatable)")]


def parse_steps(text: str | None, n: int) -> list[int] | None:
    if text is None:
        return None
    try:
        steps = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CliError(f"--steps must be comma-separated integers, got {text!r}") from None
    if len(steps) != n:
        raise CliError(f"--steps has {len(steps)} values for {n} checkpoints")
    return steps


@options(client=ClientOptions, measure=MeasureOptions, labels=JobLabels)
def batch(
    checkpoints: Annotated[list[str], typer.Argument(help=CHECKPOINT_HELP)],
    client: ClientOptions,
    measure: MeasureOptions,
    labels: JobLabels,
    config: ConfigOption = None,
    steps: Annotated[
        str | None,
        typer.Option(help="training step of each checkpoint, comma-separated, in order"),
    ] = None,
    idempotency_key: IdempotencyKey = None,
    wait: Annotated[bool, typer.Option(help="follow every job until it is done")] = False,
) -> int:
    """Submit many checkpoints (a series) as one batch."""
    step_list = parse_steps(steps, len(checkpoints))
    with connect(client) as api:
        spec = job_request(measure, labels, api, checkpoints[0])
        spec["checkpoint_ids"] = [upload_if_file(api, c, config) for c in checkpoints]
        spec["steps"] = step_list
        created = api.batch(spec, idempotency_key=idempotency_key)
        if client.json and not wait:
            print_json(created)
            return 0
        if not client.json:
            print(created.id)
            for job in created.jobs:
                print(f"  {job.id} {job.spec.checkpoint_id} step {fmt(job.step)}", flush=True)
        if not wait:
            return 0
        return max(follow(api, job.id, as_json=client.json) for job in created.jobs)


@options(client=ClientOptions)
def summary(client: ClientOptions, job_id: JobIds = None) -> int:
    """Alpha, gamma, s by layer kind over jobs (all jobs if none is given)."""
    with connect(client) as api:
        result = api.summary([api.resolve_job_id(j) for j in job_id or []] or None)
    if client.json:
        print_json(result)
        return 0
    print_listing(result.rows, SUMMARY_COLUMNS)
    return 0


@options(client=ClientOptions)
def checkpoints(client: ClientOptions) -> int:
    """List uploaded checkpoints (every page)."""
    with connect(client) as api:
        items = list(api.iter_checkpoints())
    print_listing(items, CHECKPOINT_COLUMNS, client.json)
    return 0


@options(client=ClientOptions)
def plot(
    client: ClientOptions,
    output: Annotated[Path, typer.Option("--output", "-o", help="the PNG file to write")],
    layer_id: Annotated[int | None, typer.Argument(help="a stored layer id")] = None,
    identity: Annotated[bool, typer.Option(help="s vs alpha*gamma of --job-id")] = False,
    job_id: JobIds = None,
    kind: Annotated[str | None, typer.Option(help="layer kinds for --identity")] = None,
) -> int:
    """Write a PNG: one layer, or s vs alpha*gamma (--identity)."""
    if identity == (layer_id is not None):
        raise CliError("give a layer id or --identity (with --job-id), not both")
    with connect(client) as api:
        if layer_id is None:
            png = api.identity_plot([api.resolve_job_id(j) for j in job_id or []], kind)
        else:
            png = api.layer_plot(layer_id)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(png)
    emit({"output": str(output), "bytes": len(png)}, client.json, f"wrote {output}")
    return 0


@options(client=ClientOptions)
def preconditioner(job: JobArgument, client: ClientOptions) -> int:
    """A job's T(sigma; alpha) parameters, per layer and mode."""
    with connect(client) as api:
        result = api.preconditioner(api.resolve_job_id(job))
    if client.json:
        print_json(result)
        return 0
    print_table(
        ("layer_id", "name", "kind", "alpha", "mode", "kappa", "damping", "sigma_scale"),
        (
            (
                layer.layer_id,
                layer.name,
                layer.kind,
                layer.alpha,
                p.mode,
                p.kappa,
                p.damping,
                p.sigma_scale,
            )
            for layer in result.layers
            for p in layer.params
        ),
    )
    return 0


@options(client=ClientOptions)
def logs(
    job: JobArgument,
    client: ClientOptions,
    follow_job: FollowFlag = False,
    poll: Annotated[float, typer.Option(help="seconds between polls with -f")] = 1.0,
) -> int:
    """A job's log lines; with -f, until the job finishes and every line is printed, then
    the exit status follows its state (1 if failed or cancelled)."""
    with connect(client) as api:
        job_id = api.resolve_job_id(job)
        after: int | None = None
        while True:
            page = api.job_logs(job_id, after=after)
            for line in page.lines:
                if client.json:
                    print_json(line)
                else:
                    print(f"{fmt(line.at)} {line.level:7} {line.message}", flush=True)
                after = line.id
            if not follow_job:
                return 0
            if page.state in TERMINAL_STATES and not page.lines:
                return exit_code(page.state)
            if not page.lines:
                time.sleep(poll)


# the commands, in the order `curvprof --help` lists them (service.cli.app registers them)
COMMANDS = (
    batch,
    summary,
    plot,
    preconditioner,
    checkpoints,
    logs,
)
