"""Streamed multipart/form-data receive: the file part goes to a temp file while hashing.

Nothing is buffered whole in memory, the size limit is enforced while streaming, and on any
failure the temp file is removed before the error propagates.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

MAX_FIELD_BYTES = 1024 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024  # read (and discard) at most this much after a 413, then close


class UploadError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ReceivedUpload:
    tmp_path: Path
    sha256: str
    size: int
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)

    def with_suffix(self, suffix: str) -> None:
        """Rename the temp file so that loaders dispatching on the suffix accept it."""
        target = self.tmp_path.with_name(self.tmp_path.stem + suffix)
        os.replace(self.tmp_path, target)
        self.tmp_path = target

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()


class _Receiver:
    def __init__(self, out: IO[bytes], max_bytes: int, file_field: str) -> None:
        self.out = out
        self.max_bytes = max_bytes
        self.file_field = file_field
        self.hasher = hashlib.sha256()
        self.size = 0
        self.too_large = False
        self.filename: str | None = None
        self.got_file = False
        self.fields: dict[str, str] = {}
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._is_file = False
        self._buffer = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_cb,
            "on_header_value": self._header_value_cb,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._is_file = False
        self._buffer = bytearray()

    def _header_field_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name")
        self._name = name.decode("utf-8", "replace") if name is not None else None
        filename = params.get(b"filename")
        if self._name == self.file_field:
            self._is_file = True
            self.got_file = True
            if filename is not None:
                self.filename = os.path.basename(filename.decode("utf-8", "replace"))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            if self.too_large:
                return
            self.size += len(chunk)
            if self.size > self.max_bytes:
                self.too_large = True
                return
            self.hasher.update(chunk)
            self.out.write(chunk)
        elif self._name is not None:
            if len(self._buffer) + len(chunk) > MAX_FIELD_BYTES:
                raise UploadError(413, f"form field {self._name!r} is larger than 1 MiB")
            self._buffer.extend(chunk)

    def _part_end(self) -> None:
        if not self._is_file and self._name is not None:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")


async def receive_upload(
    request: Request, tmp_dir: Path, max_bytes: int, *, file_field: str = "file"
) -> ReceivedUpload:
    """Stream the request's multipart body; the file field lands in a temp file under tmp_dir."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UploadError(415, "expected a multipart/form-data body with the file in field 'file'")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MAX_FIELD_BYTES + 65536:
        raise UploadError(413, f"upload larger than the limit of {max_bytes} bytes")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=tmp_dir)
    tmp_path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            receiver = _Receiver(out, max_bytes, file_field)
            parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
            drained = 0
            async for chunk in request.stream():
                if receiver.too_large:
                    drained += len(chunk)
                    if drained > DRAIN_LIMIT:
                        break
                    continue
                parser.write(chunk)
            if not receiver.too_large:
                parser.finalize()
        if receiver.too_large:
            raise UploadError(413, f"upload larger than the limit of {max_bytes} bytes")
        if not receiver.got_file:
            raise UploadError(422, "no file in form field 'file'")
        return ReceivedUpload(
            tmp_path=tmp_path,
            sha256=receiver.hasher.hexdigest(),
            size=receiver.size,
            filename=receiver.filename,
            fields=receiver.fields,
        )
    except UploadError:
        tmp_path.unlink(missing_ok=True)
        raise
    except Exception as exc:
        tmp_path.unlink(missing_ok=True)
        raise UploadError(400, f"malformed multipart body: {exc}") from exc
