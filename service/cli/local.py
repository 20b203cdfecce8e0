"""Local commands: ``train`` a zoo model and ``profile`` a checkpoint on one machine."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from service.cli import CliError


def register(subparsers: Any) -> None:
    train = subparsers.add_parser("train", help="train a zoo model on built-in data (CPU)")
    train.add_argument("arch", choices=["mlp", "vgg", "resnet", "vit", "gpt"])
    train.add_argument("--data", default=None, help="built-in data (default: digits, text for gpt)")
    train.add_argument("--epochs", type=int, default=3)
    train.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--lr", type=float, default=None)
    train.set_defaults(func=_train)

    profile = subparsers.add_parser("profile", help="profile a model's layers on one machine")
    profile.add_argument("model", help="train dir, config .json (+ --weights), HF dir or .pt2")
    profile.add_argument("--weights", help="weights for a config .json (.safetensors, .pt)")
    profile.add_argument("--data", required=True, help="data file (.npz/.safetensors) or built-in")
    profile.add_argument(
        "--tokenizer", help="tokenizer.json for a .txt data file (default: the model directory's)"
    )
    profile.add_argument("--seq-len", type=int, default=128, help="tokens per .txt window")
    profile.add_argument(
        "--loss",
        choices=["cross_entropy", "mse", "lm", "model"],
        default=None,
        help="default: the loss that fits the model's head; model: a Hugging Face model's "
        "own outputs.loss from the labels",
    )
    profile.add_argument("--batch-size", type=int, default=2048)
    profile.add_argument("--micro-batch-size", type=int, default=None)
    profile.add_argument("--seed", type=int, default=0)
    profile.add_argument("--top-k", type=int, default=20)
    profile.add_argument("--lanczos", type=int, default=20, help="Lanczos steps (0: none)")
    profile.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    profile.add_argument("--layers", help="fnmatch glob(s) on layer names or kinds")
    profile.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu, cuda"
    )
    profile.add_argument("--variants", default="ef,kron", help="of ggn,ef,kron,mc")
    profile.add_argument(
        "--h-only",
        action="store_true",
        help="h_k without the K x K compressed matrix and residuals (faster on linear layers)",
    )
    profile.add_argument("--out", type=Path, help="write the profile JSON here")
    profile.add_argument("--plots", type=Path, help="write PNG plots into this directory")
    profile.add_argument("--quiet", action="store_true", help="no progress bar")
    profile.set_defaults(func=_profile)


def _train(args: argparse.Namespace) -> int:
    from workers.train import train

    data = args.data or ("text" if args.arch == "gpt" else "digits")
    metrics = train(
        args.arch, data, epochs=args.epochs, out_dir=args.out, seed=args.seed, lr=args.lr
    )
    test = metrics.get("test_accuracy")
    print(
        f"wrote {args.out} ({args.arch} on {data}, {args.epochs} epochs"
        + (f", test accuracy {test:.3f})" if isinstance(test, float) else ")")
    )
    return 0


def _profile(args: argparse.Namespace) -> int:
    import torch

    from api_schemas import ProfileSettings
    from service.cli.output import LayerProgressView
    from service.report import format_table
    from workers.curvature import profile_model
    from workers.execution.prepare import DataSource, ModelSource, prepare

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - {"ggn", "ef", "kron", "mc"})
    if unknown:
        raise CliError(f"unknown variant {unknown[0]!r}; choose from ggn, ef, kron, mc")
    from service.settings import Settings

    limits = Settings().intake_limits  # the service's CURVPROF_MAX_* variables, same defaults
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = ProfileSettings(
        batch_size=args.batch_size,
        micro_batch_size=args.micro_batch_size,
        top_k=args.top_k,
        lanczos_steps=args.lanczos,
        dtype=args.dtype,
        seed=args.seed,
        layers=args.layers,
        variants=variants,
        hvp_diagnostics=not args.h_only,
    )
    prepared = prepare(
        settings,
        ModelSource(path=args.model, weights=args.weights, allow_pickle=True),
        DataSource(args.data, tokenizer=args.tokenizer, seq_len=args.seq_len),
        loss=args.loss,
        device=device,
        limits=limits,
    )
    batch, chosen = prepared.batch, prepared.settings
    progress = LayerProgressView(quiet=args.quiet)

    try:
        profile = profile_model(
            prepared.model,
            batch.inputs,
            batch.targets,
            loss=chosen.loss,
            top_k=chosen.top_k,
            lanczos_steps=chosen.lanczos_steps,
            dtype=torch.float64 if chosen.dtype == "float64" else torch.float32,
            layers=chosen.layers,
            seed=chosen.seed,
            micro_batch_size=chosen.micro_batch_size,
            variants=chosen.variants,
            hvp_diagnostics=chosen.hvp_diagnostics,
            attention_mask=batch.attention_mask,
            progress=progress,
            provenance=prepared.provenance,
        )
    finally:
        progress.close()
    print(format_table(profile.layers))
    if args.out:
        _write_atomically(args.out, profile.model_dump_json(indent=1).encode())
        print(f"wrote {args.out}")
    if args.plots:
        from service.plots import write_plots

        paths = write_plots(profile.layers, args.plots)
        print(f"wrote {len(paths)} plots to {args.plots}")
    return 0


def _write_atomically(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
