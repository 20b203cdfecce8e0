"""Log a curvature profile into an MLflow run: per-layer exponents as metrics at the
checkpoint's training step, the plots and the profile JSON as artifacts, the measurement
settings as params. ``pip install 'curvprof[mlflow]'``; mlflow is imported on the first call.

Names (``prefix`` defaults to ``curvprof``):

- metrics ``curvprof/<layer>/<field>`` for ``METRIC_FIELDS`` (α, γ, s, αγ, s_eig, R²α; see
  docs/engine.md), each at ``step``; a layer whose value is undefined (``null``, with the
  reason in its flags) logs nothing for that field;
- params ``curvprof.<setting>`` (loss, batch_size, top_k, ...), the same at every step of
  one run (MLflow refuses a param that changes value within a run);
- artifacts under ``curvprof/step-<step>/``: one PNG per layer, ``identity.png`` and
  ``profile.json``.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from api_schemas import LayerProfile, Profile, ProfileSettings

METRIC_FIELDS: tuple[str, ...] = ("alpha", "gamma", "s", "predicted_s", "s_eig", "r2_alpha")
UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.\- /:]")
MLFLOW_BATCH = 1000  # MLflow's limit on the metrics of one log_batch call


def metric_key(prefix: str, layer_name: str, field: str) -> str:
    """``prefix/layer/field`` with characters MLflow refuses in a key replaced by ``_``."""
    return f"{prefix}/{UNSAFE_KEY_CHARS.sub('_', layer_name)}/{field}"


def profile_params(
    settings: ProfileSettings, architecture: str | None, prefix: str
) -> dict[str, str]:
    values: dict[str, Any] = settings.model_dump()
    values["architecture"] = architecture
    out = {}
    for name, value in values.items():
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        out[f"{prefix}.{name}"] = "" if value is None else str(value)
    return out


def log_layers(
    run_id: str,
    layers: Sequence[LayerProfile],
    *,
    step: int | None = None,
    params: dict[str, str] | None = None,
    plots: bool = True,
    profile_json: str | None = None,
    prefix: str = "curvprof",
    tracking_uri: str | None = None,
) -> None:
    """Log ``layers`` into the MLflow run ``run_id`` (see the module docstring)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    at = step or 0
    now = int(time.time() * 1000)
    metrics = [
        Metric(metric_key(prefix, layer.name, field), float(value), now, at)
        for layer in layers
        for field in METRIC_FIELDS
        if (value := getattr(layer, field)) is not None
    ]
    if params:
        client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    for start in range(0, len(metrics), MLFLOW_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MLFLOW_BATCH])
    if not plots and profile_json is None:
        return
    with tempfile.TemporaryDirectory(prefix="curvprof-mlflow-") as tmp:
        directory = Path(tmp)
        if plots:
            from service.plots import write_plots

            write_plots(layers, directory)
        if profile_json is not None:
            (directory / "profile.json").write_text(profile_json)
        client.log_artifacts(run_id, str(directory), artifact_path=f"{prefix}/step-{at}")


def active_run_id() -> str:
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: pass run_id or call inside mlflow.start_run()")
    return str(run.info.run_id)


def log_profile(
    profile: Profile,
    *,
    step: int | None = None,
    run_id: str | None = None,
    plots: bool = True,
    prefix: str = "curvprof",
    tracking_uri: str | None = None,
) -> None:
    """Log an in-process profile into ``run_id`` (default: the active run) at ``step``."""
    log_layers(
        run_id or active_run_id(),
        profile.layers,
        step=step,
        params=profile_params(profile.settings, profile.architecture, prefix),
        plots=plots,
        profile_json=profile.model_dump_json(indent=1),
        prefix=prefix,
        tracking_uri=tracking_uri,
    )


def log_job(
    client: Any,
    job_id: str,
    *,
    run_id: str | None = None,
    plots: bool = True,
    prefix: str = "curvprof",
    tracking_uri: str | None = None,
) -> None:
    """Log the stored layers of a service job (a ``CurvprofClient``) at the job's step."""
    job = client.job(job_id)
    layers = [row.profile() for row in client.layers(job_id=job_id, sort="id")]
    log_layers(
        run_id or active_run_id(),
        layers,
        step=job.step,
        params=profile_params(job.spec.to_settings(), job.architecture, prefix),
        plots=plots,
        prefix=prefix,
        tracking_uri=tracking_uri,
    )
