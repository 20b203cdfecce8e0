"""The command line as a user runs it (a real process): shell completion by Typer's
protocol, choices read from their declarations, one-line errors and their exit codes,
``--json`` everywhere, ``--quick``, and progress that is plain lines in a log and a live
Rich bar with the engine's phase and an ETA on a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest

from api_schemas.enums import PROFILE_PHASES, ProfilePhase
from api_schemas.profile import DTypeName, NamedLoss
from service.cli import main
from service.cli.app import build_app
from service.cli.params import QUICK, MeasureOptions
from workers.zoo import ARCHS

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "60"}


def curvprof(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def complete(words: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> list[str]:
    """What bash completion offers for the last of ``words`` (Typer's env var protocol)."""
    monkeypatch.setenv("_CURVPROF_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", str(len(words.split(" ")) - 1))
    with pytest.raises(SystemExit) as finished:
        main([])
    assert finished.value.code == 0
    return capsys.readouterr().out.split()


def test_shell_completion_script_and_protocol(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = curvprof("--show-completion", "bash")  # the shell named, whichever runs it
    assert script.returncode == 0, script.stderr
    assert "_CURVPROF_COMPLETE=complete_bash" in script.stdout
    assert "complete -o default -F" in script.stdout and "curvprof" in script.stdout
    assert complete("curvprof lay", monkeypatch, capsys) == ["layers"]
    assert complete("curvprof pre", monkeypatch, capsys) == ["preconditioner"]
    assert "zsh" in complete("curvprof --show-completion ", monkeypatch, capsys)
    archs = sorted(a for a in ARCHS if a.startswith("v"))
    assert complete("curvprof train v", monkeypatch, capsys) == archs
    assert complete("curvprof profile m.pt2 --loss ", monkeypatch, capsys) == list(
        get_args(NamedLoss)
    )


def commands(group: Any, path: str = "curvprof") -> dict[str, Any]:
    import typer

    found: dict[str, Any] = {}
    for name, command in getattr(group, "commands", {}).items():
        if hasattr(command, "commands"):
            found.update(commands(command, f"{path} {name}"))
        else:
            found[f"{path} {name}"] = command
    return found if found else {path: typer.main.get_command(group)}


def test_every_command_takes_json_and_choices_come_from_declarations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import typer

    every = commands(typer.main.get_command(build_app()))
    assert {"curvprof profile", "curvprof layers", "curvprof db upgrade"} <= set(every)
    for path, command in every.items():
        flags = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert "--json" in flags, path
    for argv, declared in (
        (["profile", "m.pt2", "--data", "digits", "--loss", "hinge"], get_args(NamedLoss)),
        (["submit", "zoo:mlp", "--dtype", "float16"], get_args(DTypeName)),
        (["train", "transformer-xl", "--out", "x"], tuple(ARCHS)),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("curvprof: error: ") and err.count("\n") == 1, err
        offered = err.split("one of", 1)[1]
        assert [name for name in declared if name in offered] == list(declared), err


def test_bad_command_lines_are_one_line_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["layers", "--kindd", "conv"], "unrecognized arguments: --kindd (did you mean --kind?)"),
        (["status"], "Missing argument"),
        (["nosuchcommand"], "No such command"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("curvprof: error: ") and words in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
    done = curvprof("layers", "--kindd", "conv")  # the same in a real process
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert main(["--help"]) == 0 and "Exit codes: 0 done" in capsys.readouterr().out
    assert main(["profile", "--help"]) == 0
    assert "fast first look" in " ".join(capsys.readouterr().out.split())
    quick = MeasureOptions(quick=True, top_k=4).settings()
    assert (quick["top_k"], quick["lanczos_steps"]) == (4, QUICK["lanczos_steps"])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from workers.intake.checkpoints import save_checkpoint
    from workers.zoo import build_model

    root = tmp_path_factory.mktemp("tiny")
    config = {"arch": "mlp", "in_features": 10, "widths": [16], "classes": 10}
    (root / "config.json").write_text(json.dumps(config))
    save_checkpoint(build_model(config), root / "ckpt")
    rng = np.random.default_rng(0)
    data = root / "d.npz"
    np.savez(data, inputs=rng.normal(size=(300, 10)), targets=rng.integers(0, 10, 300))
    return root / "ckpt", data


def test_quick_json_profile_with_plain_progress_off_a_terminal(
    tiny_model: tuple[Path, Path],
) -> None:
    ckpt, data = tiny_model
    done = curvprof("profile", str(ckpt), "--data", str(data), "--quick", "--json")
    assert done.returncode == 0, done.stderr
    profile = json.loads(done.stdout)
    settings = profile["settings"]
    assert (settings["top_k"], settings["lanczos_steps"], settings["batch_size"]) == (
        QUICK["top_k"],
        QUICK["lanczos_steps"],
        QUICK["batch_size"],
    )
    log = done.stderr
    assert "\r" not in log and "\x1b" not in log
    names = [layer["name"] for layer in profile["layers"]]
    assert log.splitlines()[-1].startswith(f"profiling {len(names)}/{len(names)} layers: ")
    for phase in PROFILE_PHASES:  # every phase of the engine is reported
        assert f"profiling: {phase} (" in log, phase


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


def test_live_progress_on_a_terminal() -> None:
    import torch
    from torch import nn

    from service.cli.output import LayerProgressView
    from workers.curvature import profile_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    x, y = torch.randn(40, 6), torch.randint(0, 4, (40,))
    screen = Terminal()
    view = LayerProgressView(stream=screen, total=2)
    seen: list[str] = []

    def on_phase(phase: ProfilePhase) -> None:
        seen.append(phase)
        view.on_phase(phase)

    profile_model(model, x, y, top_k=3, lanczos_steps=3, progress=view, on_phase=on_phase)
    view.close()
    assert "\x1b[" in screen.getvalue()  # Rich's live bar
    assert "profiling: fits" in screen.getvalue() and "2/2" in screen.getvalue()
    assert "eta 0:00:00" in screen.getvalue()
    shared, per_layer = PROFILE_PHASES[:3], PROFILE_PHASES[3:]
    assert seen == [*shared, *per_layer, *per_layer]  # in order, the layer phases once a layer


def test_job_progress_is_a_live_bar_on_a_terminal() -> None:
    from api_schemas import Job, JobProgress, JobSpec, JobTimings, LayerProgress
    from service.cli.output import JobProgressView

    screen = Terminal()
    view = JobProgressView("abc", screen)
    spec = JobSpec(checkpoint_id="zoo:mlp", dataset="digits")
    timings = JobTimings(created_at="2026-01-01T00:00:00")  # type: ignore[arg-type]
    layers = [LayerProgress(name="features.3", state="running")]
    for state, done in (("queued", 0), ("running", 1), ("succeeded", 3)):
        progress = JobProgress(done=done, total=3, layers=layers if state == "running" else [])
        view.show(Job(id="abc", state=state, spec=spec, timings=timings, progress=progress))  # type: ignore[arg-type]
    view.close()
    assert "\x1b[" in screen.getvalue() and "abc succeeded" in screen.getvalue()
    assert "3/3" in screen.getvalue() and "abc running: features.3" in screen.getvalue()
