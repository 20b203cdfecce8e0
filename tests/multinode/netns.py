"""Test hosts inside a Linux network namespace, and the processes that run there.

``NetNamespace.create()`` makes ``curvprof-<random>`` with ``lo`` up and a veth pair whose two
ends, 10.77.0.1/24 and 10.77.0.2/24, both stay inside it: two "hosts" that can reach each
other and nothing else. Every command runs through ``ip netns exec``; ``destroy()`` kills
whatever still runs inside (``ip netns pids``) and deletes the namespace.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HOST_A = "10.77.0.1"
HOST_B = "10.77.0.2"


def unavailable_reason() -> str | None:
    """Why namespaced tests cannot run here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2 `ip` is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` unavailable: {probe.stderr.strip()}"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class NetNamespace:
    name: str
    started: list[subprocess.Popen[Any]] = field(default_factory=list)

    @classmethod
    def create(cls, prefix: str = "curvprof") -> NetNamespace:
        ns = cls(f"{prefix}-{secrets.token_hex(4)}")
        _ip("netns", "add", ns.name)
        try:
            _ip("-n", ns.name, "link", "set", "lo", "up")
            _ip("-n", ns.name, "link", "add", "cpv0", "type", "veth", "peer", "name", "cpv1")
            _ip("-n", ns.name, "addr", "add", f"{HOST_A}/24", "dev", "cpv0")
            _ip("-n", ns.name, "addr", "add", f"{HOST_B}/24", "dev", "cpv1")
            _ip("-n", ns.name, "link", "set", "cpv0", "up")
            _ip("-n", ns.name, "link", "set", "cpv1", "up")
        except subprocess.CalledProcessError:
            ns.destroy()
            raise
        return ns

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        timeout: float,
        cwd: str | Path | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(argv),
            env=dict(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[:4])}... exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def popen(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        log: IO[bytes] | None = None,
        cwd: str | Path | None = None,
    ) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(
            self.argv(argv), env=dict(env), cwd=cwd, stdout=log, stderr=subprocess.STDOUT
        )
        self.started.append(proc)
        return proc

    def pids(self) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split() if p.strip().isdigit()]

    def destroy(self, grace: float = 5.0) -> None:
        """Kill every process inside (TERM, then KILL after ``grace``), delete the namespace."""
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
        kill_pids(self.pids(), grace=grace)
        for proc in self.started:
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


# ---------------------------------------------------------------------- processes (/proc)


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def descendants(root: int, pids: Iterable[int]) -> list[int]:
    """Every pid among ``pids`` whose parent chain (within ``pids``) reaches ``root``."""
    children: dict[int, list[int]] = {}
    for pid in pids:
        ppid = parent(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    out: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def kill_pids(pids: Iterable[int], *, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to each pid, then SIGKILL whatever is still alive after ``grace`` seconds."""
    pending = [p for p in pids if p != os.getpid()]
    for pid in pending:
        _signal(pid, sig)
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if alive(p)]
        time.sleep(0.05)
    for pid in pending:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0  # SIGKILL is not instantaneous either
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if alive(p)]
        time.sleep(0.05)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


# ---------------------------------------------------------------------- one Ray node


@dataclass
class RayNodeProcesses:
    """The processes of one Ray node, found by its ``--temp-dir`` in their command lines."""

    raylet: int | None
    node_id: str | None
    others: list[int]

    @property
    def all(self) -> list[int]:
        return ([self.raylet] if self.raylet is not None else []) + self.others


def ray_node_processes(ns: NetNamespace, temp_dir: str) -> RayNodeProcesses:
    """Raylet (by its command line), every process the raylet started (agents, workers) and
    the node's other daemons (log monitor; on a head GCS and friends) that name ``temp_dir``."""
    marker = re.compile(re.escape(temp_dir.rstrip("/")) + r"(/|\s|$)")
    pids = ns.pids()
    raylet, node_id = None, None
    named: list[int] = []
    for pid in pids:
        line = cmdline(pid)
        if not marker.search(line):
            continue
        if "/raylet/raylet " in line and raylet is None:
            raylet = pid
            match = re.search(r"--node_id=([0-9a-f]+)", line)
            node_id = match.group(1) if match else None
        else:
            named.append(pid)
    children = descendants(raylet, pids) if raylet is not None else []
    others = sorted(set(named) | set(children))
    return RayNodeProcesses(raylet=raylet, node_id=node_id, others=others)


def busy_workers(ns: NetNamespace, node: RayNodeProcesses, function: str) -> list[int]:
    """Workers of ``node`` executing ``function`` now (Ray titles them ``ray::<function>``)."""
    if node.raylet is None:
        return []
    pids = ns.pids()
    return [p for p in descendants(node.raylet, pids) if cmdline(p).startswith(f"ray::{function}")]
