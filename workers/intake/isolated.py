"""Open an untrusted ``.pt2`` program in a short-lived subprocess, never in the caller.

Loading a ``torch.export`` archive unpickles, which can run code. A process that must not run
it (the API server) checks the archive's layout in-process (``archive.check_pt2``) and asks a
child process, ``python -m workers.intake.isolated``, to load it, optionally check that a
dataset feeds it, and list its analysable layers. The child reports one JSON line on stdout;
whatever the archive does runs in the child, which exits right after.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from workers.intake.errors import IntakeError
from workers.intake.limits import DEFAULT_LIMITS, IntakeLimits

_MAX_REPORT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ProgramProbe:
    """What the child found: the layer names ``layers`` selects (all when None)."""

    names: list[str]
    default_loss: str | None = None


def probe_program(
    path: Path,
    *,
    limits: IntakeLimits = DEFAULT_LIMITS,
    data: str | None = None,
    loss: str | None = None,
    layers: str | None = None,
    timeout_s: float = 120.0,
) -> ProgramProbe:
    """Load ``path`` in a child process; IntakeError with the child's one-line reason."""
    request = {
        "path": str(Path(path).resolve()),
        "limits": dataclasses.asdict(limits),
        "data": data,
        "loss": loss,
        "layers": layers,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURVPROF_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    with tempfile.TemporaryDirectory(prefix="curvprof-probe-") as cwd:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "workers.intake.isolated"],
                input=json.dumps(request).encode(),
                capture_output=True,
                cwd=cwd,
                env=env,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise IntakeError(f"{Path(path).name}: loading took over {timeout_s:g} s") from None
    lines = done.stdout[-_MAX_REPORT_BYTES:].decode("utf-8", "replace").strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except ValueError:
        report = {}
    if not isinstance(report, dict) or ("names" not in report and "error" not in report):
        raise IntakeError(
            f"not a loadable .pt2 program: {Path(path).name}: the loader exited with status "
            f"{done.returncode} and no report"
        )
    if "error" in report:
        raise IntakeError(str(report["error"]))
    return ProgramProbe([str(n) for n in report["names"]], report.get("default_loss"))


def _child() -> int:
    """The child side: read the request on stdin, print one JSON report line."""
    request = json.loads(sys.stdin.read())
    try:
        report = _probe(request)
    except Exception as exc:  # reported, never raised: the parent turns it into IntakeError
        text = " ".join(str(exc).split()) or type(exc).__name__
        report = {
            "error": text if isinstance(exc, IntakeError) else f"{type(exc).__name__}: {text}"
        }
    sys.stdout.write("\n" + json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


def _probe(request: dict[str, object]) -> dict[str, object]:
    from workers.curvature.engine import list_layer_names
    from workers.curvature.graph import example_forward
    from workers.curvature.static_batch import static_batch_of
    from workers.data import check_fits, open_dataset
    from workers.intake.checkpoints import load_checkpoint

    limits = IntakeLimits(**request["limits"])  # type: ignore[arg-type]
    loaded = load_checkpoint(str(request["path"]), allow_pickle=True, limits=limits)
    example = None
    if request.get("data") is not None:
        dataset = open_dataset(str(request["data"]), limits)
        check_fits(loaded.model, dataset, str(request.get("loss") or "cross_entropy"))
        # the same traced inventory the workers will use, so the layer names agree
        static = static_batch_of(loaded.model)
        example = example_forward(dataset.inputs, dataset.attention_mask, static, dataset.targets)
    layers = request.get("layers")
    names = list_layer_names(loaded.model, None if layers is None else str(layers), example)
    return {"names": names, "default_loss": loaded.default_loss}


if __name__ == "__main__":
    sys.exit(_child())
