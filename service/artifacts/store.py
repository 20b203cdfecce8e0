"""The content-addressed artifact store: same bytes -> same path -> same id.

Layout: ``<data_dir>/artifacts/sha256/ab/abcdef….<ext>``; temp files in ``artifacts/tmp``
(same file system, so the final rename is atomic). An unpacked Hugging Face archive lies
beside its archive as ``….hf/``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from service.upload import ReceivedUpload, remove_stale_uploads

KNOWN_SUFFIXES = (".safetensors", ".pt2", ".npz", ".zip")


def known_suffix(filename: str | None) -> str:
    """The upload's format suffix if it is one this service reads, else ``""``."""
    name = (filename or "").lower()
    return next((ext for ext in KNOWN_SUFFIXES if name.endswith(ext)), "")


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
