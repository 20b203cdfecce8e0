"""A whole profile on this machine, in this process: no service, no Ray (``curvprof profile``).

The same preparation as a service job (``workers.execution.prepare``: model, measurement batch,
layer names, one ``Provenance``; on the device :func:`resolve_device` picks), then
``workers.curvature.profile_model`` on that batch, so a local profile and a job's layers are the
same float64 numbers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from api_schemas import Profile
from workers.curvature import profile_model
from workers.curvature.engine import PhaseListener, Progress
from workers.execution.prepare import Prepared, profile_keywords


def resolve_device(device: str) -> str:
    """``auto``: a GPU when there is one, else the CPU; any other name as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def profile_prepared(
    prepared: Prepared,
    *,
    progress: Progress | None = None,
    on_phase: PhaseListener | None = None,
) -> Profile:
    """The profile of every layer of ``prepared`` on its measurement batch, with its
    provenance (``prepare`` raised any IntakeError already)."""
    batch = prepared.batch
    return profile_model(
        prepared.model,
        batch.inputs,
        batch.targets,
        **profile_keywords(prepared.settings),
        attention_mask=batch.attention_mask,
        progress=progress,
        on_phase=on_phase,
        provenance=prepared.provenance,
    )


def write_atomically(path: Path, payload: bytes) -> None:
    """``payload`` at ``path``, whole or not at all (a temporary file beside it, renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
