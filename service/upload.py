"""Streamed multipart/form-data receive: the file part goes to a temp file while hashing.

Nothing is buffered whole in memory: the file's size, the number and size of the other form
fields, and part headers are bounded while streaming, and the request fails (413) the moment
a bound is crossed. On any failure the temp file is removed before the error propagates.
Temp files (``upload-*``) hold an exclusive ``flock`` while their request lives, so start-up
cleanup (``remove_stale_uploads``) removes only those whose server died.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

MAX_FIELD_BYTES = 1024 * 1024  # default per non-file field (CURVPROF_MAX_FORM_FIELD_BYTES)
MAX_FIELDS = 8  # default count of non-file fields (CURVPROF_MAX_FORM_FIELDS)
MAX_HEADER_BYTES = 8 * 1024  # one part header's name or value
MAX_PART_HEADERS = 16
MAX_FILENAME_BYTES = 255  # one path component on common file systems
TEMP_PREFIX = "upload-"


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
    lock_fd: int | None = None

    def with_suffix(self, suffix: str) -> None:
        """Rename the temp file so that loaders dispatching on the suffix accept it."""
        target = self.tmp_path.with_name(self.tmp_path.stem + suffix)
        os.replace(self.tmp_path, target)
        self.tmp_path = target

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()
        self.release()

    def release(self) -> None:
        """Drop the temp file's lock (after it is committed or removed)."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def check_filename(raw: str) -> str:
    """The base name of a client's file name; 422 for NUL/control characters or > 255 bytes."""
    name = os.path.basename(raw.replace("\\", "/"))
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UploadError(422, "the file name contains a NUL or control character")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_FILENAME_BYTES:
        raise UploadError(422, f"the file name is longer than {MAX_FILENAME_BYTES} bytes")
    return name


def remove_stale_uploads(tmp_dir: Path) -> int:
    """Remove ``upload-*`` temp files no live request holds (left by a killed server)."""
    removed = 0
    for path in tmp_dir.glob(f"{TEMP_PREFIX}*"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # held by a request in flight
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
        os.close(fd)
    return removed


@dataclass(eq=False)
class _Receiver:
    """The multipart parser's callbacks: the file part streamed to ``out`` (hashed and
    counted against ``max_bytes``), the other fields kept within their bounds."""

    out: IO[bytes]
    max_bytes: int
    file_field: str
    max_fields: int
    max_field_bytes: int
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256, init=False)
    size: int = field(default=0, init=False)
    too_large: bool = field(default=False, init=False)
    filename: str | None = field(default=None, init=False)
    got_file: bool = field(default=False, init=False)
    fields: dict[str, str] = field(default_factory=dict, init=False)
    _header_field: bytes = field(default=b"", init=False)
    _header_value: bytes = field(default=b"", init=False)
    _headers: dict[bytes, bytes] = field(default_factory=dict, init=False)
    _name: str | None = field(default=None, init=False)
    _is_file: bool = field(default=False, init=False)
    _buffer: bytearray = field(default_factory=bytearray, init=False)

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
        if len(self._header_field) > MAX_HEADER_BYTES:
            raise UploadError(413, f"a multipart header is longer than {MAX_HEADER_BYTES} bytes")

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        if len(self._header_value) > MAX_HEADER_BYTES:
            raise UploadError(413, f"a multipart header is longer than {MAX_HEADER_BYTES} bytes")

    def _header_end(self) -> None:
        if len(self._headers) >= MAX_PART_HEADERS:
            raise UploadError(413, f"a multipart part has over {MAX_PART_HEADERS} headers")
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name")
        self._name = name.decode("utf-8", "replace") if name is not None else None
        filename = params.get(b"filename")
        if self._name == self.file_field:
            if self.got_file:
                raise UploadError(422, "more than one file in form field 'file'")
            self._is_file = True
            self.got_file = True
            if filename is not None:
                self.filename = check_filename(filename.decode("utf-8", "replace"))
        elif self._name is not None:
            if len(self.fields) >= self.max_fields or self._name in self.fields:
                raise UploadError(
                    413 if len(self.fields) >= self.max_fields else 422,
                    f"at most {self.max_fields} form fields besides 'file', each once",
                )
            self.fields[self._name] = ""

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
            if len(self._buffer) + len(chunk) > self.max_field_bytes:
                raise UploadError(
                    413, f"form field {self._name[:64]!r} is over {self.max_field_bytes} bytes"
                )
            self._buffer.extend(chunk)

    def _part_end(self) -> None:
        if not self._is_file and self._name is not None:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")


