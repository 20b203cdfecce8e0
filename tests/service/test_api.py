"""The REST front end on a real uvicorn server (no job runner): uploads, errors, auth,
idempotent submission, health and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.client import ApiError
from tests.service.helpers import MLP_CONFIG, SPEC, metric_samples, write_checkpoint


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


def test_checkpoint_upload_is_content_addressed(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    weights = write_checkpoint(tmp_path / "ckpt")
    with server.client() as client:
        first = client.upload_checkpoint(weights, MLP_CONFIG)
        second = client.upload_checkpoint(weights, MLP_CONFIG)
        assert first.id == second.id and len(first.id) == 64
        assert first.architecture == "mlp" and first.format == "safetensors"
        assert client.checkpoint(first.id).config["widths"] == [32, 32]  # type: ignore[index]
        listed = client.request("GET", "/v1/checkpoints").json()
        assert [c["id"] for c in listed["items"]] == [first.id]
        assert client.checkpoint("zoo:vgg").architecture == "vgg"
    stored = _files_under(server.settings.artifacts_dir / "sha256")
    assert [p.name for p in stored] == [f"{first.id}.safetensors"]
    assert not _files_under(server.settings.artifacts_dir / "tmp")


def test_upload_over_limit_is_413_and_leaves_nothing(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = make_server(max_upload_bytes=4096)
    big = tmp_path / "big.npz"
    np.savez(big, inputs=np.zeros((200, 8)), targets=np.zeros(200))
    assert big.stat().st_size > 4096
    response = httpx.post(
        f"{server.url}/v1/datasets", files={"file": ("big.npz", big.read_bytes())}, timeout=30
    )
    assert response.status_code == 413
    assert response.json()["status"] == 413
    assert not _files_under(server.settings.artifacts_dir)
    with server.client() as client:
        assert client.request("GET", "/v1/datasets").json()["items"] == []


@pytest.mark.parametrize(
    ("name", "content", "config", "status", "words"),
    [
        ("w.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......", None, 422, "JSON"),
        ("w.bin", b"abc", None, 415, "unsupported"),
        ("m.pt2", b"PK\x03\x04", None, 415, "pickle"),
        ("w.safetensors", None, {"arch": "nope"}, 422, "unknown arch"),
        ("w.safetensors", None, {**MLP_CONFIG, "widths": [16]}, 422, "weights"),
        ("w.safetensors", None, None, 422, "config"),
    ],
)
def test_bad_checkpoints_are_rejected_with_json_errors(  # type: ignore[no-untyped-def]
    make_server, tmp_path: Path, name, content, config, status, words
) -> None:
    server = make_server()
    if content is None:
        content = write_checkpoint(tmp_path / "ckpt").read_bytes()
    data = {"config": json.dumps(config)} if config else {}
    response = httpx.post(
        f"{server.url}/v1/checkpoints", files={"file": (name, content)}, data=data, timeout=30
    )
    assert response.status_code == status, response.text
    error = response.json()
    assert error["status"] == status and words.lower() in error["detail"].lower()
    assert "Traceback" not in response.text
    assert not _files_under(server.settings.artifacts_dir)


def test_dataset_uploads(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    good = tmp_path / "d.npz"
    np.savez(good, inputs=np.random.rand(20, 64).astype(np.float32), targets=np.arange(20) % 10)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    with server.client() as client:
        ds = client.upload_dataset(good)
        assert ds.n_examples == 20 and client.upload_dataset(good).id == ds.id
        with pytest.raises(ApiError) as err:
            client.upload_dataset(bad)
        assert err.value.status == 422 and "inputs" in err.value.message
        assert client.dataset("digits").format == "builtin"


def test_jobs_submit_idempotent_and_validated(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    with server.client() as client:
        spec = {"checkpoint_id": "zoo:mlp", **SPEC}
        a = client.submit(spec, idempotency_key="key-1")
        b = client.submit(spec, idempotency_key="key-1")
        c = client.submit(spec)
        assert a.id == b.id != c.id and a.state == "queued"
        with pytest.raises(ApiError) as err:
            client.submit({**spec, "seed": 3}, idempotency_key="key-1")
        assert err.value.status == 409
        for bad, status in (
            ({**spec, "checkpoint_id": "0" * 64}, 422),
            ({**spec, "checkpoint_id": "zoo:nope"}, 422),
            ({**spec, "dataset_id": "x"}, 422),
            ({**spec, "top_k": 0}, 422),
        ):
            with pytest.raises(ApiError) as err:
                client.submit(bad)
            assert err.value.status == status
        page1 = client.jobs(limit=1)
        page2 = client.jobs(limit=1, cursor=page1.next_cursor)
        assert page1.items[0].id != page2.items[0].id and page2.next_cursor is None
        batch = client.batch(
            {"checkpoint_ids": ["zoo:mlp", "zoo:vgg"], **SPEC}, idempotency_key="b"
        )
        again = client.batch(
            {"checkpoint_ids": ["zoo:mlp", "zoo:vgg"], **SPEC}, idempotency_key="b"
        )
        assert [j.id for j in batch.jobs] == [j.id for j in again.jobs] and batch.id == again.id
        assert len(client.jobs(batch_id=batch.id).items) == 2
        cancelled = client.cancel(c.id)
        assert cancelled.state == "cancelled"
        r = client.http.get("/v1/jobs/nope")
        assert r.status_code == 404 and r.json() == {
            "type": "about:blank",
            "title": "Not Found",
            "status": 404,
            "detail": "job nope not found",
            "instance": "/v1/jobs/nope",
        }
        assert r.headers["content-type"] == "application/problem+json"


def test_auth_tokens(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(api_tokens=["s3cret"], open_reads=True)
    spec = {"checkpoint_id": "zoo:mlp", **SPEC}
    with server.client() as anon, server.client(token="s3cret") as ok:
        with pytest.raises(ApiError) as err:
            anon.submit(spec)
        assert err.value.status == 401
        with server.client(token="wrong") as wrong, pytest.raises(ApiError):
            wrong.submit(spec)
        job = ok.submit(spec)
        assert anon.job(job.id).id == job.id  # reads open
    closed = make_server(
        api_tokens=["s3cret"], open_reads=False, data_dir=server.settings.data_dir / "x"
    )
    with closed.client() as anon, closed.client(token="s3cret") as ok:
        assert anon.http.get("/v1/jobs").status_code == 401
        assert ok.http.get("/v1/jobs").status_code == 200
        assert anon.http.get("/healthz").status_code == 200


def test_health_metrics_openapi(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    with server.client() as client:
        assert client.http.get("/healthz").json() == {"status": "ok"}
        assert client.http.get("/v1/openapi.json").json()["info"]["title"] == "curvprof"
        client.submit({"checkpoint_id": "zoo:mlp", **SPEC})
        samples = metric_samples(client.http.get("/metrics").text)
        assert samples[("curvprof_jobs", (("state", "queued"),))] == 1
        assert samples[("curvprof_queue_depth", ())] == 1
        assert samples[("curvprof_layer_compute_seconds_count", ())] == 0
