"""Uploads through the store layer (service/store/uploads.py) on a real server, SQLite and
PostgreSQL: one path for both artifact kinds, 201 then 200 for the same bytes, and nothing
left behind by a refused upload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.client import ApiError
from service.embedded import EmbeddedServer
from tests.service.helpers import MLP_CONFIG, write_checkpoint

ServerFactory = Callable[..., EmbeddedServer]


def files_under(path: Path) -> list[str]:
    return sorted(p.name for p in path.rglob("*") if p.is_file()) if path.exists() else []


def post(server: EmbeddedServer, kind: str, path: Path, **fields: str) -> httpx.Response:
    with path.open("rb") as fh:
        return httpx.post(
            f"{server.url}/v1/{kind}", files={"file": (path.name, fh)}, data=fields, timeout=60
        )


def test_both_kinds_answer_201_then_200_for_the_same_bytes(
    make_server: ServerFactory, db_url: str, tmp_path: Path
) -> None:
    server = make_server(db_url=db_url)
    weights = write_checkpoint(tmp_path / "ckpt")
    data = tmp_path / "d.npz"
    np.savez(data, inputs=np.random.rand(8, 64).astype(np.float32), targets=np.arange(8) % 10)
    config = {"config": '{"arch": "mlp", "in_features": 64, "widths": [32, 32], "classes": 10}'}
    for kind, path, fields in (("checkpoints", weights, config), ("datasets", data, {})):
        first, again = (post(server, kind, path, **fields) for _ in range(2))
        assert (first.status_code, again.status_code) == (201, 200), kind
        assert first.json() == again.json()
    stored = files_under(server.settings.artifacts_dir / "sha256")
    assert len(stored) == 2 and files_under(server.settings.artifacts_dir / "tmp") == []


def test_stored_weights_under_another_config_are_a_conflict(
    make_server: ServerFactory, db_url: str, tmp_path: Path
) -> None:
    server = make_server(db_url=db_url)
    weights = write_checkpoint(tmp_path / "ckpt")
    with server.client() as client:
        stored = client.upload_checkpoint(weights, MLP_CONFIG)
        with pytest.raises(ApiError) as err:
            client.upload_checkpoint(weights, {**MLP_CONFIG, "activation": "tanh"})
        assert err.value.status == 409
        assert client.checkpoint(stored.id).config == stored.config
    assert files_under(server.settings.artifacts_dir / "tmp") == []


def test_a_refused_upload_leaves_no_file_and_no_row(
    make_server: ServerFactory, db_url: str, tmp_path: Path
) -> None:
    server = make_server(db_url=db_url)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    truncated = tmp_path / "model.safetensors"
    truncated.write_bytes(write_checkpoint(tmp_path / "ckpt").read_bytes()[:100])
    assert post(server, "datasets", bad).status_code == 422
    assert post(server, "checkpoints", truncated, config='{"arch": "mlp"}').status_code == 422
    with server.client() as client:
        assert client.request("GET", "/v1/datasets").json()["items"] == []
        assert client.request("GET", "/v1/checkpoints").json()["items"] == []
    assert files_under(server.settings.artifacts_dir) == []