@dataclass(frozen=True)
class MinimumRate:
    """A body must arrive at ``bytes_per_s`` on average once it is ``grace_s`` old: after
    ``t`` seconds, at least ``bytes_per_s * t`` bytes. A client that sends slower, or stops,
    is cut (408) the moment its average falls below the rate: the wait for each chunk ends
    when the bytes so far would no longer be enough."""

    bytes_per_s: float
    grace_s: float

    def wait_s(self, received: int, elapsed: float) -> float:
        """How long the next chunk may take before the body is too slow."""
        return max(self.grace_s, received / self.bytes_per_s) - elapsed


async def _chunks(request: Request, rate: MinimumRate | None) -> AsyncIterator[bytes]:
    """The body's chunks; :class:`UploadError` 408 when they come slower than ``rate``."""
    stream = request.stream().__aiter__()
    loop = asyncio.get_running_loop()
    started, received = loop.time(), 0
    while True:
        try:
            if rate is None:
                chunk = await anext(stream)
            else:
                async with asyncio.timeout(rate.wait_s(received, loop.time() - started)):
                    chunk = await anext(stream)
        except StopAsyncIteration:
            return
        except TimeoutError:
            assert rate is not None  # only a rate sets a timeout
            raise UploadError(
                408,
                f"the upload arrived slower than {rate.bytes_per_s:g} bytes/s "
                f"({received} bytes in {loop.time() - started:.1f} s)",
            ) from None
        received += len(chunk)
        yield chunk


async def receive_upload(
    request: Request,
    tmp_dir: Path,
    max_bytes: int,
    *,
    file_field: str = "file",
    max_fields: int = MAX_FIELDS,
    max_field_bytes: int = MAX_FIELD_BYTES,
    min_rate: MinimumRate | None = None,
) -> ReceivedUpload:
    """Stream the request's multipart body; the file field lands in a temp file under tmp_dir.

    413 as soon as the file passes ``max_bytes`` or the other fields pass ``max_fields`` x
    ``max_field_bytes``: the rest of the body is not read (the connection is then closed).
    408 as soon as the body falls behind ``min_rate``. The temp file is removed on either.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UploadError(415, "expected a multipart/form-data body with the file in field 'file'")
    declared = request.headers.get("content-length")
    envelope = max_bytes + max_fields * max_field_bytes + 65536
    if declared and declared.isdigit() and int(declared) > envelope:
        raise UploadError(413, f"upload larger than the limit of {max_bytes} bytes")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".part", dir=tmp_dir)
    tmp_path = Path(name)
    lock_fd = os.open(name, os.O_RDONLY)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        with os.fdopen(fd, "wb") as out:
            receiver = _Receiver(out, max_bytes, file_field, max_fields, max_field_bytes)
            parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
            received = 0
            async for chunk in _chunks(request, min_rate):
                received += len(chunk)
                if received > envelope:
                    raise UploadError(413, f"upload larger than the limit of {max_bytes} bytes")
                parser.write(chunk)
                if receiver.too_large:
                    break
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
            lock_fd=lock_fd,
        )
    except UploadError:
        tmp_path.unlink(missing_ok=True)
        os.close(lock_fd)
        raise
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        os.close(lock_fd)
        if not isinstance(exc, Exception):
            raise
        raise UploadError(400, f"malformed multipart body: {exc}") from exc
