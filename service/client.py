"""A small httpx client of the curvprof REST API, returning api_schemas models."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from api_schemas import (
    TERMINAL_STATES,
    Batch,
    BatchSpec,
    Checkpoint,
    Dataset,
    Job,
    JobFilters,
    JobLogs,
    JobPreconditioner,
    JobSpec,
    LayerBrief,
    LayerDetail,
    LayerRow,
    Page,
    Summary,
)
from workers.tracking.frames import layers_frame

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")


def retry_after(response: httpx.Response, default: float, cap: float = 30.0) -> float:
    """The server's ``Retry-After`` in seconds (capped), else ``default``."""
    try:
        return min(float(response.headers.get("Retry-After", "")), cap)
    except ValueError:
        return default


def follow_pages(fetch_page: Callable[[str | None], Page[T]]) -> Iterator[T]:
    """Every item of a keyset-paginated listing: ``fetch_page(cursor)`` from ``None`` on,
    passing each page's ``next_cursor`` back until there is none."""
    cursor: str | None = None
    while True:
        page = fetch_page(cursor)
        yield from page.items
        cursor = page.next_cursor
        if cursor is None:
            return


class ApiError(Exception):
    """A non-2xx answer; ``status`` and the server's one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


DEFAULT_URL = "http://127.0.0.1:8000"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 503})


class CurvprofClient:
    """The REST API as typed calls. ``base_url`` defaults to ``CURVPROF_URL`` (else
    http://127.0.0.1:8000) and ``token`` to ``CURVPROF_TOKEN``.

    Retries (``retries`` times, exponential back-off from ``backoff`` seconds, or the
    server's ``Retry-After``): a connection that could not be made, for any call but an
    upload; and 503/429 answers or broken connections for idempotent calls (GET, and a
    POST that carries an ``Idempotency-Key``)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base_url = base_url or os.environ.get("CURVPROF_URL") or DEFAULT_URL
        token = token if token is not None else os.environ.get("CURVPROF_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retries = retries
        self.backoff = backoff
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> CurvprofClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send_with_retries(method.upper(), path, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json()["detail"]
            except Exception:
                message = response.text[:200]
            raise ApiError(response.status_code, message)
        return response

    def _send_with_retries(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = kwargs.get("headers") or {}
        idempotent = method in IDEMPOTENT_METHODS or "Idempotency-Key" in headers
        upload = "files" in kwargs  # a file handle cannot be sent twice
        attempt = 0
        while True:
            delay = self.backoff * 2**attempt
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.ConnectError:
                if upload or attempt >= self.retries:
                    raise
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
                if upload or not idempotent or attempt >= self.retries:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or not idempotent:
                    return response
                if upload or attempt >= self.retries:
                    return response
                delay = retry_after(response, delay)
            time.sleep(delay)
            attempt += 1

    def _params(self, **params: Any) -> dict[str, Any]:
        """Query parameters: None dropped, lists (job ids, kinds, tags) comma-joined."""
        return {
            k: ",".join(str(x) for x in v) if isinstance(v, list | tuple) else v
            for k, v in params.items()
            if v is not None
        }

    # ------------------------------------------------------------------ artifacts

    def upload_checkpoint(
        self, path: str | Path, config: dict[str, Any] | None = None
    ) -> Checkpoint:
        p = Path(path)
        data = {"config": json.dumps(config)} if config is not None else None
        with p.open("rb") as fh:
            r = self.request("POST", "/v1/checkpoints", files={"file": (p.name, fh)}, data=data)
        return Checkpoint.model_validate(r.json())

    def upload_dataset(self, path: str | Path) -> Dataset:
        p = Path(path)
        with p.open("rb") as fh:
            r = self.request("POST", "/v1/datasets", files={"file": (p.name, fh)})
        return Dataset.model_validate(r.json())

    def checkpoint(self, checkpoint_id: str) -> Checkpoint:
        return Checkpoint.model_validate(
            self.request("GET", f"/v1/checkpoints/{checkpoint_id}").json()
        )

    def iter_checkpoints(self, *, page_size: int = 100) -> Iterator[Checkpoint]:
        """Every uploaded checkpoint, newest first, following the pages."""
        for item in self._pages("/v1/checkpoints", {"limit": page_size}):
            yield Checkpoint.model_validate(item)

    def iter_datasets(self, *, page_size: int = 100) -> Iterator[Dataset]:
        """Every uploaded dataset, newest first, following the pages."""
        for item in self._pages("/v1/datasets", {"limit": page_size}):
            yield Dataset.model_validate(item)

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[Any]:
        return follow_pages(
            lambda cursor: Page[Any].model_validate(
                self.request("GET", path, params=self._params(cursor=cursor, **params)).json()
            )
        )

    def dataset(self, dataset_id: str) -> Dataset:
        return Dataset.model_validate(self.request("GET", f"/v1/datasets/{dataset_id}").json())

    # ------------------------------------------------------------------ jobs

    def submit(self, spec: JobSpec | dict[str, Any], *, idempotency_key: str | None = None) -> Job:
        body = spec.model_dump(mode="json") if isinstance(spec, JobSpec) else spec
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Job.model_validate(
            self.request("POST", "/v1/jobs", json=body, headers=headers).json()
        )

    def batch(
        self, spec: BatchSpec | dict[str, Any], *, idempotency_key: str | None = None
    ) -> Batch:
        body = spec.model_dump(mode="json") if isinstance(spec, BatchSpec) else spec
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        r = self.request("POST", "/v1/batches", json=body, headers=headers)
        return Batch.model_validate(r.json())

    def get_batch(self, batch_id: str) -> Batch:
        return Batch.model_validate(self.request("GET", f"/v1/batches/{batch_id}").json())

    def job(self, job_id: str) -> Job:
        return Job.model_validate(self.request("GET", f"/v1/jobs/{job_id}").json())

    def jobs(self, *, cursor: str | None = None, limit: int = 50, **filters: Any) -> Page[Job]:
        """One page of jobs, newest first; ``filters``: the fields of ``JobFilters`` (``tag``
        may be a list too: jobs carrying every one of the tags)."""
        unknown = sorted(set(filters) - set(JobFilters.model_fields))
        if unknown:
            raise TypeError(f"jobs() got unknown filters: {', '.join(unknown)}")
        params = self._params(**filters, cursor=cursor, limit=limit)
        return Page[Job].model_validate(self.request("GET", "/v1/jobs", params=params).json())

    def iter_jobs(self, *, page_size: int = 100, **filters: Any) -> Iterator[Job]:
        """Every matching job (the filters of :meth:`jobs`), following the pages."""
        return follow_pages(lambda cursor: self.jobs(cursor=cursor, limit=page_size, **filters))

    def resolve_job_id(self, job_id_or_prefix: str) -> str:
        """The full id of the one job whose id starts with this prefix (e.g. the 12
        characters a progress bar shows); ApiError 404 for none, 409 for several."""
        prefix = job_id_or_prefix.strip().lower()
        valid = re.fullmatch(r"[0-9a-f]{1,32}", prefix) is not None
        matches = self.jobs(id_prefix=prefix, limit=2).items if valid else []
        if not matches:
            raise ApiError(404, f"job {job_id_or_prefix} not found")
        if len(matches) > 1:
            raise ApiError(409, f"job id prefix {job_id_or_prefix} matches several jobs")
        return matches[0].id

    def job_logs(self, job_id: str, *, after: int | None = None, limit: int = 1000) -> JobLogs:
        """The job's log lines after line id ``after``, and its state."""
        params = self._params(after=after, limit=limit)
        r = self.request("GET", f"/v1/jobs/{job_id}/logs", params=params)
        return JobLogs.model_validate(r.json())

    def cancel(self, job_id: str) -> Job:
        return Job.model_validate(self.request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        poll: float = 0.25,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job is succeeded, failed or cancelled (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.state in TERMINAL_STATES:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout:.0f} s")
            time.sleep(poll)

    # ------------------------------------------------------------------ queries

    def layers_page(
        self, *, cursor: str | None = None, limit: int = 100, **filters: Any
    ) -> Page[LayerRow]:
        params = self._params(cursor=cursor, limit=limit, **filters)
        data = self.request("GET", "/v1/layers", params=params).json()
        return Page[LayerRow].model_validate(data)

    def layers(self, *, page_size: int = 100, **filters: Any) -> Iterator[LayerRow]:
        """Every matching layer, following ``next_cursor`` page after page."""
        return follow_pages(
            lambda cursor: self.layers_page(cursor=cursor, limit=page_size, **filters)
        )

    def layer_briefs(self, *, page_size: int = 100, **filters: Any) -> Iterator[LayerBrief]:
        """Like :meth:`layers` with the indexed scalars only (``view=brief``): no arrays."""

        def brief_page(cursor: str | None) -> Page[LayerBrief]:
            params = self._params(cursor=cursor, limit=page_size, view="brief", **filters)
            data = self.request("GET", "/v1/layers", params=params).json()
            return Page[LayerBrief].model_validate(data)

        return follow_pages(brief_page)

    def layers_df(
        self, *, arrays: bool = False, page_size: int = 200, **filters: Any
    ) -> pd.DataFrame:
        """Every matching stored layer as a DataFrame, one row per layer with every scalar,
        flag and storage field (job, step, ...); the arrays too with ``arrays=True``. The
        filters of :meth:`layers` (``job_id``, ``kind``, ``tag``, ``step_min``, ``sort``...).
        Needs pandas (``pip install 'curvprof[pandas]'``)."""
        return layers_frame(self.layers(page_size=page_size, **filters), arrays=arrays)

    def layer(self, layer_id: int) -> LayerDetail:
        data = self.request("GET", f"/v1/layers/{layer_id}").json()
        return LayerDetail.model_validate(data)

    def summary(self, job_ids: list[str] | None = None) -> Summary:
        params = self._params(jobs=job_ids or None)
        return Summary.model_validate(self.request("GET", "/v1/summary", params=params).json())

    def preconditioner(self, job_id: str) -> JobPreconditioner:
        r = self.request("GET", f"/v1/jobs/{job_id}/preconditioner")
        return JobPreconditioner.model_validate(r.json())

    def layer_plot(self, layer_id: int) -> bytes:
        """The PNG of one stored layer (h vs σ with the α fit, σ vs k, sorted h and λ)."""
        return self.request("GET", f"/v1/layers/{layer_id}/plot").content

    def identity_plot(
        self, job_ids: list[str] | None = None, kind: str | list[str] | None = None
    ) -> bytes:
        """The PNG of measured s against αγ over the stored layers of these jobs."""
        params = self._params(jobs=job_ids or None, kind=kind)
        return self.request("GET", "/v1/plots/identity", params=params).content

    def export_csv(self, **filters: Any) -> str:
        return self.request("GET", "/v1/layers.csv", params=self._params(**filters)).text

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False
