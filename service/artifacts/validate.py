"""Content-addressed artifact store and the format checks run before an upload is accepted.

Layout: ``<data_dir>/artifacts/sha256/ab/abcdef….<ext>``; temp files in ``artifacts/tmp``
(same file system, so the final rename is atomic). Same bytes -> same path -> same id.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.upload import ReceivedUpload, remove_stale_uploads
from workers.intake.archive import check_pt2
from workers.intake.errors import IntakeError
from workers.intake.isolated import probe_program
from workers.intake.limits import DEFAULT_LIMITS, IntakeLimits
from workers.intake.safetensors_header import read_safetensors_header

ZOO_PREFIX = "zoo:"
BUILTIN_DATASETS = ("digits", "text", "synthetic")


class ArtifactRejected(Exception):
    """An upload whose format is unsupported or invalid (HTTP 415/422)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message = " ".join(str(message).split())
        self.status = status


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"

    def path_for(self, sha256: str, suffix: str) -> Path:
        return self.root / "sha256" / sha256[:2] / f"{sha256}{suffix}"

    def commit_directory(self, directory: Path, sha256: str) -> Path:
        """Move an unpacked archive into place beside its archive (kept if already there)."""
        final = self.path_for(sha256, ".hf")
        if final.exists():
            shutil.rmtree(directory, ignore_errors=True)
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(directory, final)
        return final

    def commit(self, upload: ReceivedUpload, suffix: str) -> Path:
        """Move a validated temp file into place (a no-op if the same bytes are stored)."""
        final = self.path_for(upload.sha256, suffix)
        if final.exists():
            upload.discard()
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(upload.tmp_path, final)
        upload.release()
        return final

    def remove_stale_uploads(self) -> int:
        """Start-up: delete temp uploads a killed server left (none a live request holds)."""
        return remove_stale_uploads(self.tmp_dir) if self.tmp_dir.is_dir() else 0


KNOWN_SUFFIXES = (".safetensors", ".pt2", ".npz", ".zip")


def known_suffix(filename: str | None) -> str:
    """The upload's format suffix if it is one this service reads, else ``""``."""
    name = (filename or "").lower()
    return next((ext for ext in KNOWN_SUFFIXES if name.endswith(ext)), "")


def _suffix(filename: str | None) -> str:
    """``known_suffix``, else the name's own suffix (for the error message), bounded."""
    return known_suffix(filename) or Path((filename or "").lower()).suffix[:40]


@dataclass
class CheckpointInfo:
    format: str
    suffix: str
    arch: str | None
    config: dict[str, Any] | None
    directory: Path | None = None  # an unpacked Hugging Face archive, committed beside it


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
    from workers.zoo import resolve_config

    with rejecting():
        return resolve_config(config)


def check_zoo_config(config: dict[str, Any], limits: IntakeLimits) -> dict[str, Any]:
    """``resolve_zoo_config`` plus the model's size, computed on the meta device (nothing is
    allocated), against ``limits.max_model_parameters``."""
    from workers.zoo import check_model_size

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
            loaded = load_zoo_checkpoint(path, config, limits)
        return CheckpointInfo("safetensors", suffix, loaded.arch, loaded.config)
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
        return CheckpointInfo("pt2", suffix, "pt2", config or {"arch": "pt2", "file": path.name})
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
    from service.hf_archive import ArchiveRejected, extract_archive
    from workers.intake.checkpoints import load_checkpoint

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
    return CheckpointInfo("hf", ".zip", loaded.arch, config, directory=directory)


def discard_directory(info: CheckpointInfo | None) -> None:
    """Remove the unpacked directory of a checkpoint that was not committed."""
    if info is not None and info.directory is not None:
        shutil.rmtree(info.directory, ignore_errors=True)


def load_zoo_checkpoint(
    weights: Path, config: dict[str, Any], limits: IntakeLimits = DEFAULT_LIMITS
) -> Any:
    """``workers.intake`` LoadedModel for zoo weights + config (strict, NaN-checked)."""
    from workers.intake.checkpoints import load_checkpoint

    with tempfile.TemporaryDirectory(prefix="curvprof-cfg-") as tmp:
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(json.dumps(config))
        with rejecting():
            return load_checkpoint(cfg_path, weights=weights, limits=limits)


@dataclass
class DatasetInfo:
    format: str
    suffix: str
    n_examples: int


def validate_dataset(
    path: Path, filename: str | None, limits: IntakeLimits = DEFAULT_LIMITS
) -> DatasetInfo:
    """Load the dataset as a job would (``load_data_file``: bounded before it is read)."""
    from workers.data.files import load_data_file

    suffix = _suffix(filename)
    if suffix not in (".npz", ".safetensors"):
        raise ArtifactRejected(
            f"unsupported dataset format {suffix or '(no extension)'!r}; expected .npz or "
            ".safetensors holding 'inputs' and 'targets'",
            status=415,
        )
    with rejecting(path, filename):
        ds = load_data_file(path, limits)
    return DatasetInfo(suffix.lstrip("."), suffix, len(ds))
