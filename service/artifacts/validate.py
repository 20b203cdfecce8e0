"""The checks an upload passes before it is accepted, through ``workers.intake`` and
``workers.data`` (the loaders a job uses), without running any of its code."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.artifacts.store import known_suffix
from service.hf_archive import ArchiveRejected, extract_archive
from workers.data.files import load_data_file
from workers.intake.archive import check_pt2
from workers.intake.checkpoints import load_checkpoint, load_zoo
from workers.intake.errors import IntakeError
from workers.intake.isolated import probe_program
from workers.intake.limits import DEFAULT_LIMITS, IntakeLimits
from workers.intake.safetensors_header import read_safetensors_header
from workers.zoo import check_model_size, resolve_config

ZOO_PREFIX = "zoo:"
"""A checkpoint reference ``zoo:<arch>`` names a zoo architecture, built with fresh weights."""


def zoo_reference(
    checkpoint_id: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The zoo config a ``zoo:<arch>`` reference asks for (``overrides`` on top of the
    arch), or None for the id of a stored checkpoint."""
    if not checkpoint_id.startswith(ZOO_PREFIX):
        return None
    return {"arch": checkpoint_id[len(ZOO_PREFIX) :], **(overrides or {})}


class ArtifactRejected(Exception):
    """An upload whose format is unsupported or invalid (HTTP 415/422)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message = " ".join(str(message).split())
        self.status = status


def _suffix(filename: str | None) -> str:
    """``known_suffix``, else the name's own suffix (for the error message), bounded."""
    return known_suffix(filename) or Path((filename or "").lower()).suffix[:40]


@dataclass(kw_only=True)
class ArtifactInfo:
    """What validation found out about an upload: its format and the suffix it is stored
    with, and an unpacked directory that is stored beside it (a Hugging Face archive)."""

    format: str
    suffix: str
    directory: Path | None = None


@dataclass(kw_only=True)
class CheckpointInfo(ArtifactInfo):
    arch: str | None
    config: dict[str, Any] | None


@dataclass(kw_only=True)
class DatasetInfo(ArtifactInfo):
    n_examples: int


@contextlib.contextmanager
def rejecting(path: Path | None = None, filename: str | None = None) -> Iterator[None]:
    """Turn the workers' one-line IntakeError into an ArtifactRejected (HTTP 422), naming the
    client's ``filename`` where the message names the temp file ``path``."""
    try:
        yield
    except (IntakeError, ArtifactRejected) as exc:
        message = exc.message if isinstance(exc, ArtifactRejected) else str(exc)
        if path is not None and filename:
            message = message.replace(path.name, filename)
        raise ArtifactRejected(message, getattr(exc, "status", 422)) from None


def parse_config(text: str | None) -> dict[str, Any] | None:
    if text is None or not text.strip():
        return None
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ArtifactRejected(f"config is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ArtifactRejected("config must be a JSON object")
    return config


def resolve_zoo_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate a zoo config (known arch, known keys) and fill in its defaults."""
    with rejecting():
        return resolve_config(config)


def check_zoo_config(config: dict[str, Any], limits: IntakeLimits) -> dict[str, Any]:
    """``resolve_zoo_config`` plus the model's size, computed on the meta device (nothing is
    allocated), against ``limits.max_model_parameters``."""
    resolved = resolve_zoo_config(config)
    with rejecting():
        check_model_size(resolved, limits.max_model_parameters)
    return resolved


def validate_checkpoint(
    path: Path,
    filename: str | None,
    config_text: str | None,
    *,
    allow_pickle: bool,
    limits: IntakeLimits = DEFAULT_LIMITS,
    probe_timeout_s: float = 120.0,
) -> CheckpointInfo:
    """Check a received checkpoint fully before it is accepted, without running its code.

    ``.safetensors``: header (``read_safetensors_header``), config size (meta device), shapes,
    then the strict load. ``.pt2`` (opt-in only): layout checked here (``check_pt2``), the load
    itself in a child process (``probe_program``). ``path`` must carry the right suffix.
    """
    suffix = _suffix(filename)
    config = parse_config(config_text)
    if suffix == ".safetensors":
        with rejecting(path, filename):
            header = read_safetensors_header(path, limits)
        if config is None and header.metadata.get("config"):
            config = parse_config(header.metadata["config"])
        if config is None:
            raise ArtifactRejected(
                "a safetensors checkpoint needs its architecture config: "
                "form field 'config' (JSON with 'arch') or __metadata__['config']"
            )
        config = check_zoo_config(config, limits)
        with rejecting(path, filename):
            loaded = load_zoo(config, path, limits)
        return CheckpointInfo(
            format="safetensors", suffix=suffix, arch=loaded.arch, config=loaded.config
        )
    if suffix == ".pt2":
        if not allow_pickle:
            raise ArtifactRejected(
                ".pt2 checkpoints can run pickled code and are refused by this server "
                "(the operator can opt in with CURVPROF_ALLOW_PICKLE_CHECKPOINTS=true)",
                status=415,
            )
        with rejecting(path, filename):
            check_pt2(path, limits)
            probe_program(path, limits=limits, timeout_s=probe_timeout_s)
        config = config or {"arch": "pt2", "file": path.name}
        return CheckpointInfo(format="pt2", suffix=suffix, arch="pt2", config=config)
    if suffix == ".zip":
        return validate_hf_archive(path, filename, limits)
    raise ArtifactRejected(
        f"unsupported checkpoint format {suffix or '(no extension)'!r}; "
        "expected .safetensors (+ config), .zip (a Hugging Face directory) or .pt2",
        status=415,
    )


def validate_hf_archive(
    path: Path, filename: str | None = None, limits: IntakeLimits = DEFAULT_LIMITS
) -> CheckpointInfo:
    """A ``.zip`` of a Hugging Face directory (``service.hf_archive``): checked member by
    member, unpacked beside the upload, its safetensors header bounds-checked, then loaded
    (safetensors only, nothing unpickled) so that a bad config or weights are refused now."""
    directory = path.with_name(path.name + ".hf")
    try:
        extract_archive(path, directory)
        with rejecting(path, filename):
            read_safetensors_header(directory / "model.safetensors", limits)
        config = parse_config((directory / "config.json").read_text(encoding="utf-8"))
        if (
            not config
            or "arch" in config
            or not (config.get("model_type") or config.get("architectures"))
        ):
            raise ArtifactRejected(
                "config.json in the archive is not a Hugging Face config (no model_type)"
            )
        with rejecting(path, filename):
            loaded = load_checkpoint(directory, limits=limits)
    except ArchiveRejected as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise ArtifactRejected(str(exc)) from None
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return CheckpointInfo(
        format="hf", suffix=".zip", arch=loaded.arch, config=config, directory=directory
    )


def discard_directory(info: ArtifactInfo | None) -> None:
    """Remove the unpacked directory of an upload that was not committed."""
    if info is not None and info.directory is not None:
        shutil.rmtree(info.directory, ignore_errors=True)


def validate_dataset(
    path: Path, filename: str | None, limits: IntakeLimits = DEFAULT_LIMITS
) -> DatasetInfo:
    """Load the dataset as a job would (``load_data_file``: bounded before it is read)."""
    suffix = _suffix(filename)
    if suffix not in (".npz", ".safetensors"):
        raise ArtifactRejected(
            f"unsupported dataset format {suffix or '(no extension)'!r}; expected .npz or "
            ".safetensors holding 'inputs' and 'targets'",
            status=415,
        )
    with rejecting(path, filename):
        ds = load_data_file(path, limits)
    return DatasetInfo(format=suffix.lstrip("."), suffix=suffix, n_examples=len(ds))
