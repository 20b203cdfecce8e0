"""``curvprof demo``: the main job end to end on the embedded defaults.

Trains a small CNN on scikit-learn's digits (once), starts the service in-process (SQLite
under the data directory, a loopback-only local Ray, the local artifact store), uploads the
checkpoint, submits a profiling job, follows its progress, and prints the stored result.
With ``--serve`` the service stays up afterwards (the dashboard's address is printed) until
Ctrl-C; without it, the last lines are the commands that query the stored result later.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.params import JobLabels, MeasureOptions, choice_of, digits_archs, options

DEFAULT_PORT = 8000


@options(measure=MeasureOptions)
def demo(
    measure: MeasureOptions,
    data_dir: Annotated[Path, typer.Option(help="everything the demo writes")] = Path(
        "curvprof-data"
    ),
    arch: Annotated[
        str, typer.Option(**choice_of(digits_archs, "architecture", "the digits models"))
    ] = "vgg",
    epochs: int = 3,
    serve: Annotated[
        bool, typer.Option(help="keep the service up afterwards, until Ctrl-C")
    ] = False,
    port: Annotated[int, typer.Option(help="the service's port with --serve")] = DEFAULT_PORT,
    as_json: Annotated[
        bool, typer.Option("--json", help="the job and its stored layers as JSON on stdout")
    ] = False,
) -> int:
    """Train, serve, profile and query: the main job. --quick for a first look on a CPU;
    --serve keeps the service (and its dashboard) up afterwards until Ctrl-C."""
    # imported on use: `curvprof --help` stays free of torch and Ray
    from service.cli.output import JobProgressView, print_json, print_profile_table
    from service.cli.remote import job_request
    from service.embedded import EmbeddedServer, free_port
    from service.settings import Settings
    from workers.execution import init_ray, shutdown_ray

    say = _stderr if as_json else _stdout  # flushed: a log shows the address while it waits
    data_dir = data_dir.resolve()
    checkpoint = _trained_checkpoint(arch, epochs, measure.seed, data_dir, say)
    settings = Settings(data_dir=data_dir)
    say(f"service: data under {data_dir} (SQLite, artifacts), local Ray on 127.0.0.1")
    init_ray(None)
    try:
        with (
            EmbeddedServer(settings, port=_port(port) if serve else free_port()) as server,
            server.client() as client,
        ):
            config = _read_json(checkpoint / "config.json")
            uploaded = client.upload_checkpoint(checkpoint / "model.safetensors", config)
            spec = job_request(measure, JobLabels(name="demo"), client, str(checkpoint))
            job = client.submit({**spec, "checkpoint_id": uploaded.id})
            say(f"job {job.id}: {job.state}")
            view = JobProgressView(job.id[:12])
            try:
                done = client.wait(job.id, timeout=3600, on_progress=view.show)
            finally:
                view.close()
            if done.state != "succeeded":
                print(f"job {job.id} {done.state}: {done.error}", file=sys.stderr)
                return 1
            order = {lp.name: i for i, lp in enumerate(done.progress.layers)}
            rows = sorted(client.layers(job_id=job.id), key=lambda r: order.get(r.name, 0))
            if as_json:
                print_json(done)
                for row in rows:
                    print_json(row)
            else:
                _report(client, job.id, [r.profile() for r in rows], print_profile_table)
            _plots_and_storage(rows, data_dir, job.id, settings.database_url, say)
            if serve:
                _serve_until_interrupted(server.url, job.id, say)
            else:
                _next_steps(data_dir, job.id, say)
    finally:
        shutdown_ray()
    return 0


def _report(client: Any, job_id: str, layers: list[Any], print_profile_table: Any) -> None:
    print_profile_table(layers)
    print()
    for row in client.summary([job_id]).rows:
        print(
            f"{row.kind:>8}: alpha {_fmt(row.alpha_mean)} ± {_fmt(row.alpha_sd)}, "
            f"gamma {_fmt(row.gamma_mean)}, s {_fmt(row.s_mean)} (n={row.n})"
        )


def _plots_and_storage(rows: list[Any], data_dir: Path, job_id: str, db: str, say: Any) -> None:
    from service.plots import write_plots

    plots = write_plots([r.profile() for r in rows], data_dir / "plots" / job_id)
    nodes = sorted({r.node_id or "?" for r in rows})
    say(f"\n{len(rows)} layers stored in {db} (computed on {nodes})")
    say(f"plots: {plots[-1].parent}")


def _serve_until_interrupted(url: str, job_id: str, say: Any) -> None:
    say(f"\nthe service is up: dashboard {url}/ui/jobs/{job_id}, API {url}/v1/docs")
    say(f"query it from another shell: curvprof layers --url {url} --job-id {job_id[:12]}")
    say("Ctrl-C stops it")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it the same way
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("stopped")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _next_steps(data_dir: Path, job_id: str, say: Any) -> None:
    """The service stops with the demo: the exact commands that query the stored job later."""
    say(
        "\nthe demo's service has stopped; the results stay in the data directory. Next:\n"
        f"  curvprof demo --serve --data-dir {data_dir}   # the same, then keeps the "
        "service and its dashboard up\n"
        "or start the service yourself (it answers after 15-25 s, once Ray is up):\n"
        f"  curvprof serve --data-dir {data_dir} &\n"
        f"  until curl -sf http://127.0.0.1:{DEFAULT_PORT}/readyz >/dev/null; do sleep 1; done\n"
        f"  curvprof layers --job-id {job_id[:12]}\n"
        f"  open http://127.0.0.1:{DEFAULT_PORT}/ui/jobs/{job_id}"
    )


def _port(wanted: int) -> int:
    """``wanted``, or a free port when another process holds it."""
    import socket

    from service.embedded import free_port

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", wanted))
        except OSError:
            return free_port()
    return wanted


def _trained_checkpoint(arch: str, epochs: int, seed: int, data_dir: Path, say: Any) -> Path:
    # imported on use: `curvprof --help` stays free of torch and Ray
    from workers.train import train

    out = data_dir / "models" / f"{arch}-digits-e{epochs}-s{seed}"
    if not (out / "model.safetensors").is_file():
        say(f"training {arch} on digits for {epochs} epochs → {out}")
        metrics = train(
            arch, "digits", epochs=epochs, out_dir=out, seed=seed, progress=sys.stderr.isatty()
        )
        say(f"test accuracy {metrics.get('test_accuracy', float('nan')):.3f}")
    return out


def _read_json(path: Path) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _stdout(*parts: Any) -> None:
    print(*parts, flush=True)


def _stderr(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# the commands, in the order `curvprof --help` lists them (service.cli.app registers them)
COMMANDS = (demo,)
