"""kill -9, as an operator's machine would: of a Ray worker mid-task, then of the server
process mid-job and mid-upload. Ray retries the task (the job's log says so and the layer's
``attempts`` goes up), the next server resumes the job and removes the partial upload: 0
layers lost, 0 duplicated, numbers bit-identical to an uninterrupted run, nothing left
behind. On SQLite, and on
PostgreSQL too when ``CURVPROF_TEST_PG_URL`` is set (tests/pg.sh): there both kills land
in one job (one server run and its restart), compared bit for bit with the SQLite jobs.

(``test_end_to_end.test_restart_resumes_without_duplicates`` covers a clean stop; the
multi-node test covers losing a whole worker node.)"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bench.live import fresh_pg_database
from service.embedded import free_port
from service.jobs_runner import RETRY_LINE
from service.store import db
from service.store.codec import unpack_profile
from service.store.models import LayerProfileRow, LayerResultRow
from tests.service.conftest import PG_URL
from tests.service.helpers import SPEC, partial_upload

REPO = Path(__file__).resolve().parents[2]
TASK_TITLE = "ray::profile_group_announced"
# 8 layers of ~1 s each on one core: long enough to land both kills mid-job
JOB = {
    "checkpoint_id": "zoo:mlp",
    "zoo_config": {"widths": [48] * 7},
    **SPEC,
    "batch_size": 512,
    "lanczos_steps": 150,
}


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class ServerProcess:
    """``uvicorn service.app:create_app`` with the job runner and its embedded Ray."""

    def __init__(self, data_dir: Path, db_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CURVPROF_DATA_DIR": str(data_dir),
            "CURVPROF_DB_URL": db_url,
            "CURVPROF_RAY_NUM_CPUS": "1",
            "CURVPROF_TEST_THREADS": "1",
        }
        command = [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self.proc = subprocess.Popen(command, env=env, cwd=REPO)
        self.family: set[int] = set()
        _wait(lambda: self._up(), 120, "server start")

    def _up(self) -> bool:
        assert self.proc.poll() is None, "the server exited"
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def job(self, job_id: str) -> dict[str, Any]:
        self.family.update(descendants(self.proc.pid))
        response = httpx.get(f"{self.url}/v1/jobs/{job_id}", timeout=30)
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        return job

    def submit(self, spec: dict[str, Any]) -> str:
        response = httpx.post(self.url + "/v1/jobs", json=spec, timeout=30)
        response.raise_for_status()
        return str(response.json()["id"])

    def busy_workers(self) -> list[int]:
        return [p for p in descendants(self.proc.pid) if _cmdline(p).startswith(TASK_TITLE)]

    def kill(self) -> None:
        """SIGKILL the server and every process it started (its embedded Ray), as the end
        of a container or an operator's ``kill -9`` of the process group would: nothing of
        it may finish a layer after this. (Left alone, Ray's processes fate-share with the
        server within about 30 s.)"""
        self.family.update(descendants(self.proc.pid))
        self.proc.send_signal(signal.SIGKILL)
        for pid in self.family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(30)
        _wait(lambda: not any(_alive(p) for p in self.family), 30, "the server's processes")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def _stored(url: str, job_id: str) -> dict[str, tuple[int, Any]]:
    engine = db.make_engine(url)
    with db.make_session_factory(engine)() as s:
        rows = s.execute(
            select(LayerResultRow.layer_name, LayerResultRow.id, LayerProfileRow.blob)
            .join(LayerProfileRow, LayerProfileRow.layer_id == LayerResultRow.id)
            .where(LayerResultRow.job_id == job_id)
        ).all()
    engine.dispose()
    names = [name for name, _, _ in rows]
    assert len(names) == len(set(names)), "a layer stored twice"
    numbers = {
        name: (row_id, unpack_profile(blob).model_dump(exclude={"wall_seconds"}))
        for name, row_id, blob in rows
    }
    return numbers


def _retried(server: ServerProcess, job_id: str) -> list[str]:
    """The layers of every retry the job's log reports, one entry per retried task."""
    response = httpx.get(f"{server.url}/v1/jobs/{job_id}/logs", timeout=30)
    response.raise_for_status()
    lines = [line["message"] for line in response.json()["lines"]]
    return [m.removeprefix(RETRY_LINE).strip() for m in lines if m.startswith(RETRY_LINE)]


def _kill_a_busy_worker(server: ServerProcess, job_id: str) -> dict[str, Any]:
    """kill -9 the Ray worker running one of the job's tasks and wait for the job to end:
    Ray retries that task, once, and the job's log and progress show it (the layer's
    ``attempts`` goes up). Returns the finished job."""
    _wait(lambda: bool(server.busy_workers()), 120, "a task to start")
    time.sleep(2.0)  # into the computation (a task announces its attempt as it starts)
    retries_before = len(_retried(server, job_id))
    attempts = {lp["name"]: lp["attempts"] for lp in server.job(job_id)["progress"]["layers"]}
    _wait(lambda: bool(server.busy_workers()), 120, "a busy worker")
    os.kill(server.busy_workers()[0], signal.SIGKILL)
    _wait(lambda: server.job(job_id)["state"] in ("succeeded", "failed"), 300, "the job")
    done = server.job(job_id)
    assert done["state"] == "succeeded", done["error"]
    retried = _retried(server, job_id)[retries_before:]
    assert len(retried) == 1, retried
    after = {lp["name"]: lp["attempts"] for lp in done["progress"]["layers"]}
    assert after[retried[0]] > attempts[retried[0]], (retried, attempts, after)
    return done


