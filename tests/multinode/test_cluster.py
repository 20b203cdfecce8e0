"""A real two-node Ray cluster on one machine: two test hosts (10.77.0.1 head, 10.77.0.2 worker)
inside a network namespace this module creates, PostgreSQL, ``curvprof serve`` and the client,
all inside it. Layers spread over both nodes, a lost node mid-job costs nothing, and a
single-node run gives the same numbers."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.multinode.netns import (
    HOST_A,
    HOST_B,
    NetNamespace,
    RayNodeProcesses,
    alive,
    busy_workers,
    kill_pids,
    ray_node_processes,
    unavailable_reason,
)

REASON = unavailable_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

REPO = Path(__file__).resolve().parents[2]
GCS_PORT = 6379
API = "http://127.0.0.1:8000"
# The small job; 256-wide layers (~0.25 s each) so that both nodes get work.
SMALL = {
    "checkpoint_id": "zoo:mlp",
    "zoo_config": {"widths": [256] * 7},
    "dataset": "digits",
    "batch_size": 128,
    "top_k": 10,
    "lanczos_steps": 5,
    "dtype": "float64",
    "seed": 0,
}
# ~1 s per layer: long enough to stop a node while it computes one.
# long enough (~1 s a layer) that node 2 is busy mid-job when it is stopped
# long enough per layer to stop a node mid-job: tanh keeps every layer on the double backward
# (a ReLU net's products from its held Jacobians made this job 2.5× shorter, 9.8 → 4.0 s)
LONG = {
    **SMALL,
    "zoo_config": {"widths": [48] * 11, "activation": "tanh"},
    "batch_size": 1024,
    "lanczos_steps": 400,
}
PROVENANCE_KEYS = {"id", "job_id", "node_id", "hostname", "wall_seconds"}


def _env(token: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "CURVPROF_"))}
    env.update(
        PYTHONPATH=str(REPO),  # Ray workers on both nodes import workers.* from this checkout
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1",  # a second node; both IPs are namespace-only
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_health_check_period_ms="1000",  # a dead node is noticed in ~3 s, not ~15 s
        RAY_health_check_timeout_ms="1000",
        RAY_health_check_failure_threshold="3",
        CURVPROF_LAYERS_PER_TASK="1",
        CURVPROF_MAX_CONCURRENT_JOBS="1",
        CURVPROF_TASK_MAX_RETRIES="3",
        OMP_NUM_THREADS="1",
    )
    return env


def _ray_start(*args: str) -> list[str]:
    return [
        *(sys.executable, "-m", "ray.scripts.scripts", "start"),
        *("--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"),
        f"--object-store-memory={150 * 2**20}",
        *args,
    ]


@dataclass
class Cluster:
    ns: NetNamespace
    env: dict[str, str]
    work: Path
    db_url: str = ""
    head_id: str = ""
    node2_id: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def head_dir(self) -> str:
        return str(self.work / "h")

    @property
    def node2_dir(self) -> str:
        return str(self.work / "n2")

    def node2(self) -> RayNodeProcesses:
        return ray_node_processes(self.ns, self.node2_dir)

    def start_job(self, spec: dict[str, Any], tag: str) -> tuple[subprocess.Popen[Any], Path]:
        out = self.work / f"{tag}.json"
        argv = [sys.executable, "-m", "tests.multinode.client", "run", "--url", API]
        argv += ["--db-url", self.db_url, "--spec", json.dumps(spec), "--out", str(out)]
        argv += ["--progress", str(self.work / f"{tag}.progress")]
        log = (self.work / f"{tag}.log").open("ab")
        return self.ns.popen(argv, self.env, log=log, cwd=REPO), out

    def finish(self, proc: subprocess.Popen[Any], out: Path, tag: str) -> dict[str, Any]:
        code = proc.wait(timeout=240)
        if code != 0 or not out.exists():
            client_log = (self.work / f"{tag}.log").read_text()[-3000:]
            server_log = (self.work / "serve.log").read_text()[-3000:]
            raise AssertionError(f"client exited {code}:\n{client_log}\nserver:\n{server_log}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    def run_job(self, spec: dict[str, Any], tag: str) -> dict[str, Any]:
        return self.finish(*self.start_job(spec, tag), tag)

    def progress(self, tag: str) -> dict[str, Any] | None:
        path = self.work / f"{tag}.progress"
        lines = path.read_text().splitlines() if path.exists() else []
        complete = [ln for ln in lines if ln.endswith("}")]
        return json.loads(complete[-1]) if complete else None


def _timed(cluster: Cluster, key: str, started: float) -> None:
    cluster.timings[key] = round(time.monotonic() - started, 1)


def _teardown(cluster: Cluster, server: subprocess.Popen[Any] | None, pg_dir: str | None) -> None:
    try:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
        if pg_dir:
            cluster.ns.run(
                ["bash", "tests/pg.sh", "stop", pg_dir],
                cluster.env,
                timeout=60,
                cwd=REPO,
                check=False,
            )
        kill_pids(cluster.ns.pids(), grace=5.0)
        leftover = [p for p in cluster.ns.pids() if alive(p)]
    finally:
        cluster.ns.destroy(grace=2.0)
        shutil.rmtree(cluster.work, ignore_errors=True)
    assert not leftover, f"processes survived in {cluster.ns.name}: {leftover}"


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    try:
        ns = NetNamespace.create()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace: {exc.stderr.strip()}")
    work = Path(tempfile.mkdtemp(prefix="cpv-", dir="/tmp"))  # short: Ray's socket paths
    token = work / "ray-token"
    token.write_text(os.urandom(32).hex())
    token.chmod(0o600)
    c = Cluster(ns=ns, env=_env(token), work=work)
    state: dict[str, Any] = {"server": None, "pg": None}
    request.addfinalizer(lambda: _teardown(c, state["server"], state["pg"]))
    t0 = time.monotonic()
    pg = ns.run(["bash", "tests/pg.sh", "start"], c.env, timeout=120, cwd=REPO)
    exports = dict(line.removeprefix("export ").split("=", 1) for line in pg.stdout.splitlines())
    state["pg"], c.db_url = exports["CURVPROF_TEST_PG_DIR"], exports["CURVPROF_TEST_PG_URL"]
    _timed(c, "postgres", t0)
    t1 = time.monotonic()
    head = [
        "--head",
        f"--node-ip-address={HOST_A}",
        f"--port={GCS_PORT}",
        "--include-dashboard=false",
    ]
    head += [f"--temp-dir={c.head_dir}", "--min-worker-port=20000", "--max-worker-port=20999"]
    ns.run(_ray_start(*head, "--dashboard-agent-listen-port=52365"), c.env, timeout=120)
    _timed(c, "ray_head", t1)
    serve = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", "8000"]
    serve += ["--data-dir", str(work / "data"), "--db-url", c.db_url]
    serve += ["--ray-address", f"{HOST_A}:{GCS_PORT}"]
    state["server"] = ns.popen(serve, c.env, log=(work / "serve.log").open("ab"), cwd=REPO)
    node2 = [f"--address={HOST_A}:{GCS_PORT}", f"--node-ip-address={HOST_B}"]
    node2 += [f"--temp-dir={c.node2_dir}", "--min-worker-port=21000", "--max-worker-port=21999"]
    ns.run(_ray_start(*node2, "--dashboard-agent-listen-port=52366"), c.env, timeout=120)
    _timed(c, "two_nodes", t1)
    ready = [
        sys.executable,
        "-m",
        "tests.multinode.client",
        "ready",
        "--url",
        API,
        "--timeout",
        "120",
    ]
    ns.run(ready, c.env, timeout=150, cwd=REPO)
    _timed(c, "server_ready", t0)
    c.head_id = ray_node_processes(ns, c.head_dir).node_id or ""
    c.node2_id = c.node2().node_id or ""
    assert c.head_id and c.node2_id and c.head_id != c.node2_id
    yield c
    print(f"\nmultinode timings (s): {c.timings}")


def _node_ids(result: dict[str, Any]) -> list[str]:
    return [row["node_id"] for row in result["layer_results"]]


def _assert_complete_once(result: dict[str, Any], total: int, *, retried: bool = False) -> None:
    """Every layer stored once; ``retried``: the lost node's tasks ran again, and their
    layers' ``attempts`` say so (a run with no loss has one attempt per layer)."""
    job = result["job"]
    assert job["state"] == "succeeded", job["error"]
    assert job["progress"]["done"] == job["progress"]["total"] == total
    names = [row["layer_name"] for row in result["layer_results"]]
    assert len(names) == total and len(set(names)) == total  # every layer, stored once
    assert sorted(names) == sorted(lp["name"] for lp in job["progress"]["layers"])
    assert all(r["state"] == "succeeded" for r in result["job_layers"])
    attempts = [r["attempts"] for r in result["job_layers"]]
    if retried:
        assert min(attempts) >= 1 and max(attempts) >= 2, attempts
    else:
        assert attempts == [1] * len(attempts), attempts


