"""``curvprof serve`` as a real subprocess (joined to the session's Ray) driven by the client
commands: db upgrade, submit --wait, jobs, status, layers, export, cancel."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect

from service.cli import main
from service.embedded import free_port
from service.store import db


def test_db_upgrade_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["db", "upgrade", "--db-url", url]) == 0
    assert "layer_results" in inspect(db.make_engine(url)).get_table_names()


def test_serve_and_client_commands(
    ray_cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    code = "import sys; from service.cli import main; sys.exit(main(sys.argv[1:]))"
    gcs = ray.get_runtime_context().gcs_address
    args = ["serve", "--port", str(port), "--data-dir", str(tmp_path / "d"), "--ray-address", gcs]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.3)
        common = ["--url", url]
        assert (
            main(
                [
                    "submit",
                    "zoo:mlp",
                    *common,
                    "--batch-size",
                    "64",
                    "--top-k",
                    "5",
                    "--lanczos-steps",
                    "3",
                    "--layers",
                    "head",
                    "--wait",
                ]
            )
            == 0
        )
        job_id = capsys.readouterr().out.split()[0]
        assert main(["jobs", *common]) == 0
        assert job_id in capsys.readouterr().out
        assert main(["status", job_id, "--no-follow", *common]) == 0
        assert "succeeded 1/1" in capsys.readouterr().out
        assert main(["layers", "--job-id", job_id, *common]) == 0
        assert "head" in capsys.readouterr().out
        out = tmp_path / "layers.csv"
        assert main(["export", "--job-id", job_id, "-o", str(out), *common]) == 0
        assert len(out.read_text().splitlines()) == 2
        assert main(["cancel", job_id, *common]) == 2  # finished: one-line error
        assert "already succeeded" in capsys.readouterr().err
    finally:
        proc.terminate()
        proc.wait(30)
    assert (tmp_path / "d" / "curvprof.db").exists()
