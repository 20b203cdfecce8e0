"""The GPU path: whole profiles of a GPT-2-small-sized model and a ResNet-sized CNN.

    python -m bench.gpu [--tiny] [--device cuda] [--dtype float32|float64] [--only gpt,cnn]

* GPT: 12 blocks, d = 768, 12 heads, MLP 3072, context 128, GPT-2's vocabulary (50257)
  with the head tied to the embedding; every matrix (q, k, v, o, up, down per block and the
  head); a measurement batch of 16 sequences × 128 tokens, ``lm`` loss.
* CNN: the zoo's BasicBlock ResNet with ResNet-34's stage layout [3, 4, 6, 3] and widths
  [64, 128, 256, 512] on 3 × 224 × 224 inputs (the zoo has no bottleneck block; this is
  about ResNet-50's parameter count, 21.8 M against 25.6 M), 1000 classes, a batch of 16.
* K = 20 directions and 20 Lanczos steps per matrix; TF32 stays off (the engine's
  measurement mode). Prints seconds per layer and in total.

``--tiny`` shrinks both models to a CPU smoke test (seconds). CUDA is used when available.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from workers.curvature import profile_model
from workers.zoo import build_model


@dataclass(frozen=True)
class Size:
    """One run's models and batches: the GPT and its batch of sequences of ``tokens``, the
    CNN and its batch of ``images`` of side ``image_side``, then K and the Lanczos steps."""

    gpt: dict[str, object]
    sequences: int
    tokens: int
    cnn: dict[str, object]
    images: int
    image_side: int
    top_k: int
    lanczos_steps: int


FULL = Size(
    gpt={"arch": "gpt", "vocab_size": 50257, "block_size": 128, "dim": 768, "depth": 12,
         "heads": 12, "mlp_dim": 3072, "tie_weights": True},
    cnn={"arch": "resnet", "in_channels": 3, "classes": 1000, "widths": [64, 128, 256, 512],
         "blocks": [3, 4, 6, 3], "stem": "imagenet"},
    sequences=16, tokens=128, images=16, image_side=224, top_k=20, lanczos_steps=20,
)  # fmt: skip
TINY = Size(
    gpt={"arch": "gpt", "vocab_size": 64, "block_size": 8, "dim": 16, "depth": 1, "heads": 2,
         "mlp_dim": 32, "tie_weights": True},
    cnn={"arch": "resnet", "in_channels": 3, "classes": 5, "widths": [4, 8], "blocks": [1, 1],
         "stem": "imagenet"},
    sequences=2, tokens=8, images=2, image_side=16, top_k=4, lanczos_steps=4,
)  # fmt: skip


@dataclass
class Timing:
    model: str
    layers: list[tuple[str, str | None, float]]  # name, h_k route, seconds
    total: float


def _inputs(
    name: str, size: Size, device: torch.device
) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    g = torch.Generator().manual_seed(0)
    if name == "gpt":
        model = build_model(size.gpt)
        vocab = int(size.gpt["vocab_size"])  # type: ignore[call-overload]
        x = torch.randint(0, vocab, (size.sequences, size.tokens), generator=g)
        return model.to(device), x.to(device), torch.roll(x, -1, 1).to(device), "lm"
    model = build_model(size.cnn)
    classes = int(size.cnn["classes"])  # type: ignore[call-overload]
    x = torch.randn(size.images, 3, size.image_side, size.image_side, generator=g)
    y = torch.randint(0, classes, (size.images,), generator=g)
    return model.to(device), x.to(device), y.to(device), "cross_entropy"


def profile_timed(name: str, size: Size, device: torch.device, dtype: torch.dtype) -> Timing:
    model, x, y, loss = _inputs(name, size, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    profile = profile_model(model, x, y, loss=loss, top_k=size.top_k,
                            lanczos_steps=size.lanczos_steps, dtype=dtype)  # fmt: skip
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - started
    layers = [(lay.name, lay.route, float(lay.wall_seconds or 0.0)) for lay in profile.layers]
    return Timing(name, layers, total)


def main(argv: Sequence[str] | None = None) -> list[Timing]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models: a CPU smoke test")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--only", default="gpt,cnn", help="comma-separated: gpt, cnn")
    args = parser.parse_args(argv)
    size = TINY if args.tiny else FULL
    device = torch.device(args.device)
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    out = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        timing = profile_timed(name, size, device, dtype)
        print(f"{name} on {device} ({args.dtype}, K = {size.top_k}, "
              f"{size.lanczos_steps} Lanczos steps)")  # fmt: skip
        for layer, route, seconds in timing.layers:
            print(f"  {layer:40s} {route or '-':24s} {seconds:9.3f} s")
        print(f"  {'total':40s} {'':24s} {timing.total:9.3f} s")
        out.append(timing)
    return out


if __name__ == "__main__":
    main()
