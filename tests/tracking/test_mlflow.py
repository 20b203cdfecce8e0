"""A profile logged into a real ``mlflow server`` (SQLite backend, 127.0.0.1, a subprocess):
metrics per layer at each checkpoint's step, params, plots and the profile as artifacts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from torch import nn

from api_schemas import Profile
from service.embedded import free_port
from workers.curvature import profile_model

mlflow = pytest.importorskip("mlflow")
START_TIMEOUT = 180.0  # seconds; the server imports a large stack (slow on a loaded machine)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    executable = Path(sys.executable).with_name("mlflow")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "mlflow"]
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            *command,
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped with every worker it forks
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail("mlflow server exited:\n" + (root / "server.log").read_text()[-2000:])
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not ready after {START_TIMEOUT:.0f} s")
            time.sleep(0.25)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()


def checkpoints() -> list[tuple[int, Profile]]:
    """Profiles of a tiny MLP at step 0 and after 25 SGD steps."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24), nn.Tanh(), nn.Linear(24, 10))
    x, y = torch.randn(96, 16), torch.randint(0, 10, (96,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    out = [(0, profile_model(model, x, y, top_k=10, lanczos_steps=4))]
    for _ in range(25):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    out.append((25, profile_model(model, x, y, top_k=10, lanczos_steps=4)))
    return out


@pytest.mark.slow
def test_profile_logged_into_a_real_mlflow_server(mlflow_server: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from service.integrations.mlflow_run import log_profile, metric_key

    series = checkpoints()
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.create_experiment("curvprof-test")
    run_id = client.create_run(experiment).info.run_id
    assert all(layer.alpha is not None for _, p in series for layer in p.layers)
    for step, profile in series:  # plots of the last checkpoint only (they cost seconds)
        plots = step == series[-1][0]
        log_profile(profile, step=step, run_id=run_id, tracking_uri=mlflow_server, plots=plots)
    names = [layer.name for layer in series[0][1].layers]
    for i, name in enumerate(names):
        for field in ("alpha", "gamma", "s"):
            history = client.get_metric_history(run_id, metric_key("curvprof", name, field))
            expected = [
                (step, getattr(p.layers[i], field))
                for step, p in series
                if getattr(p.layers[i], field) is not None
            ]
            assert sorted((m.step, m.value) for m in history) == expected
    run = client.get_run(run_id)
    assert run.data.params["curvprof.top_k"] == "10"
    assert run.data.params["curvprof.loss"] == "cross_entropy"
    assert run.data.params["curvprof.variants"] == "ef,kron"
    listed = {a.path for a in client.list_artifacts(run_id, "curvprof/step-25")}
    assert {f"curvprof/step-25/{n}.png" for n in names} <= listed
    assert {"curvprof/step-25/identity.png", "curvprof/step-25/profile.json"} <= listed
    local = client.download_artifacts(run_id, "curvprof/step-25/profile.json", str(tmp_path))
    stored = Profile.model_validate(json.loads(Path(local).read_text()))
    assert [layer.alpha for layer in stored.layers] == [
        layer.alpha for layer in series[1][1].layers
    ]
