"""Hugging Face checkpoints as uploads: a ``.zip`` of the model directory.

The archive holds ``config.json`` and ``model.safetensors`` and, optionally, the tokenizer and
generation files, at its top level or under one folder (``zip -r model.zip my-model/``).
Nothing in it is unpickled. Before anything is written, every member is checked: a plain
file (no link, no encryption), a known name (pickled weights such as ``pytorch_model.bin``
are refused by name), no path components (so no traversal), at most ``MAX_MEMBERS`` members,
and the declared sizes bounded (``MAX_EXPANSION`` times the archive, so a zip bomb is refused
before a byte is inflated). Extraction then counts the bytes it really writes against those
declared sizes.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

REQUIRED_FILES = ("config.json", "model.safetensors")
OPTIONAL_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "preprocessor_config.json",
    "chat_template.jinja",
    "README.md",
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".h5", ".msgpack")
MAX_MEMBERS = 32
MAX_EXPANSION = 10  # declared uncompressed bytes per archive byte (safetensors barely compress)
_CHUNK = 1 << 20


class ArchiveRejected(ValueError):
    """An archive that is not an acceptable Hugging Face model directory (one line)."""


def archive_members(path: Path) -> dict[str, zipfile.ZipInfo]:
    """File name in the model directory -> its member, after every check above."""
    if not zipfile.is_zipfile(path):
        raise ArchiveRejected("a Hugging Face checkpoint upload must be a .zip archive")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveRejected(f"not a readable zip archive: {exc}") from None
    files = [i for i in infos if not i.is_dir()]
    if len(infos) > MAX_MEMBERS + 2:
        raise ArchiveRejected(f"archive has {len(infos)} members; at most {MAX_MEMBERS} allowed")
    prefix = _common_folder([i.filename for i in files])
    members: dict[str, zipfile.ZipInfo] = {}
    declared = 0
    for info in files:
        name = _member_name(info, prefix)
        if name in members:
            raise ArchiveRejected(f"archive holds {name!r} twice")
        members[name] = info
        declared += info.file_size
    missing = [n for n in REQUIRED_FILES if n not in members]
    if missing:
        raise ArchiveRejected(
            f"archive lacks {missing[0]} (a Hugging Face directory needs "
            f"{' and '.join(REQUIRED_FILES)}; save it with safe_serialization=True)"
        )
    limit = MAX_EXPANSION * path.stat().st_size + _CHUNK
    if declared > limit:
        raise ArchiveRejected(
            f"archive would inflate to {declared} bytes, more than {MAX_EXPANSION}x its size"
        )
    return members


def extract_archive(path: Path, dest: Path) -> Path:
    """Check ``path`` and write its files flat into the new directory ``dest``."""
    members = archive_members(path)
    dest.mkdir(parents=True, exist_ok=False)
    try:
        with zipfile.ZipFile(path) as archive:
            for name, info in members.items():
                _extract_one(archive, info, dest / name)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def _extract_one(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    written = 0
    try:
        with archive.open(info) as src, target.open("xb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > info.file_size:
                    raise ArchiveRejected(f"{info.filename} inflates past its declared size")
                out.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
        raise ArchiveRejected(f"cannot extract {info.filename}: {exc}") from None


def _common_folder(names: list[str]) -> str:
    """``"folder/"`` when every member lies in that one folder, else ``""``."""
    firsts = {n.split("/", 1)[0] for n in names}
    if len(firsts) == 1 and all("/" in n for n in names):
        return next(iter(firsts)) + "/"
    return ""


def _member_name(info: zipfile.ZipInfo, prefix: str) -> str:
    raw = info.filename
    if "\\" in raw or raw.startswith("/") or ":" in raw:
        raise ArchiveRejected(f"archive member {raw!r} has an unsafe path")
    parts = PurePosixPath(raw).parts
    if any(p in ("", ".", "..") for p in parts):
        raise ArchiveRejected(f"archive member {raw!r} has an unsafe path")
    name = raw[len(prefix) :]
    if "/" in name:
        raise ArchiveRejected(
            f"archive member {raw!r} is in a sub-folder; the model directory must be flat"
        )
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise ArchiveRejected(
            f"archive member {name!r} holds pickled weights, which are refused: save the "
            "model with safe_serialization=True (model.safetensors)"
        )
    if name.endswith(".safetensors") and name != "model.safetensors":
        raise ArchiveRejected(
            f"archive member {name!r}: sharded checkpoints are not accepted; save one "
            "model.safetensors (save_pretrained(..., max_shard_size='100GB'))"
        )
    if name not in REQUIRED_FILES and name not in OPTIONAL_FILES:
        raise ArchiveRejected(
            f"unexpected archive member {name!r}; allowed: "
            f"{', '.join(REQUIRED_FILES + OPTIONAL_FILES)}"
        )
    file_type = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver records none
    if file_type and file_type != stat.S_IFREG:
        raise ArchiveRejected(f"archive member {raw!r} is not a plain file (a link?)")
    if info.flag_bits & 0x1:
        raise ArchiveRejected(f"archive member {raw!r} is encrypted")
    return name


def write_archive(directory: Path, out: Path) -> Path:
    """Zip the accepted files of a local Hugging Face directory (for ``curvprof submit``)."""
    names = [n for n in REQUIRED_FILES + OPTIONAL_FILES if (directory / n).is_file()]
    missing = [n for n in REQUIRED_FILES if n not in names]
    if missing:
        raise ArchiveRejected(f"{directory} has no {missing[0]}")
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in names:
            archive.write(directory / name, arcname=name)
    return out