@pytest.fixture(scope="module")
def spread(cluster: Cluster) -> dict[str, Any]:
    """The small job on both nodes (Ray places tasks; resubmitted if one node took all)."""
    assert cluster.node2().raylet is not None
    for attempt in range(3):
        t0 = time.monotonic()
        result = cluster.run_job(SMALL, f"spread{attempt}")
        _timed(cluster, f"spread_job_{attempt}", t0)
        if len(set(_node_ids(result))) == 2:
            break
    result["attempt"] = attempt
    return result


def test_layers_are_computed_on_both_nodes(cluster: Cluster, spread: dict[str, Any]) -> None:
    _assert_complete_once(spread, total=8)
    per_node = {n: _node_ids(spread).count(n) for n in set(_node_ids(spread))}
    print(f"\nspread job: layers per node {per_node} (attempt {spread['attempt'] + 1})")
    assert set(per_node) == {cluster.head_id, cluster.node2_id}
    by_name = {row["layer_name"]: row["node_id"] for row in spread["layer_results"]}
    assert all(layer["node_id"] == by_name[layer["name"]] for layer in spread["layers"])


def test_losing_a_worker_node_mid_job(cluster: Cluster, spread: dict[str, Any]) -> None:
    node2 = cluster.node2()
    assert node2.raylet is not None, "node 2 is not running"
    t0 = time.monotonic()
    proc, out = cluster.start_job(LONG, "fault")
    killed: dict[str, Any] | None = None
    deadline = time.monotonic() + 120
    while killed is None:
        assert proc.poll() is None, "the job ended before node 2 could be stopped mid-job"
        assert time.monotonic() < deadline, "node 2 never computed a layer"
        snap = cluster.progress("fault")
        done_on_2 = [
            lp["name"] for lp in (snap or {}).get("layers", []) if lp["node_id"] == cluster.node2_id
        ]
        if snap and done_on_2 and snap["done"] < snap["total"]:
            node2 = cluster.node2()
            if busy_workers(cluster.ns, node2, "profile_group") and node2.raylet is not None:
                os.kill(node2.raylet, signal.SIGKILL)  # the raylet first, then the rest
                kill_pids(node2.others, sig=signal.SIGKILL, grace=5.0)
                killed = {"done": snap["done"], "on_node2": done_on_2, "pids": node2.all}
                killed["at"] = round(time.monotonic() - t0, 1)
        time.sleep(0.05)
    result = cluster.finish(proc, out, "fault")
    _timed(cluster, "fault_job", t0)
    print(
        f"\nfault job: stopped node 2 ({len(killed['pids'])} pids) at {killed['at']} s with "
        f"{killed['done']} layers stored ({killed['on_node2']} from node 2); finished in "
        f"{result['seconds']:.1f} s"
    )
    assert not any(alive(p) for p in killed["pids"])
    assert cluster.node2().all == []
    _assert_complete_once(result, total=12, retried=True)
    by_name = {row["layer_name"]: row["node_id"] for row in result["layer_results"]}
    assert all(by_name[name] == cluster.node2_id for name in killed["on_node2"])  # kept
    later = [n for n in by_name if n not in killed["on_node2"]]
    assert set(by_name.values()) <= {cluster.head_id, cluster.node2_id}
    assert any(by_name[n] == cluster.head_id for n in later)


