"""The client commands against a real server (no job runner; stored layers written through
the store): labels, paging, id prefixes, exit codes, JSON, tables, bad input. Behaviour
that only a real process shows (broken pipe, exit status, ``--version``) runs in one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.cli import main
from service.cli.output import JobProgressView
from service.embedded import EmbeddedServer
from service.settings import Settings
from service.store import db, repo
from service.store.models import JobRow
from tests.service.helpers import SPEC, fake_profile, store_layer, write_checkpoint
from workers.intake.checkpoints import sha256_file

ROOT = Path(__file__).resolve().parents[2]
LONG_NAME = "bert.encoder.layer.0.attention.self.query"


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_piped(command: str) -> subprocess.CompletedProcess[str]:
    """``curvprof COMMAND`` in a shell, for pipelines."""
    return subprocess.run(
        f"{sys.executable} -m service.cli {command}",
        shell=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def store_layers(server: Any, job_id: str, profiles: list[Any]) -> None:
    engine = db.make_engine(server.settings.database_url)
    with db.make_session_factory(engine)() as session:
        row = session.get(JobRow, job_id)
        assert row is not None
        for profile in profiles:
            store_layer(session, row, profile)
        repo.set_job_state(session, job_id, "succeeded")
    engine.dispose()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, str, str]]:
    """A server with one succeeded job of 150 layers (one with a long name) and one failed."""
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    server = EmbeddedServer(Settings(data_dir=data_dir, run_jobs=False))
    with server.client() as client:
        good = client.submit({"checkpoint_id": "zoo:mlp", "name": "run", "step": 10, **SPEC})
        bad = client.submit({"checkpoint_id": "zoo:vgg", **SPEC})
    profiles = [fake_profile(LONG_NAME, "attn_q", alpha=2.5)]
    profiles += [
        fake_profile(f"conv{i}", "conv", alpha=1.0 + i / 100, gamma=0.5) for i in range(149)
    ]
    store_layers(server, good.id, profiles)
    engine = db.make_engine(server.settings.database_url)
    with db.make_session_factory(engine)() as session:
        repo.set_job_state(session, bad.id, "failed", error="cannot load checkpoint model.pt2")
    engine.dispose()
    yield server, good.id, bad.id
    server.stop()


def test_cli_in_a_real_process(served) -> None:  # type: ignore[no-untyped-def]
    server, good, bad = served
    url = ["--url", server.url]
    # a reader that leaves early: quiet, no traceback (JSON lines, and the Rich table)
    piped = run_piped(f"layers --json --limit 1000 --full --url {server.url} | head -n 1")
    assert json.loads(piped.stdout)["name"] == LONG_NAME
    assert piped.stderr == ""
    table = run_piped(f"layers --limit 1000 --url {server.url} | head -n 2")
    assert table.stdout.splitlines()[1].split()[1] == LONG_NAME and table.stderr == ""
    # the state decides the exit status; a 12-character prefix names the job
    failed = run_cli("status", bad[:12], "--no-follow", *url)
    assert failed.returncode == 1
    assert failed.stdout.strip() == f"{bad} failed: cannot load checkpoint model.pt2"
    ok = run_cli("status", good[:12], "--no-follow", "--json", *url)
    assert ok.returncode == 0 and json.loads(ok.stdout)["state"] == "succeeded"
    # an unreadable .pt2: torch's logged traceback is not shown, one line is
    bad = Path(str(server.settings.data_dir)).parent / "bad.pt2"
    bad.write_bytes(b"PK\x03\x04garbage")
    pt2 = run_cli("profile", str(bad), "--data", "synthetic")
    assert pt2.returncode == 2 and pt2.stderr.startswith("curvprof: error: ")
    assert pt2.stderr.count("\n") == 1 and "Traceback" not in pt2.stderr
    # abbreviations are refused, not guessed
    abbreviated = run_cli("submit", "zoo:mlp", "--dat", "digits", *url)
    assert abbreviated.returncode == 2 and "unrecognized arguments: --dat" in abbreviated.stderr


def test_bad_input_is_one_line_and_non_zero(  # type: ignore[no-untyped-def]
    served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, good, _ = served
    url = ["--url", server.url]
    out = Path(str(server.settings.data_dir)) / "x.csv"
    cases = [
        (["export", "--job-id", "nosuchjob", "-o", str(out), *url], "job nosuchjob not found"),
        (["layers", "--kind", "convv", *url], "unknown layer kind 'convv'; one of: conv, attn_q"),
        (["status", "0" * 12, "--no-follow", *url], "not found"),
        (["batch", "zoo:mlp", "zoo:mlp", "--steps", "1", *url], "--steps has 1 values for 2"),
        (["plot", "-o", str(out), *url], "give a layer id or --identity"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("curvprof: error: ") and words in err and err.count("\n") == 1
    assert not out.exists()
    # the user's file is named (the server names the uploaded file), not its temporary copy
    mine = tmp_path / "mine.npz"
    np.savez(mine, x=np.zeros(3))
    assert main(["submit", "zoo:mlp", "--data", str(mine), *url]) == 2
    err = capsys.readouterr().err
    assert "mine.npz" in err and "upload-" not in err
    # --layers matching nothing lists the layers
    weights = write_checkpoint(tmp_path / "ckpt")
    data = tmp_path / "d.npz"
    np.savez(data, inputs=np.zeros((8, 64)), targets=np.zeros(8, dtype=np.int64))
    assert main(["profile", str(weights.parent), "--data", str(data), "--layers", "nosuch*"]) == 2
    err = capsys.readouterr().err
    assert "matches no layer name or kind; the layers: layers.0, layers.1, head" in err
    assert main(["export", "--job-id", good[:12], "-o", str(out), *url]) == 0
    assert len(out.read_text().splitlines()) == 151


def test_commands_and_json(served, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    server, good, _ = served
    url = ["--url", server.url]

    def run(*argv: str) -> str:
        assert main([*argv, *url]) == 0, argv
        return capsys.readouterr().out

    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("curvprof ")
    # the README's own line, with a dashed sort value
    lines = run("layers", "--kind", "conv", "--alpha-min", "2.0", "--sort", "-alpha").splitlines()
    assert [line.split()[1] for line in lines[1:4]] == ["conv148", "conv147", "conv146"]
    assert len(lines) == 1 + 49  # alpha 2.00 .. 2.48
    # names are never cut in tables
    assert LONG_NAME in run("layers", "--job-id", good[:12], "--kind", "attn_q")
    # submit with every job field, and its labels
    job = json.loads(
        run(
            "submit", "zoo:mlp", "--h-only", "--micro-batch-size", "8", "--variants", "ggn,ef",
            "--batch-size", "64", "--name", "run", "--tag", "a", "--tag", "b", "--step", "20",
            "--json",
        )
    )  # fmt: skip
    assert (job["name"], job["tags"], job["step"]) == ("run", ["a", "b"], 20)
    spec = job["spec"]
    assert (spec["hvp_diagnostics"], spec["micro_batch_size"], spec["variants"]) == (
        False,
        8,
        ["ggn", "ef"],
    )
    batch = json.loads(
        run("batch", "zoo:mlp", "zoo:mlp", "--steps", "30,40", "--name", "run", "--json")
    )
    assert [j["step"] for j in batch["jobs"]] == [30, 40]
    steps = [json.loads(line)["step"] for line in run("jobs", "--name", "run", "--json").split()]
    assert sorted(steps) == [10, 20, 30, 40]
    assert run("jobs", "--tag", "a", "--tag", "b", "--json").count("\n") == 1
    # layers filtered on the job's labels carry its step
    rows = [
        json.loads(x)
        for x in run("layers", "--job-name", "run", "--step", "10", "--json").split("\n")
        if x
    ]
    assert len(rows) == 100 and {r["step"] for r in rows} == {10}
    summary = json.loads(run("summary", "--job-id", good, "--json"))
    conv = next(r for r in summary["rows"] if r["kind"] == "conv")
    assert conv["n"] == 149 and conv["alpha_mean"] == pytest.approx(1.0 + 74 / 100)
    assert "attn_q" in run("summary", "--job-id", good[:12])
    layer_id = rows[0]["id"]
    png = tmp_path / "layer.png"
    run("plot", str(layer_id), "-o", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run("plot", "--identity", "--job-id", good[:12], "-o", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(run("preconditioner", good[:12], "--json"))["job_id"] == good
    # a training directory is uploaded like its weights file, and listed
    weights = write_checkpoint(tmp_path / "ckpt", seed=3)
    job = json.loads(run("submit", str(weights.parent), "--json"))
    assert job["spec"]["checkpoint_id"] == sha256_file(weights)
    listed = [json.loads(line) for line in run("checkpoints", "--json").splitlines()]
    assert job["spec"]["checkpoint_id"] in {c["id"] for c in listed}
    assert job["spec"]["checkpoint_id"] in run("checkpoints")


def test_jobs_lists_every_page(make_server, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from api_schemas import JobSpec

    server = make_server()
    engine = db.make_engine(server.settings.database_url)
    with db.make_session_factory(engine)() as session:
        for step in range(230):
            spec = JobSpec(checkpoint_id="zoo:mlp", dataset="digits", step=step)
            repo.create_job(session, spec, arch="mlp")
    engine.dispose()
    assert main(["jobs", "--url", server.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 230 and lines[0].split()[:4] == ["id", "state", "name", "step"]
    assert main(["jobs", "--limit", "7", "--json", "--url", server.url]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 7


def test_progress_is_plain_lines_off_a_terminal() -> None:
    from api_schemas import Job, JobProgress, JobSpec, JobTimings

    stream = StringIO()
    view = JobProgressView("abc", stream)
    spec = JobSpec(checkpoint_id="zoo:mlp", dataset="digits")
    timings = JobTimings(created_at="2026-01-01T00:00:00")  # type: ignore[arg-type]
    for state, done in (("queued", 0), ("running", 0), ("running", 0), ("running", 2)):
        progress = JobProgress(done=done, total=3)
        view.show(Job(id="abc", state=state, spec=spec, timings=timings, progress=progress))  # type: ignore[arg-type]
    view.close()
    assert "\r" not in stream.getvalue()
    assert stream.getvalue().splitlines() == [
        "abc queued 0/3 layers",
        "abc running 0/3 layers",
        "abc running 2/3 layers",
    ]


def test_local_progress_is_plain_lines_off_a_terminal() -> None:
    from service.cli.output import LayerProgressView

    stream = StringIO()
    view = LayerProgressView(stream=stream, total=2)
    for phase in ("gradients", "SVD"):
        view.on_phase(phase)
    for done, name in enumerate(("a", "b"), start=1):
        for phase in ("h_k", "Lanczos", "fits"):
            view.on_phase(phase)
        view(name, done, 2)
    view.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert lines[:5] == [
        "profiling: gradients (all 2 layers)",
        "profiling: SVD (all 2 layers)",
        "profiling: h_k (layer 1 of 2)",
        "profiling: Lanczos (layer 1 of 2)",
        "profiling: fits (layer 1 of 2)",
    ]
    assert lines[5].startswith("profiling 1/2 layers: a (eta 0:00:0")
    assert lines[6:] == ["profiling 2/2 layers: b (eta 0:00:00)"]
    quiet = StringIO()
    LayerProgressView(quiet=True, stream=quiet)("a", 1, 1)
    assert quiet.getvalue() == ""
