"""Jobs on a real local Ray through a real server: progress, results, queries, cancel,
restart-and-resume, and the same numbers as the engine called directly."""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from api_schemas import JobSpec
from service.embedded import EmbeddedServer as LiveServer
from service.store import db
from service.store.models import JobLayerRow, LayerResultRow
from tests.service.helpers import MLP_CONFIG, SPEC, metric_samples, write_checkpoint

pytestmark = pytest.mark.usefixtures("ray_cluster")

DEEP_CONFIG: dict[str, Any] = {**MLP_CONFIG, "widths": [48] * 7}


@pytest.fixture(scope="module")
def finished(
    ray_cluster: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One server, one uploaded checkpoint, one finished job: shared by the query tests."""
    tmp = tmp_path_factory.mktemp("e2e")
    from service.settings import Settings

    server = LiveServer(Settings(data_dir=tmp / "data"))
    weights = write_checkpoint(tmp / "ckpt")
    client = server.client()
    ckpt = client.upload_checkpoint(weights, MLP_CONFIG)
    job = client.submit({"checkpoint_id": ckpt.id, **SPEC})
    seen: list[tuple[int, int, str]] = []
    done = client.wait(
        job.id,
        timeout=180,
        poll=0.1,
        on_progress=lambda j: seen.append((j.progress.done, j.progress.total, j.state)),
    )
    yield {
        "server": server,
        "client": client,
        "job": done,
        "ckpt": ckpt,
        "seen": seen,
        "weights": weights,
    }
    client.close()
    server.stop()


def test_job_progress_and_completion(finished: dict[str, Any]) -> None:
    job = finished["job"]
    assert job.state == "succeeded", job.error
    assert job.progress.total == 3 and job.progress.done == 3
    assert {lp.name for lp in job.progress.layers} == {"layers.0", "layers.1", "head"}
    assert all(lp.state == "succeeded" and lp.node_id for lp in job.progress.layers)
    assert job.timings.started_at and job.timings.finished_at and job.timings.compute_seconds > 0
    assert job.architecture == "mlp"
    assert any(state == "running" for _, _, state in finished["seen"])


def test_layer_queries_filters_and_pages(finished: dict[str, Any]) -> None:
    client, job = finished["client"], finished["job"]
    rows = list(client.layers(job_id=job.id, page_size=1, sort="-gamma"))
    assert len(rows) == 3 and len({r.id for r in rows}) == 3
    gammas = [r.gamma for r in rows]
    assert gammas == sorted(gammas, reverse=True)
    first = client.layers_page(job_id=job.id, limit=2)
    assert len(first.items) == 2 and first.next_cursor
    assert {r.kind for r in client.layers(kind="head")} == {"head"}
    assert all(r.checkpoint_id == finished["ckpt"].id for r in rows)
    assert len(list(client.layers(arch="mlp"))) == 3 and not list(client.layers(arch="vgg"))
    mid = sorted(g for g in gammas if g is not None)[1]
    assert all(r.gamma >= mid for r in client.layers(job_id=job.id, gamma_min=mid))
    detail = client.layer(rows[0].id)
    assert len(detail.sigma) == detail.k and len(detail.h) == detail.k
    assert detail.provenance.checkpoint_sha256 == finished["ckpt"].sha256
    assert len(detail.provenance.data_indices) == 128 and detail.provenance.versions["torch"]
    assert detail.provenance.hostname and detail.node_id and detail.dtype == "float64"
    # node and device are stored with every layer; the route is a column to filter on
    assert detail.provenance.node_id == detail.node_id and detail.provenance.data_name == "digits"
    device = detail.provenance.device
    assert device == "cpu" or (device or "").startswith("cuda:"), device
    assert detail.route is not None
    routed = {r.id for r in client.layer_briefs(job_id=job.id, route=detail.route)}
    assert detail.id in routed and routed == {r.id for r in rows if r.route == detail.route}


def test_brief_view_matches_full_rows(finished: dict[str, Any]) -> None:
    client, job = finished["client"], finished["job"]
    full = list(client.layers(job_id=job.id, sort="-alpha"))
    briefs = list(client.layer_briefs(job_id=job.id, sort="-alpha", page_size=1))
    assert [b.id for b in briefs] == [r.id for r in full]
    for b, r in zip(briefs, full, strict=True):
        assert (b.name, b.kind, b.k, b.alpha, b.gamma, b.s, b.flags) == (
            r.name,
            r.kind,
            r.k,
            r.alpha,
            r.gamma,
            r.s,
            r.flags,
        )
    raw = client.request("GET", "/v1/layers", params={"view": "brief", "limit": 1}).json()
    assert "sigma" not in raw["items"][0] and raw["next_cursor"]
    bad = client.http.get("/v1/layers", params={"view": "everything"})
    assert bad.status_code == 422 and "view" in bad.text


def test_summary_preconditioner_csv_metrics(finished: dict[str, Any]) -> None:
    client, job = finished["client"], finished["job"]
    summary = client.summary([job.id])
    assert {r.kind for r in summary.rows} == {"linear", "head"}
    assert sum(r.n for r in summary.rows) == 3
    pre = client.preconditioner(job.id)
    assert len(pre.layers) == 3
    assert {p.mode for p in pre.layers[0].params} == {"paper", "newton", "normalized"}
    table = list(csv.DictReader(io.StringIO(client.export_csv(job_id=job.id))))
    assert len(table) == 3 and {r["name"] for r in table} == {"layers.0", "layers.1", "head"}
    samples = metric_samples(client.http.get("/metrics").text)
    assert samples[("curvprof_jobs", (("state", "succeeded"),))] == 1
    assert samples[("curvprof_layer_compute_seconds_count", ())] == 3
    assert client.http.get("/readyz").json()["status"] == "ready"


def test_same_numbers_as_the_engine(finished: dict[str, Any]) -> None:
    """The service's layers equal workers.curvature.engine.profile_layers on the same inputs."""
    from workers.curvature.engine import list_layer_names, profile_layers
    from workers.data import load_builtin, measurement_batch
    from workers.intake.checkpoints import load_checkpoint

    weights: Path = finished["weights"]
    model = load_checkpoint(weights.parent).model
    spec = JobSpec(checkpoint_id="x", **SPEC)
    batch, _ = measurement_batch(load_builtin("digits"), spec.batch_size, spec.seed)
    names = list_layer_names(model, None)
    direct = {
        p.name: p
        for p in profile_layers(model, batch.inputs, batch.targets, names, spec.to_settings())
    }
    served = {
        r.name: finished["client"].layer(r.id)
        for r in finished["client"].layers(job_id=finished["job"].id)
    }
    assert set(served) == set(direct)
    for name, mine in served.items():
        ref = direct[name]
        for field in ("alpha", "gamma", "s", "r2_gamma", "pr_h", "k", "n_valid"):
            a, b = getattr(mine, field), getattr(ref, field)
            assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9, abs=1e-12), field
        for field in ("sigma", "h", "eigenvalues", "phi"):
            assert getattr(mine, field) == pytest.approx(getattr(ref, field), rel=1e-9, abs=1e-12)
        assert mine.flags == ref.flags