def _assert_same_numbers(a: Any, b: Any, where: str = "") -> int:
    """Recursive equality, floats to rel 1e-9; returns how many numbers were compared."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        return sum(
            _assert_same_numbers(a[k], b[k], f"{where}.{k}") for k in a if k not in PROVENANCE_KEYS
        )
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        return sum(
            _assert_same_numbers(x, y, f"{where}[{i}]")
            for i, (x, y) in enumerate(zip(a, b, strict=True))
        )
    if isinstance(a, float | int) and not isinstance(a, bool) and isinstance(b, float | int):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {a} != {b}"
        return 1
    assert a == b, f"{where}: {a!r} != {b!r}"
    return 0


def test_single_node_run_gives_the_same_numbers(cluster: Cluster, spread: dict[str, Any]) -> None:
    node2 = cluster.node2()
    if node2.raylet is not None:  # the fault test did not run: leave the head alone
        os.kill(node2.raylet, signal.SIGKILL)
        kill_pids(node2.others, sig=signal.SIGKILL, grace=5.0)
    t0 = time.monotonic()
    single = cluster.run_job(SMALL, "single")
    _timed(cluster, "single_node_job", t0)
    _assert_complete_once(single, total=8)
    assert set(_node_ids(single)) == {cluster.head_id}
    ours = {layer["name"]: layer for layer in spread["layers"]}
    ref = {layer["name"]: layer for layer in single["layers"]}
    assert ours.keys() == ref.keys()
    compared = sum(_assert_same_numbers(ours[n], ref[n], n) for n in ours)
    print(f"\nsingle-node vs two-node: {compared} stored numbers equal to rel 1e-9")
    assert compared > 8 * 50
