"""Screenshots of every dashboard page for docs/dashboard.md (docs/img/dashboard-*.png).

    OPENBLAS_NUM_THREADS=1 python -m bench.screenshots [--out docs/img] [--work DIR]

Trains an MLP on scikit-learn's digits to three checkpoints of one run (1, 3 and 8 epochs)
and a small VGG for one epoch, profiles all four through the real service (embedded server,
local Ray), adds a job that fails (a model that does not fit the data), then opens each page
in Debian's Chromium through Playwright and saves a full-page PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

SPEC: dict[str, Any] = {
    "dataset": "digits",
    "batch_size": 512,
    "top_k": 20,
    "lanczos_steps": 20,
    "dtype": "float64",
    "seed": 0,
}
MLP_EPOCHS = (1, 3, 8)


def _trained(work: Path, arch: str, epochs: int) -> tuple[Path, dict[str, Any]]:
    from workers.train import train

    out = work / f"{arch}-e{epochs}"
    if not (out / "model.safetensors").is_file():
        train(arch, "digits", epochs=epochs, out_dir=out, seed=0, progress=False)
    return out / "model.safetensors", json.loads((out / "config.json").read_text())


def _shoot(shots: dict[str, str], out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        for name, url in shots.items():
            page.goto(url)
            page.wait_for_function("document.body.dataset.chartsReady !== undefined")
            target = out / f"dashboard-{name}.png"
            page.screenshot(path=str(target), full_page=True)
            written.append(target)
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--work", type=Path, default=None, help="kept between runs if given")
    args = parser.parse_args()

    from service.embedded import EmbeddedServer
    from service.settings import Settings
    from workers.execution import init_ray, shutdown_ray

    work = args.work or Path(tempfile.mkdtemp(prefix="curvprof-shots-"))
    data_dir = work / "service"
    shutil.rmtree(data_dir, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    init_ray(None, num_cpus=2)
    server = EmbeddedServer(Settings(data_dir=data_dir))
    client = server.client(timeout=600)
    try:
        run = []
        for epochs in MLP_EPOCHS:
            weights, config = _trained(work, "mlp", epochs)
            ckpt = client.upload_checkpoint(weights, config)
            run.append(client.submit({"checkpoint_id": ckpt.id, **SPEC}))
        weights, config = _trained(work, "vgg", 1)
        vgg = client.submit({"checkpoint_id": client.upload_checkpoint(weights, config).id, **SPEC})
        bad = {"arch": "mlp", "in_features": 65}
        client.submit({"checkpoint_id": "zoo:mlp", **SPEC, "zoo_config": bad})
        jobs = [client.wait(j.id, timeout=3600) for j in [*run, vgg]]
        assert all(j.state == "succeeded" for j in jobs), [j.error for j in jobs]
        vgg_layers = sorted(client.layers(job_id=vgg.id), key=lambda r: r.id)
        conv = next(r for r in vgg_layers if r.kind == "conv" and r.alpha is not None)
        shots = {
            "jobs": "/ui",
            "job": f"/ui/jobs/{vgg.id}?sort=-alpha&limit=12",
            "layer": f"/ui/layers/{conv.id}",
            "compare": "/ui/compare?jobs=" + ",".join(j.id for j in run),
        }
        urls = {name: server.url + path for name, path in shots.items()}
        # the same store behind closed reads: the login prompt
        closed = Settings(data_dir=data_dir, api_tokens=["t"], open_reads=False, run_jobs=False)
        with EmbeddedServer(closed) as guarded:
            for path in _shoot({**urls, "login": guarded.url + "/ui"}, args.out):
                print(path)
    finally:
        client.close()
        server.stop()
        shutdown_ray()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
