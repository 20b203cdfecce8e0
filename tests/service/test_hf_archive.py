"""The Hugging Face upload archive is checked member by member before anything is written."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from service.hf_archive import (
    MAX_EXPANSION,
    ArchiveRejected,
    archive_members,
    extract_archive,
    write_archive,
)

CONFIG = b'{"model_type": "bert", "architectures": ["BertModel"]}'


def _zip(path: Path, members: dict[str, bytes], **kw: object) -> Path:
    with zipfile.ZipFile(path, "w", **kw) as archive:  # type: ignore[arg-type]
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _good() -> dict[str, bytes]:
    return {"config.json": CONFIG, "model.safetensors": b"x" * 64, "tokenizer.json": b"{}"}


def test_flat_or_one_folder_archives_extract_flat(tmp_path: Path) -> None:
    flat = _zip(tmp_path / "flat.zip", _good())
    nested = _zip(tmp_path / "nested.zip", {f"my-model/{k}": v for k, v in _good().items()})
    for archive in (flat, nested):
        out = extract_archive(archive, tmp_path / f"{archive.stem}.hf")
        assert sorted(p.name for p in out.iterdir()) == sorted(_good())
        assert (out / "config.json").read_bytes() == CONFIG


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({**_good(), "pytorch_model.bin": b"\x80\x04"}, "pickled"),
        ({**_good(), "../evil.json": b"{}"}, "unsafe path"),
        ({**_good(), "/etc/passwd": b""}, "unsafe path"),
        ({**_good(), "sub/tokenizer.json": b"{}"}, "sub-folder"),
        ({**_good(), "model-00001-of-00002.safetensors": b""}, "sharded"),
        ({**_good(), "modeling_evil.py": b"import os"}, "unexpected archive member"),
        ({"config.json": CONFIG}, "lacks model.safetensors"),
    ],
)
def test_bad_members_are_refused(tmp_path: Path, members: dict[str, bytes], message: str) -> None:
    archive = _zip(tmp_path / "bad.zip", members)
    with pytest.raises(ArchiveRejected, match=message):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_links_and_bombs_are_refused_before_inflating(tmp_path: Path) -> None:
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as archive:
        for name, data in _good().items():
            archive.writestr(name, data)
        info = zipfile.ZipInfo("vocab.txt")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveRejected, match="not a plain file"):
        archive_members(link)
    bomb = _zip(
        tmp_path / "bomb.zip",
        {**_good(), "model.safetensors": b"\0" * (4 << 20)},
        compression=zipfile.ZIP_DEFLATED,
    )
    assert bomb.stat().st_size * MAX_EXPANSION < 4 << 20
    with pytest.raises(ArchiveRejected, match="inflate"):
        archive_members(bomb)


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "x.zip"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ArchiveRejected, match=r"must be a \.zip"):
        archive_members(junk)


def test_write_archive_takes_the_accepted_files_only(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for name, data in _good().items():
        (model / name).write_bytes(data)
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04")  # left behind, never uploaded
    archive = write_archive(model, tmp_path / "m.zip")
    assert sorted(archive_members(archive)) == sorted(_good())