def _wait_for(predicate: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_cancel_running_job(make_server: Any) -> None:
    server = make_server(run_jobs=True)
    with server.client() as client:
        spec = {
            "checkpoint_id": "zoo:mlp",
            "zoo_config": {"widths": [48] * 7},
            **SPEC,
            # ~1 s per layer, so the cancel lands mid-job even on a quiet machine
            "batch_size": 512,
            "lanczos_steps": 200,
        }
        job = client.submit(spec)
        # mid-job: a layer is stored and others are still to come
        _wait_for(lambda: client.job(job.id).progress.done >= 1)
        cancelled = client.cancel(job.id)
        assert cancelled.state == "cancelled"
        time.sleep(1.5)
        final = client.job(job.id)
        assert final.state == "cancelled"
        assert final.progress.done < final.progress.total
        assert all(
            lp.state in ("succeeded", "cancelled", "pending") for lp in final.progress.layers
        )
        assert client.http.post(f"/v1/jobs/{job.id}/cancel").status_code == 200


def test_restart_resumes_without_duplicates(make_server: Any) -> None:
    first = make_server(run_jobs=True)
    # Layers must take long enough (~1 s each) that the stop lands mid-job.
    spec = {
        "checkpoint_id": "zoo:mlp",
        "zoo_config": {"widths": [48] * 7},
        **SPEC,
        "batch_size": 512,
        "lanczos_steps": 200,
    }
    with first.client() as client:
        job = client.submit(spec)
        _wait_for(lambda: client.job(job.id).progress.done >= 2)
    first.stop()  # mid-job: in-flight tasks are cancelled, the job stays "running"
    engine = db.make_engine(first.settings.database_url)
    with db.make_session_factory(engine)() as s:
        stored_before = s.scalar(select(func.count()).select_from(LayerResultRow))
        before = {r.layer_name: r.id for r in s.scalars(select(LayerResultRow))}
    assert 2 <= stored_before < 8
    second = make_server(run_jobs=True, data_dir=first.settings.data_dir)
    with second.client() as client:
        assert client.job(job.id).state in ("queued", "running")
        done = client.wait(job.id, timeout=180)
        assert done.state == "succeeded", done.error
        assert done.progress.done == done.progress.total == 8
    with db.make_session_factory(engine)() as s:
        rows = list(s.scalars(select(LayerResultRow).where(LayerResultRow.job_id == job.id)))
        progress = list(s.scalars(select(JobLayerRow).where(JobLayerRow.job_id == job.id)))
    engine.dispose()
    assert len(rows) == 8 and len({r.layer_name for r in rows}) == 8
    after = {r.layer_name: r.id for r in rows}
    assert all(after[name] == before[name] for name in before)  # stored layers kept, not redone
    assert all(p.attempts == 1 for p in progress if p.layer_name in before)
    assert not any(math.isnan(r.wall_seconds or 0.0) for r in rows)


def test_plot_endpoints_return_pngs(finished: dict[str, Any]) -> None:
    client, job = finished["client"], finished["job"]
    identity = client.http.get("/v1/plots/identity", params={"jobs": job.id})
    assert identity.status_code == 200 and identity.headers["content-type"] == "image/png"
    assert identity.content[:8] == b"\x89PNG\r\n\x1a\n"
    layer_id = next(iter(client.layers(job_id=job.id))).id
    one = client.http.get(f"/v1/layers/{layer_id}/plot")
    assert one.status_code == 200 and one.content[:4] == b"\x89PNG"
    missing = client.http.get("/v1/layers/999999/plot")
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    none = client.http.get("/v1/plots/identity", params={"jobs": "no-such-job"})
    assert none.status_code == 404


def test_job_log_lines_are_stored_and_printed(
    finished: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    client, job, server = finished["client"], finished["job"], finished["server"]
    logs = client.job_logs(job.id)
    messages = [line.message for line in logs.lines]
    assert logs.state == "succeeded" and messages[0].startswith("claimed")
    assert "3 of 3 layers to profile" in messages and messages[-1] == "succeeded: 3 layers"
    assert {m.split(":")[0] for m in messages if m.startswith("layer ")} == {
        "layer layers.0",
        "layer layers.1",
        "layer head",
    }
    ids = [line.id for line in logs.lines]
    assert [line.id for line in client.job_logs(job.id, after=ids[1]).lines] == ids[2:]
    assert main(["logs", job.id[:12], "-f", "--url", server.url]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(messages) and printed[-1].endswith("succeeded: 3 layers")
    assert client.http.get("/v1/jobs/nosuchjob/logs").status_code == 404
