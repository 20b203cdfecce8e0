""".pt2 with the pickle opt-in on: accepted and profiled, its code never run in the API process.

The server is in this (pytest) process, so the marker the archive's payload writes must never
carry this process's pid: the upload is opened by a child process, the job's layer names come
from another, and the layers are profiled by the Ray workers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.hostile import evil_pt2
from service.embedded import EmbeddedServer
from service.settings import Settings

pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_pt2_job_runs_its_pickle_only_outside_the_api_process(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    path = tmp_path / "net.pt2"
    path.write_bytes(evil_pt2(marker, loads=True))
    settings = Settings(
        data_dir=tmp_path / "data", allow_pickle_checkpoints=True, layers_per_task=2
    )
    with EmbeddedServer(settings) as server, server.client() as client:
        ckpt = client.upload_checkpoint(path)
        assert ckpt.format == "pt2"
        pids_after_upload = marker.read_text().split()
        spec = {"dataset": "digits", "batch_size": 32, "top_k": 4, "lanczos_steps": 3}
        job = client.submit({"checkpoint_id": ckpt.id, **spec})
        done = client.wait(job.id, timeout=240, poll=0.2)
        assert done.state == "succeeded", done.error
        assert done.progress.total == 2 and done.progress.done == 2  # both Linear layers
    pids = marker.read_text().split()
    assert len(pids_after_upload) == 1 and len(pids) >= 3  # upload child, job child, worker(s)
    assert str(os.getpid()) not in pids
