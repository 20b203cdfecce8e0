"""Local commands: ``train`` a zoo model and ``profile`` a checkpoint on one machine, thin
commands over the library (``workers.train``, ``workers.execution.local``): no service."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from service.cli import CliError
from service.cli.params import JsonFlag, MeasureOptions, choice_of, options, zoo_archs


def train(
    arch: Annotated[
        str, typer.Argument(**choice_of(zoo_archs, "architecture", "workers.zoo.ARCHS"))
    ],
    out: Annotated[Path, typer.Option(help="checkpoint directory to write")],
    data: Annotated[
        str | None, typer.Option(help="built-in data (default: digits, text for gpt)")
    ] = None,
    epochs: int = 3,
    seed: int = 0,
    lr: float | None = None,
    as_json: JsonFlag = False,
) -> int:
    """Train a zoo model on built-in data (CPU)."""
    # imported on use: `curvprof --help` stays free of torch and Ray
    from workers.train import DATA_FOR
    from workers.train import train as train_model

    data = data or DATA_FOR[arch][0]
    metrics = train_model(
        arch, data, epochs=epochs, out_dir=out, seed=seed, lr=lr, progress=sys.stderr.isatty()
    )
    if as_json:
        from service.cli.output import print_json

        print_json({"out": str(out), "arch": arch, "data": data, **metrics})
        return 0
    test = metrics.get("test_accuracy")
    print(
        f"wrote {out} ({arch} on {data}, {epochs} epochs"
        + (f", test accuracy {test:.3f})" if isinstance(test, float) else ")")
    )
    return 0


@options(measure=MeasureOptions)
def profile(
    model: Annotated[
        str, typer.Argument(help="train dir, config .json (+ --weights), HF dir or .pt2")
    ],
    measure: MeasureOptions,
    weights: Annotated[
        str | None, typer.Option(help="weights for a config .json (.safetensors, .pt)")
    ] = None,
    device: Annotated[str, typer.Option(help="auto (a GPU when there is one), cpu, cuda")] = (
        "auto"
    ),
    out: Annotated[Path | None, typer.Option(help="write the profile JSON here")] = None,
    plots: Annotated[Path | None, typer.Option(help="write PNG plots into this directory")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="the profile JSON on stdout instead of the table")
    ] = False,
) -> int:
    """Profile a model's layers on one machine. Progress shows the engine's phase
    (gradients, SVD, K-FAC, then h_k, Lanczos and the fits of each layer) and an ETA;
    --quick is a fast first look on a CPU."""
    # imported on use: `curvprof --help` stays free of torch and Ray
    from api_schemas import ProfileSettings
    from service.cli.output import LayerProgressView, print_profile_table
    from service.settings import Settings
    from workers.execution.local import profile_prepared, resolve_device, write_atomically
    from workers.execution.prepare import DataSource, ModelSource, prepare

    if measure.data is None:
        raise CliError("profile needs --data (a data file or a built-in set)")
    prepared = prepare(
        ProfileSettings(**measure.settings()),
        ModelSource(path=model, weights=weights, allow_pickle=True),
        DataSource(measure.data, tokenizer=measure.tokenizer, seq_len=measure.seq_len),
        loss=measure.loss,
        device=resolve_device(device),
        limits=Settings().intake_limits,  # the service's CURVPROF_MAX_* variables, same defaults
    )
    progress = LayerProgressView(quiet=quiet, total=len(prepared.names))
    try:
        result = profile_prepared(prepared, progress=progress, on_phase=progress.on_phase)
    finally:
        progress.close()
    if as_json:
        print(result.model_dump_json())
    else:
        print_profile_table(result.layers)
    written: list[str] = []
    if out:
        write_atomically(out, result.model_dump_json(indent=1).encode())
        written.append(f"wrote {out}")
    if plots:
        from service.plots import write_plots  # matplotlib, only when plots are asked for

        paths = write_plots(result.layers, plots)
        written.append(f"wrote {len(paths)} plots to {plots}")
    if not as_json:
        for line in written:
            print(line)
    return 0


# the commands, in the order `curvprof --help` lists them (service.cli.app registers them)
COMMANDS = (
    train,
    profile,
)
