"""One leader per data directory (service/leader.py): with real flocks, a second process or
app follows; it takes over when the leader stops or is killed with -9; and
``curvprof serve --workers 2`` runs each job exactly once, also after its leader is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.client import CurvprofClient
from service.embedded import free_port
from service.leader import LOCK_NAME, Leadership
from tests.service.helpers import child_pids, stop_serving

REPO = Path(__file__).resolve().parents[2]


def test_one_leader_and_a_follower_that_takes_over(tmp_path: Path) -> None:
    first_elected, second_elected = threading.Event(), threading.Event()
    first = Leadership(tmp_path, first_elected.set, poll_s=0.1)
    second = Leadership(tmp_path, second_elected.set, poll_s=0.1)
    try:
        assert first.start() and first_elected.is_set() and first.is_leader
        assert not second.start() and not second.is_leader
        time.sleep(0.5)  # the follower polls, and does not get the held lock
        assert not second_elected.is_set()
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        first.stop()
        assert not second_elected.wait(0.5)  # stopped, but its duties may still be winding down
        first.release()
        assert second_elected.wait(5) and second.is_leader
    finally:
        for leadership in (first, second):
            leadership.stop()
            leadership.release()


def test_a_follower_takes_over_from_a_leader_killed_with_sigkill(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from service.leader import Leadership;"
        "assert Leadership(Path(sys.argv[1]), lambda: None).start(); print('leads', flush=True);"
        "time.sleep(600)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    )
    elected = threading.Event()
    ours = Leadership(tmp_path, elected.set, poll_s=0.1)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "leads\n"
        assert not ours.start()
        assert not elected.wait(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert elected.wait(5) and ours.is_leader
    finally:
        proc.kill()
        proc.wait()
        ours.stop()
        ours.release()


def _submit_and_wait(url: str, seed: int) -> dict[str, object]:
    """Submit a job as the project's client does (with an Idempotency-Key, so a connection
    broken by a dying worker is retried without a second job) and wait for its end."""
    spec = {
        "checkpoint_id": "zoo:mlp",
        "dataset": "digits",
        "batch_size": 64,
        "top_k": 5,
        "lanczos_steps": 3,
        "layers": "head",
        "seed": seed,
    }
    with CurvprofClient(url, timeout=60) as client:
        job_id = client.submit(spec, idempotency_key=f"leader-test-{seed}").id
        deadline = time.monotonic() + 240
        while True:
            got: dict[str, object] = client.job(job_id).model_dump(mode="json")
            if got["state"] in ("succeeded", "failed", "cancelled"):
                return got
            assert time.monotonic() < deadline, got
            time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_serve_with_two_workers_runs_each_job_once_and_survives_its_leader(
    ray_cluster: None, tmp_path: Path
) -> None:
    import ray

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "d"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "import sys; from service.cli import main; sys.exit(main(sys.argv[1:]))"
    gcs = ray.get_runtime_context().gcs_address
    args = ["serve", "--port", str(port), "--data-dir", str(data), "--ray-address", gcs]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args, "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while len(child_pids(proc.pid)) < 2 or not (data / LOCK_NAME).exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.3)
        ready = 0
        while ready < 10:  # both processes answer: the follower without Ray of its own
            try:
                response = httpx.get(f"{url}/readyz", timeout=5)
                ready = ready + 1 if response.status_code == 200 else 0
            except httpx.HTTPError:
                ready = 0
            assert time.monotonic() < deadline
            time.sleep(0.1)
        job = _submit_and_wait(url, seed=1)
        assert job["state"] == "succeeded", job
        leader = int((data / LOCK_NAME).read_text())
        assert leader in child_pids(proc.pid)
        # the other worker takes over and uvicorn replaces this one; a connection the kernel
        # had queued on its socket is reset, and the client retries (worker_processes.py)
        os.kill(leader, signal.SIGKILL)
        job = _submit_and_wait(url, seed=2)
        assert job["state"] == "succeeded", job
        assert int((data / LOCK_NAME).read_text()) != leader
        for item in httpx.get(f"{url}/v1/jobs", timeout=60).json()["items"]:
            lines = httpx.get(f"{url}/v1/jobs/{item['id']}/logs", timeout=60).json()["lines"]
            claims = [line for line in lines if line["message"].startswith("claimed")]
            assert len(claims) == 1, lines  # claimed by one process, once
    finally:
        stop_serving(proc)


def test_a_failed_takeover_lets_the_lock_go_and_tries_again(tmp_path: Path) -> None:
    attempts: list[int] = []
    elected = threading.Event()

    def duties() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("the database is away")
        elected.set()

    holder = Leadership(tmp_path, lambda: None, poll_s=0.1)
    follower = Leadership(tmp_path, duties, poll_s=0.1)
    try:
        assert holder.start() and not follower.start()
        holder.stop()
        holder.release()
        assert elected.wait(5) and follower.is_leader and len(attempts) == 2
    finally:
        for leadership in (holder, follower):
            leadership.stop()
            leadership.release()
