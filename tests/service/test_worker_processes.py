"""``curvprof serve --workers N`` (service/worker_processes.py): each worker listens on a
socket of its own, the kernel spreads the connections over them, the parent keeps the
port, and a worker killed with -9 is replaced by one that takes connections again."""

from __future__ import annotations

import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service import worker_processes
from service.embedded import free_port
from tests.service.helpers import child_pids, stop_serving

REPO = Path(__file__).resolve().parents[2]
CONNECTIONS = 200

linux_only = pytest.mark.skipif(not worker_processes.BALANCES, reason="SO_REUSEPORT balancing")


@linux_only
def test_a_listener_unpickles_as_a_socket_that_listens_once_served() -> None:
    reserved = worker_processes.reuseport_socket("127.0.0.1", 0)
    port = reserved.getsockname()[1]
    stand_in = worker_processes.OwnListener("127.0.0.1", port)
    first, second = (pickle.loads(pickle.dumps(stand_in)) for _ in range(2))
    try:
        for listener in (first, second):
            assert isinstance(listener, socket.socket)
            assert listener.getsockname() == ("127.0.0.1", port)
            assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        with pytest.raises(ConnectionRefusedError):  # nobody listens yet
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        first.listen(16)  # as uvicorn's create_server does once the app has started
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # queued on the one socket that listens
        assert reserved.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
    finally:
        for sock in (first, second, reserved):
            sock.close()


@pytest.mark.parametrize(("text", "migrates"), [("1\n", True), ("0\n", False), (None, False)])
def test_the_migration_setting_is_read_from_proc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None, migrates: bool
) -> None:
    setting = tmp_path / "tcp_migrate_req"
    if text is not None:
        setting.write_text(text)
    monkeypatch.setattr(worker_processes, "MIGRATE_SETTING", setting)
    assert worker_processes.migrates_queued_connections() is migrates


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # gone, or a zombie
        return inodes
    for fd in fds:
        try:
            match = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
        except OSError:
            continue
        if match:
            inodes.add(match.group(1))
    return inodes


ESTABLISHED, LISTEN = "01", "0A"  # the states of /proc/net/tcp


def _sockets_on(port: int, state: str) -> set[str]:
    """The sockets on local ``port`` in ``state`` (their inodes; /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            found.add(fields[9])
    return found


def _served_by(port: int, workers: list[int]) -> Counter[int]:
    """How many established connections to ``port`` each worker holds."""
    established = _sockets_on(port, ESTABLISHED)
    return Counter({pid: len(_socket_inodes(pid) & established) for pid in workers})


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CURVPROF_RUN_JOBS": "false",
        "CURVPROF_DATA_DIR": str(tmp_path / "data"),
    }
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--workers", "2", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_workers(proc, port, set())
        yield proc, port
    finally:
        stop_serving(proc)


def _wait_for_workers(proc: subprocess.Popen[bytes], port: int, gone: set[int]) -> list[int]:
    """The two workers, once both listen (none of them in ``gone``)."""
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the workers did not start"
        # the children that listen: multiprocessing's resource tracker is one too
        workers = [p for p in child_pids(proc.pid) if p not in gone and _listens(p, port)]
        if len(workers) == 2:
            return workers
        time.sleep(0.3)


def _listeners(pid: int, port: int) -> set[str]:
    """The sockets of ``pid`` listening on ``port``."""
    return _socket_inodes(pid) & _sockets_on(port, LISTEN)


def _listens(pid: int, port: int) -> bool:
    return bool(_listeners(pid, port))


def _connect_all(port: int, workers: list[int]) -> Counter[int]:
    """Open ``CONNECTIONS`` connections at once, get an answer on each, and count which
    worker holds each while they are all open."""
    connections = [
        socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(CONNECTIONS)
    ]
    try:
        for sock in connections:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: curvprof\r\n\r\n")
        for sock in connections:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        return _served_by(port, workers)
    finally:
        for sock in connections:
            sock.close()


@linux_only
@pytest.mark.timeout(300)
def test_connections_are_spread_over_the_workers_and_a_killed_one_is_replaced(
    two_workers: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = two_workers
    workers = _wait_for_workers(proc, port, set())
    first, second = (_listeners(pid, port) for pid in workers)
    assert first.isdisjoint(second)  # not one socket handed to both, as uvicorn does
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(("127.0.0.1", port))  # the parent keeps the port
    counts = _connect_all(port, workers)
    assert sum(counts.values()) == CONNECTIONS
    # a fair hash gives 100 +- 7 each: 50 is 7 standard deviations off
    assert min(counts.values()) >= 50, counts

    before = set(child_pids(proc.pid))
    os.kill(workers[0], signal.SIGKILL)
    while len(_sockets_on(port, LISTEN)) > 1:  # until the kernel has closed the killed one's socket
        time.sleep(0.05)
    # until its replacement listens, and for 2 s after it was spawned, the survivor answers
    # every connection at once: the replacement's socket listens only once its app started
    spawned_at: float | None = None
    answered = 0

    def both_listen() -> bool:
        return len(_sockets_on(port, LISTEN)) == 2

    while spawned_at is None or time.monotonic() < spawned_at + 2 or not both_listen():
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: curvprof\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        answered += 1
        if spawned_at is None and set(child_pids(proc.pid)) - before:
            spawned_at = time.monotonic()
    assert answered > 10
    replaced = _wait_for_workers(proc, port, {workers[0]})
    assert workers[1] in replaced
    counts = _connect_all(port, replaced)
    assert sum(counts.values()) == CONNECTIONS
    assert min(counts.values()) >= 50, counts
    assert httpx.get(f"http://127.0.0.1:{port}/v1/jobs", timeout=30).status_code == 200
