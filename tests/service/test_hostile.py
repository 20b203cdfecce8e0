"""Hostile input against a real ``curvprof serve`` subprocess on 127.0.0.1 and the CLI.

The corpus is ``bench.hostile``'s (the campaign in docs/reliability.md, "Hostile input");
here every case goes over REST and one case per command through ``curvprof`` processes.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.hostile import (
    SERVER_ENV,
    HostileCase,
    ServerProcess,
    build_corpus,
    free_port,
    run_cases,
)
from service.embedded import EmbeddedServer
from service.settings import Settings
from service.upload import remove_stale_uploads
from tests.service.helpers import partial_upload

MIB = 1 << 20


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, Path, list[HostileCase]]]:
    """One ``curvprof serve`` subprocess (pickle opt-in on) and the corpus, for this module;
    the last test kills it."""
    work = tmp_path_factory.mktemp("hostile")
    cases = build_corpus(work / "corpus")
    (work / "data").mkdir()
    server = ServerProcess(work / "data", free_port(), SERVER_ENV)
    try:
        server.wait_ready()
        yield server, work / "corpus", cases
    finally:
        server.stop()


def test_hostile_corpus_over_rest_and_the_cli(
    hostile: tuple[ServerProcess, Path, list[HostileCase]],
) -> None:
    server, corpus, cases = hostile
    result = run_cases(server, corpus, cases, cli_cases=1)
    assert not result.failures, [(r.name, r.channel, r.status, r.message) for r in result.failures]
    by_channel = [r.channel for r in result.results]
    assert by_channel.count("rest") == len(cases) and by_channel.count("cli") == 2
    assert result.rss_growth_mib <= 256, (result.baseline_peak_mib, result.final_peak_mib)
    assert result.leftovers == []
    # The .pt2 payload did run (in the upload's child process), never in the server.
    assert result.marker_pids and result.server_pid not in result.marker_pids


def test_chunked_oversize_upload_is_refused_when_it_crosses_the_limit(tmp_path: Path) -> None:
    server = EmbeddedServer(Settings(data_dir=tmp_path / "d", run_jobs=False, max_upload_bytes=MIB))
    try:
        sock = partial_upload(server.url, 2 * MIB, chunked=True, total=0)
        sent, refused = 2 * MIB, False
        sock.settimeout(0.05)
        block = b"%x\r\n%s\r\n" % (65536, b"\0" * 65536)
        while sent < 64 * MIB:
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                pass
            try:
                sock.sendall(block)
            except OSError:
                refused = True
                break
            sent += 65536
        sock.settimeout(10)
        try:
            reply = sock.recv(4096)
        except OSError:
            reply = b""
        sock.close()
        assert reply.startswith(b"HTTP/1.1 413"), (reply[:200], refused)
        assert sent <= 4 * MIB  # answered near the 1 MiB limit, not after draining 64 MiB
        assert not list((server.settings.artifacts_dir / "tmp").glob("upload-*"))
    finally:
        server.stop()


def test_kill_9_mid_upload_leaves_nothing_after_restart(
    hostile: tuple[ServerProcess, Path, list[HostileCase]],
) -> None:
    server = hostile[0]
    sock = partial_upload(server.url, 2 * MIB, chunked=False, total=64 * MIB)
    tmp_dir = server.data_dir / "artifacts" / "tmp"
    deadline = time.monotonic() + 30
    while not list(tmp_dir.glob("upload-*.part")) and time.monotonic() < deadline:
        time.sleep(0.1)
    parts = list(tmp_dir.glob("upload-*.part"))
    assert parts and parts[0].stat().st_size > 0
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=30)
    sock.close()
    assert list(tmp_dir.glob("upload-*.part")) == parts  # the kill left it behind
    restarted = EmbeddedServer(Settings(data_dir=server.data_dir, run_jobs=False))
    try:
        assert list(tmp_dir.glob("upload-*")) == []
    finally:
        restarted.stop()


def test_start_up_cleanup_spares_uploads_in_flight(tmp_path: Path) -> None:
    import fcntl

    live, stale = tmp_path / "upload-live.part", tmp_path / "upload-dead.safetensors"
    live.write_bytes(b"x")
    stale.write_bytes(b"y")
    (tmp_path / "other.txt").write_bytes(b"z")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert remove_stale_uploads(tmp_path) == 1
        assert live.exists() and not stale.exists() and (tmp_path / "other.txt").exists()
    finally:
        os.close(fd)
    assert remove_stale_uploads(tmp_path) == 1 and not live.exists()


@pytest.mark.parametrize("count", [9, 200])
def test_form_fields_are_bounded_in_count(tmp_path: Path, count: int) -> None:
    import httpx

    from bench.hostile import multipart

    server = EmbeddedServer(Settings(data_dir=tmp_path / "d", run_jobs=False))
    try:
        fields = {f"f{i}": "v" * 1000 for i in range(count)}
        body, content_type = multipart(fields, "w.safetensors", b"\0" * 16)
        response = httpx.post(
            f"{server.url}/v1/checkpoints",
            content=body,
            headers={"content-type": content_type},
            timeout=30,
        )
        assert response.status_code == 413 and "form fields" in response.json()["detail"]
        body, content_type = multipart(dict(list(fields.items())[:8]), "w.bin", b"\0" * 16)
        response = httpx.post(
            f"{server.url}/v1/checkpoints",
            content=body,
            headers={"content-type": content_type},
            timeout=30,
        )
        assert response.status_code == 415  # eight fields pass; the format is what is refused
    finally:
        server.stop()
