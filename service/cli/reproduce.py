"""``curvprof reproduce``: train the zoo on offline data, profile it through a running service
as one batch, and build the paper comparison from the store (docs/reproduction.md)."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli import CliError
from service.cli.params import SETTINGS

# (arch, data, epochs): the paper's families on data that ships with Python and scikit-learn.
MODELS = (
    ("vgg", "digits", 3),
    ("resnet", "digits", 3),
    ("mlp", "digits", 8),
    ("vit", "digits", 10),
    ("gpt", "text", 2),
)
PAPER_DATA = Path(__file__).resolve().parents[2] / "data" / "paper-data"


def reproduce(
    url: Annotated[
        str | None,
        typer.Option(
            envvar="CURVPROF_URL", help="a running `curvprof serve` (default: start one here)"
        ),
    ] = None,
    token: Annotated[str | None, typer.Option(envvar="CURVPROF_TOKEN")] = None,
    data_dir: Path = Path("curvprof-data"),
    out: Path = Path("docs/reproduction"),
    batch_size: int = SETTINGS["batch_size"].default,
    text_batch_size: Annotated[int, typer.Option(help="windows of 64 characters")] = 256,
    top_k: int = SETTINGS["top_k"].default,
    lanczos: Annotated[int, typer.Option("--lanczos", "--lanczos-steps")] = SETTINGS[
        "lanczos_steps"
    ].default,
    seed: int = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="the results JSON on stdout instead of the report")
    ] = False,
) -> int:
    """The paper's tables and figure, from the store (docs/reproduction.md)."""
    # imported on use: `curvprof --help` stays free of torch and Ray
    from service.reproduce import alpha_by_kind, identity_summary, markdown_report, refit_paper_data
    from workers.train import train

    models_dir = data_dir.resolve() / "models"
    checkpoints: dict[str, Path] = {}
    for arch, data, epochs in MODELS:
        out = models_dir / f"{arch}-{data}-e{epochs}-s{seed}"
        if not (out / "model.safetensors").is_file():
            print(f"training {arch} on {data} ({epochs} epochs)", file=sys.stderr)
            train(arch, data, epochs=epochs, out_dir=out, seed=seed, progress=sys.stderr.isatty())
        checkpoints[arch] = out
    with ExitStack() as stack:
        client = stack.enter_context(_connect(url, token, data_dir, stack))
        ids = {arch: _upload(client, path) for arch, path in checkpoints.items()}
        common = {
            "top_k": top_k,
            "lanczos_steps": lanczos,
            "dtype": "float64",
            "seed": seed,
        }
        vision = [ids[a] for a, data, _ in MODELS if data == "digits"]
        batch = client.batch(
            {
                "checkpoint_ids": vision,
                "dataset": "digits",
                "loss": "cross_entropy",
                "batch_size": batch_size,
                **common,
            }
        )
        text = client.submit(
            {
                "checkpoint_id": ids["gpt"],
                "dataset": "text",
                "loss": "lm",
                "batch_size": text_batch_size,
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
    out.mkdir(parents=True, exist_ok=True)
    (out / "identity.png").write_bytes(identity_png.content)
    (out / "report.md").write_text(markdown_report(kinds, identity, refit, jobs))
    results = {"jobs": jobs, "alpha_by_kind": kinds, "identity": identity, "refit": refit}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if as_json:
        print(json.dumps(results, default=str))
    else:
        print((out / "report.md").read_text())
        print(f"wrote {out}/report.md, results.json, identity.png")
    return 0


def _connect(url: str | None, token: str | None, data_dir: Path, stack: ExitStack) -> Any:
    from service.client import CurvprofClient

    if url:
        return CurvprofClient(url, token=token, timeout=120)
    # imported on use: `curvprof --help` stays free of torch and Ray
    from service.embedded import EmbeddedServer
    from service.settings import Settings
    from workers.execution import init_ray, shutdown_ray

    init_ray(None)
    stack.callback(shutdown_ray)
    server = stack.enter_context(EmbeddedServer(Settings(data_dir=data_dir.resolve())))
    print(f"started the service in-process at {server.url}", file=sys.stderr)
    return server.client(timeout=120)


def _upload(client: Any, checkpoint: Path) -> str:
    config = json.loads((checkpoint / "config.json").read_text())
    return str(client.upload_checkpoint(checkpoint / "model.safetensors", config).id)


def _follow(client: Any, job_id: str) -> Any:
    from service.cli.output import JobProgressView

    view = JobProgressView(job_id[:12])
    try:
        return client.wait(job_id, timeout=6 * 3600, poll=1.0, on_progress=view.show)
    finally:
        view.close()


# the commands, in the order `curvprof --help` lists them (service.cli.app registers them)
COMMANDS = (reproduce,)
