"""h_k routes on the issue-12 layers, next to the floor and the peers, in one run.

    OPENBLAS_NUM_THREADS=1 python -m bench.hk_routes [--repeats N] [--out FILE]

Untrained float64 models (no training needed): an MLP 784-512-512-10 with ReLU (layer fc2,
B = 128), a CNN conv-ReLU-conv-ReLU-avgpool-fc (conv2, B = 128) and the zoo's pre-LN GPT
(2 blocks, d = 64; the up-projection ``blocks.0.mlp.fc1``, B = 32 sequences of 64 tokens).
``--cases mlp,cnn,gpt`` picks some. K = 20 directions of the
layer gradient. Each method's h_k is checked against the reused-graph floor before it is
timed; costs are per direction in gradients of the layer (``bench.hk.run_case``).
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from bench import hk
from bench.cases import DTYPE, K, Setup
from workers.curvature.gradient import gradient_svd, layer_gradients
from workers.curvature.inventory import layer_inventory
from workers.curvature.measurement import make_batch
from workers.zoo import build_model


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(nn.functional.avg_pool2d(x, 4).flatten(1))


def setups(names: tuple[str, ...] = ("mlp", "cnn", "gpt")) -> list[Setup]:
    torch.manual_seed(0)
    mlp = nn.Sequential()
    mlp.fc1, mlp.act1 = nn.Linear(784, 512), nn.ReLU()
    mlp.fc2, mlp.act2 = nn.Linear(512, 512), nn.ReLU()
    mlp.head = nn.Linear(512, 10)
    tokens = torch.randint(0, 96, (32, 65))
    labels = torch.randint(0, 10, (128,))
    cases = [
        ("mlp", mlp, torch.randn(128, 784), labels, "fc2"),
        ("cnn", SmallCNN(), torch.randn(128, 1, 28, 28), labels, "conv2"),
        ("gpt", build_model({"arch": "gpt"}), tokens[:, :-1], tokens[:, 1:], "blocks.0.mlp.fc1"),
    ]
    out = []
    for name, model, x, y, layer in cases:
        if name not in names:
            continue
        model = model.to(DTYPE).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        loss = "lm" if name == "gpt" else "cross_entropy"
        batch = make_batch(x, y, loss, dtype=DTYPE)
        specs, _ = layer_inventory(model, batch.split(1, limit=1)[0].forward)
        spec = next(s for s in specs if s.name == layer)
        grads, _ = layer_gradients(model, [batch], [spec])
        svd = gradient_svd(grads[spec.name], K)
        dirs = [spec.embed(torch.outer(svd.U[:, k], svd.V[:, k])) for k in range(svd.k)]
        out.append(Setup(name, model, batch, batch.inputs, batch.targets, loss, spec,
                         specs, svd.U, svd.V, dirs))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out")
    parser.add_argument("--cases", default="mlp,cnn,gpt")
    args = parser.parse_args()
    results = []
    for s in setups(tuple(args.cases.split(","))):
        res = hk.run_case(s, args.repeats)
        results.append(res)
        print(f"{s.name} {s.spec.name} {tuple(s.spec.shape)} B = {res['batch']}, K = {res['K']}")
        for row in res["rows"]:
            if "error" in row:
                print(f"  {row['method']:40s} error: {row['error']}")
            else:
                print(f"  {row['method']:40s} {row['per_dir']:7.3f} gradients/direction"
                      f"  rel err {row['rel_err']:.1e}")  # fmt: skip
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
