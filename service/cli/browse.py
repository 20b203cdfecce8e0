"""Client commands over what the service stores: ``batch`` (a checkpoint series as one
batch), ``summary``, ``plot``, ``preconditioner``, ``checkpoints`` and ``logs``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from api_schemas import TERMINAL_STATES
from service.cli import CliError
from service.cli.output import exit_code, fmt, print_json, print_table
from service.cli.remote import (
    _client,
    add_job_options,
    client_parser,
    follow,
    job_request,
    upload_if_file,
)


def register(subparsers: Any) -> None:
    batch = client_parser(subparsers, "batch", "submit many checkpoints (a series) as one batch")
    batch.add_argument("checkpoints", nargs="+", help="checkpoint ids, zoo:<arch>, files or dirs")
    batch.add_argument("--config", help="architecture config JSON for uploaded weight files")
    add_job_options(batch)
    batch.add_argument(
        "--steps", help="training step of each checkpoint, comma-separated, in the same order"
    )
    batch.add_argument("--idempotency-key")
    batch.add_argument("--wait", action="store_true", help="follow every job until it is done")
    batch.set_defaults(func=_batch)

    summary = client_parser(subparsers, "summary", "alpha, gamma, s by layer kind over jobs")
    summary.add_argument("--job-id", action="append", default=[], help="repeatable (all if none)")
    summary.set_defaults(func=_summary)

    plot = client_parser(subparsers, "plot", "write a PNG: one layer, or s vs alpha*gamma")
    plot.add_argument("layer_id", nargs="?", type=int, help="a stored layer id")
    plot.add_argument("--identity", action="store_true", help="s vs alpha*gamma of --job-id")
    plot.add_argument("--job-id", action="append", default=[], help="repeatable, for --identity")
    plot.add_argument("--kind", help="layer kinds for --identity, comma-separated")
    plot.add_argument("--output", "-o", required=True, type=Path, help="the PNG file to write")
    plot.set_defaults(func=_plot)

    precond = client_parser(subparsers, "preconditioner", "a job's T(sigma; alpha) parameters")
    precond.add_argument("job", help="job id or a unique prefix of it")
    precond.set_defaults(func=_preconditioner)

    checkpoints = client_parser(subparsers, "checkpoints", "list uploaded checkpoints")
    checkpoints.set_defaults(func=_checkpoints)

    logs = client_parser(subparsers, "logs", "a job's log lines")
    logs.add_argument("job", help="job id or a unique prefix of it")
    logs.add_argument("-f", "--follow", action="store_true", help="until the job finishes")
    logs.add_argument("--poll", type=float, default=1.0, help="seconds between polls with -f")
    logs.set_defaults(func=_logs)


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


def _batch(args: argparse.Namespace) -> int:
    steps = parse_steps(args.steps, len(args.checkpoints))
    with _client(args) as client:
        spec = job_request(args, client)
        spec["checkpoint_ids"] = [upload_if_file(client, c, args.config) for c in args.checkpoints]
        spec["steps"] = steps
        batch = client.batch(spec, idempotency_key=args.idempotency_key)
        if args.json and not args.wait:
            print_json(batch)
            return 0
        if not args.json:
            print(batch.id)
            for job in batch.jobs:
                print(f"  {job.id} {job.spec.checkpoint_id} step {fmt(job.step)}", flush=True)
        if not args.wait:
            return 0
        return max(follow(client, job.id, as_json=args.json) for job in batch.jobs)


def _summary(args: argparse.Namespace) -> int:
    with _client(args) as client:
        summary = client.summary([client.resolve_job_id(j) for j in args.job_id] or None)
    if args.json:
        print_json(summary)
        return 0
    print_table(
        ("kind", "n", "alpha", "sd", "n_a", "gamma", "sd", "n_g", "s", "sd", "n_s"),
        (
            (
                r.kind,
                r.n,
                r.alpha_mean,
                r.alpha_sd,
                r.alpha_n,
                r.gamma_mean,
                r.gamma_sd,
                r.gamma_n,
                r.s_mean,
                r.s_sd,
                r.s_n,
            )
            for r in summary.rows
        ),
    )
    return 0


def _plot(args: argparse.Namespace) -> int:
    if args.identity == (args.layer_id is not None):
        raise CliError("give a layer id or --identity (with --job-id), not both")
    with _client(args) as client:
        if args.identity:
            job_ids = [client.resolve_job_id(j) for j in args.job_id]
            png = client.identity_plot(job_ids, args.kind)
        else:
            png = client.layer_plot(args.layer_id)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(png)
    if args.json:
        print_json({"output": str(args.output), "bytes": len(png)})
    else:
        print(f"wrote {args.output}")
    return 0


def _preconditioner(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.preconditioner(client.resolve_job_id(args.job))
    if args.json:
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


def _checkpoints(args: argparse.Namespace) -> int:
    with _client(args) as client:
        items = list(client.iter_checkpoints())
    if args.json:
        for item in items:
            print_json(item)
        return 0
    print_table(
        ("id", "format", "arch", "size", "filename", "created"),
        (
            (
                c.id,
                c.format,
                c.architecture,
                c.size,
                c.filename,
                c.created_at.isoformat(timespec="seconds"),
            )
            for c in items
        ),
    )
    return 0


def _logs(args: argparse.Namespace) -> int:
    """Print the lines; with ``-f`` keep polling until the job is finished and every line
    is printed, then exit with the job's state (1 if failed or cancelled)."""
    with _client(args) as client:
        job_id = client.resolve_job_id(args.job)
        after: int | None = None
        while True:
            page = client.job_logs(job_id, after=after)
            for line in page.lines:
                if args.json:
                    print_json(line)
                else:
                    at = line.at.isoformat(timespec="seconds")
                    print(f"{at} {line.level:7} {line.message}", flush=True)
                after = line.id
            if not args.follow:
                return 0
            if page.state in TERMINAL_STATES and not page.lines:
                return exit_code(page.state)
            if not page.lines:
                time.sleep(args.poll)