def _kill_mid_job_and_mid_upload(
    server: ServerProcess, url: str, job_id: str
) -> dict[str, tuple[int, Any]]:
    """Start an upload, wait for two stored layers, then kill -9 the server with both in
    flight; returns the layers stored before the kill. (The upload comes first: waiting for
    its temp file after the layers let a fast job finish before the kill.)"""
    tmp_dir = server.data_dir / "artifacts" / "tmp"
    upload = partial_upload(server.url, 1 << 20, chunked=False, total=64 << 20)
    _wait(lambda: bool(list(tmp_dir.glob("upload-*.part"))), 30, "the upload's temp file")
    _wait(lambda: server.job(job_id)["progress"]["done"] >= 2, 180, "two layers stored")
    server.kill()
    upload.close()
    assert list(tmp_dir.glob("upload-*.part")), "the kill left the partial upload"
    before = _stored(url, job_id)
    assert 2 <= len(before) < 8, len(before)
    return before


def _resumed(
    server: ServerProcess,
    url: str,
    job_id: str,
    before: dict[str, tuple[int, Any]],
) -> tuple[dict[str, Any], dict[str, tuple[int, Any]]]:
    """The server started on the store of a killed one has finished the job: 0 lost, 0
    duplicated, the rows stored before the kill kept (not redone), no file left behind."""
    _wait(lambda: server.job(job_id)["state"] in ("succeeded", "failed"), 300, "job resumed")
    done = server.job(job_id)
    assert done["state"] == "succeeded", done["error"]
    assert done["progress"]["done"] == done["progress"]["total"] == 8
    assert all(lp["state"] == "succeeded" for lp in done["progress"]["layers"])
    after = _stored(url, job_id)
    assert len(after) == 8  # 0 lost, 0 duplicated (the store also refuses a second row)
    assert all(after[name][0] == before[name][0] for name in before)  # kept, not redone
    leftovers = [p for p in (server.data_dir / "artifacts").rglob("*") if p.is_file()]
    assert leftovers == []  # the partial upload was removed at start-up
    return done, after


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_a_worker_then_the_server_mid_job(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    url = f"sqlite:///{data_dir / 'curvprof.db'}"
    first = ServerProcess(data_dir, url)
    servers.append(first)

    # 1. kill -9 of the Ray worker running a task: Ray retries it, the progress shows it
    job_a = first.submit(JOB)
    _kill_a_busy_worker(first, job_a)
    numbers_a = _stored(url, job_a)
    assert len(numbers_a) == 8

    # 2. kill -9 of the server mid-job and mid-upload: the next server resumes the job
    job_b = first.submit({**JOB})  # the same job again (no Idempotency-Key: a new job)
    before = _kill_mid_job_and_mid_upload(first, url, job_b)
    second = ServerProcess(data_dir, url)
    servers.append(second)
    done_b, after = _resumed(second, url, job_b, before)
    attempts = {lp["name"]: lp["attempts"] for lp in done_b["progress"]["layers"]}
    assert all(attempts[name] == 1 for name in before)

    # 3. both interrupted jobs carry the same numbers, bit for bit
    assert set(numbers_a) == set(after)
    for name in after:
        assert after[name][1] == numbers_a[name][1], name

    if PG_URL is None:
        return
    for server in servers:  # the SQLite servers' work is done: their CPU is the next one's
        server.stop()
    # 4. on PostgreSQL, one job takes both kills: the server mid-job and mid-upload, then,
    # once the next server has resumed it, a worker mid-task (its retry shows in the
    # progress); it ends matching job A bit for bit. (The server goes first: a worker's
    # retry is queued behind the other layers, so waiting for it let the job finish.)
    with fresh_pg_database(PG_URL) as pg_url:
        pg_dir = tmp_path / "pg-data"
        pg_server = ServerProcess(pg_dir, pg_url)
        servers.append(pg_server)
        job_c = pg_server.submit(JOB)
        before_c = _kill_mid_job_and_mid_upload(pg_server, pg_url, job_c)
        pg_resumed = ServerProcess(pg_dir, pg_url)
        servers.append(pg_resumed)
        _kill_a_busy_worker(pg_resumed, job_c)
        _, after_c = _resumed(pg_resumed, pg_url, job_c, before_c)
        assert set(after_c) == set(numbers_a)
        for name in after_c:
            assert after_c[name][1] == numbers_a[name][1], name
        for server in servers:  # the database is dropped next: no connection may be left
            server.stop()
