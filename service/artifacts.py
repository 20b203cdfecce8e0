"""Content-addressed artifact store and the format checks run before an upload is accepted.

Layout: ``<data_dir>/artifacts/sha256/ab/abcdef….<ext>``; temp files in ``artifacts/tmp``
(same file system, so the final rename is atomic). Same bytes -> same path -> same id.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.upload import ReceivedUpload

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
        return final


def _suffix(filename: str | None) -> str:
    name = (filename or "").lower()
    for ext in (".safetensors", ".pt2", ".npz"):
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Parse and bounds-check a safetensors header without loading any tensor."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ArtifactRejected("not a safetensors file: shorter than its 8-byte header size")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or n > min(size - 8, 100 * 1024 * 1024):
            raise ArtifactRejected("not a safetensors file: bad header size")
        try:
            header = json.loads(fh.read(n))
        except ValueError as exc:
            raise ArtifactRejected("not a safetensors file: header is not JSON") from exc
    if not isinstance(header, dict):
        raise ArtifactRejected("not a safetensors file: header is not an object")
    data_len = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not 0 <= offsets[0] <= offsets[1] <= data_len
            or not isinstance(entry.get("shape"), list)
        ):
            raise ArtifactRejected(f"safetensors tensor {name!r} has a bad entry")
    return header


@dataclass
class CheckpointInfo:
    format: str
    suffix: str
    arch: str | None
    config: dict[str, Any] | None
    directory: Path | None = None  # an unpacked Hugging Face archive, committed beside it


def _intake_error() -> type[Exception]:
    try:
        from workers.intake.errors import IntakeError
    except ImportError:  # pragma: no cover - intake not installed
        return ArtifactRejected
    return IntakeError


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

    try:
        return resolve_config(config)
    except _intake_error() as exc:
        raise ArtifactRejected(str(exc)) from exc


def validate_checkpoint(
    path: Path, filename: str | None, config_text: str | None, *, allow_pickle: bool
) -> CheckpointInfo:
    """Check a received checkpoint fully (it must load) before it is accepted.

    ``path`` must already carry the right suffix (the loaders dispatch on it).
    """
    suffix = _suffix(filename)
    config = parse_config(config_text)
    if suffix == ".safetensors":
        header = read_safetensors_header(path)
        if config is None:
            meta = header.get("__metadata__") or {}
            if isinstance(meta, dict) and meta.get("config"):
                config = parse_config(meta.get("config"))
        if config is None:
            raise ArtifactRejected(
                "a safetensors checkpoint needs its architecture config: "
                "form field 'config' (JSON with 'arch') or __metadata__['config']"
            )
        config = resolve_zoo_config(config)
        loaded = load_zoo_checkpoint(path, config)
        return CheckpointInfo("safetensors", suffix, loaded.arch, loaded.config)
    if suffix == ".pt2":
        if not allow_pickle:
            raise ArtifactRejected(
                ".pt2 checkpoints can run pickled code and are refused by this server "
                "(the operator can opt in with CURVPROF_ALLOW_PICKLE_CHECKPOINTS=true)",
                status=415,
            )
        if not zipfile.is_zipfile(path):
            raise ArtifactRejected("not a .pt2 archive (not a zip file)")
        loaded = _load(path, allow_pickle=True)
        return CheckpointInfo("pt2", suffix, loaded.arch, config or loaded.config)
    if suffix == ".zip":
        return validate_hf_archive(path)
    raise ArtifactRejected(
        f"unsupported checkpoint format {suffix or '(no extension)'!r}; "
        "expected .safetensors (+ config), .zip (a Hugging Face directory) or .pt2",
        status=415,
    )


def validate_hf_archive(path: Path) -> CheckpointInfo:
    """A ``.zip`` of a Hugging Face directory (``service.hf_archive``): checked member by
    member, unpacked beside the upload, its safetensors header bounds-checked, then loaded
    (safetensors only, nothing unpickled) so that a bad config or weights are refused now."""
    from service.hf_archive import ArchiveRejected, extract_archive

    directory = path.with_name(path.name + ".hf")
    try:
        extract_archive(path, directory)
        read_safetensors_header(directory / "model.safetensors")
        config = parse_config((directory / "config.json").read_text(encoding="utf-8"))
        if (
            not config
            or "arch" in config
            or not (config.get("model_type") or config.get("architectures"))
        ):
            raise ArtifactRejected(
                "config.json in the archive is not a Hugging Face config (no model_type)"
            )
        loaded = _load(directory)
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


def _load(path: Path, *, weights: Path | None = None, allow_pickle: bool = False) -> Any:
    from workers.intake.checkpoints import load_checkpoint

    try:
        return load_checkpoint(path, weights=weights, allow_pickle=allow_pickle)
    except _intake_error() as exc:
        raise ArtifactRejected(str(exc)) from exc


def load_zoo_checkpoint(weights: Path, config: dict[str, Any]) -> Any:
    """``workers.intake`` LoadedModel for zoo weights + config (strict, NaN-checked)."""
    with tempfile.TemporaryDirectory(prefix="curvprof-cfg-") as tmp:
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(json.dumps(config))
        return _load(cfg_path, weights=weights)


@dataclass
class DatasetInfo:
    format: str
    suffix: str
    n_examples: int


def validate_dataset(path: Path, filename: str | None) -> DatasetInfo:
    suffix = _suffix(filename)
    if suffix not in (".npz", ".safetensors"):
        raise ArtifactRejected(
            f"unsupported dataset format {suffix or '(no extension)'!r}; expected .npz or "
            ".safetensors holding 'inputs' and 'targets'",
            status=415,
        )
    loader = _data_file_loader()
    if loader is not None:
        try:
            ds = loader(path)
        except _intake_error() as exc:
            raise ArtifactRejected(str(exc)) from exc
        return DatasetInfo(suffix.lstrip("."), suffix, len(ds))
    if suffix == ".npz":
        return DatasetInfo("npz", suffix, _check_npz(path))
    header = read_safetensors_header(path)
    n = _check_pair(header.get("inputs"), header.get("targets"))
    return DatasetInfo("safetensors", suffix, n)


def _data_file_loader() -> Any:
    try:
        from workers.data.files import load_data_file
    except ImportError:
        return None
    return load_data_file


def _check_npz(path: Path) -> int:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            if "inputs" not in npz.files or "targets" not in npz.files:
                raise ArtifactRejected("a .npz dataset must hold arrays 'inputs' and 'targets'")
            inputs, targets = npz["inputs"], npz["targets"]
    except ArtifactRejected:
        raise
    except Exception as exc:
        message = f"not a readable .npz file (pickled arrays are refused): {exc}"
        raise ArtifactRejected(message) from exc
    return _check_pair({"shape": list(inputs.shape)}, {"shape": list(targets.shape)})


def _check_pair(inputs: Any, targets: Any) -> int:
    if not isinstance(inputs, dict) or not isinstance(targets, dict):
        raise ArtifactRejected("a dataset must hold tensors 'inputs' and 'targets'")
    a, b = inputs.get("shape") or [], targets.get("shape") or []
    if not a or not b or a[0] != b[0] or a[0] < 1:
        raise ArtifactRejected("'inputs' and 'targets' need the same number of examples (>= 1)")
    return int(a[0])
