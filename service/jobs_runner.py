"""The in-process job manager of the API server.

A manager thread claims queued jobs and runs each in its own thread on Ray; every finished
layer is committed as it arrives. On start, jobs left ``running`` by a previous server are
queued again and resume with the layers not yet stored (nothing lost or counted twice).

``workers.execution`` and the preparation path are imported where the runner first uses
them: they bring Ray in, which an app built without a runner (tests, tools) never needs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from api_schemas import JobSpec, ProfileSettings, Provenance
from service.artifacts import zoo_reference
from service.settings import Settings
from service.store import logs as job_logs_store
from service.store import repo
from service.store.models import CheckpointRow, DatasetRow, JobRow, utcnow
from workers.versions import library_versions

if TYPE_CHECKING:
    # the types only: the modules are imported to run where first used (module docstring)
    from workers.execution import DataReference, ModelReference
    from workers.execution.prepare import DataSource, ModelSource

log = logging.getLogger("curvprof.jobs")
# extra runs for layers a run ended without a result for (their task was lost or cancelled
# by Ray without the job being cancelled); after them such a layer fails
UNREPORTED_ROUNDS = 1
# the start of the job's log line when Ray runs a layer group's task again (its worker died)
RETRY_LINE = "Ray retries the task of"


@dataclass
class PreparedJob:
    model_reference: ModelReference  # the tasks open the stored artifacts
    data_reference: DataReference
    names: list[str]
    settings: ProfileSettings
    # what every layer shares; each layer's node, host and device come from its task
    provenance: Provenance


class JobRunner:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._threads: dict[str, threading.Thread] = {}
        self._manager: threading.Thread | None = None
        self.ray_error: str | None = None
        # called with a layer's wall seconds once it is stored (the /metrics histogram)
        self.on_layer_stored: Callable[[float | None], None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        with self._session() as s:
            for row in repo.jobs_in_states(s, ["running"]):
                repo.set_job_state(s, row.id, "queued", only_from=["running"])
                log.info("job %s will resume", row.id)
        self._stop.clear()
        self._manager = threading.Thread(target=self._loop, name="curvprof-jobs", daemon=True)
        self._manager.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming jobs and cancel in-flight tasks; running jobs stay ``running`` in the
        store and resume on the next start."""
        self._stop.set()
        self._wake.set()
        if self._manager is not None:
            self._manager.join(timeout)
        for thread in list(self._threads.values()):
            thread.join(timeout)

    def notify(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False if it had already finished."""
        with self._session() as s:
            changed = repo.set_job_state(s, job_id, "cancelled", only_from=["queued", "running"])
        if changed:
            with self._lock:
                self._cancelled.add(job_id)
        return changed

    @property
    def active_jobs(self) -> int:
        with self._lock:
            return sum(1 for t in self._threads.values() if t.is_alive())

    def _job_log(self, job_id: str, level: int, message: str) -> None:
        """A line of the job's log: in the store (``GET /v1/jobs/{id}/logs``) and the serve log."""
        log.log(level, "job %s: %s", job_id, message)
        try:
            with self._session() as s:
                job_logs_store.add_job_log(s, job_id, logging.getLevelName(level), message)
        except Exception:  # a log line must never fail the job
            log.exception("could not store a log line of job %s", job_id)

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        session = self.sessions()
        try:
            yield session
        finally:
            session.close()

    # ------------------------------------------------------------------ manager

    def _ensure_ray(self) -> bool:
        # on first use, not at import: see the module docstring
        from workers.execution import init_ray, ray_ready

        try:
            init_ray(self.settings.ray_address, num_cpus=self.settings.ray_num_cpus)
        except Exception as exc:
            self.ray_error = f"{type(exc).__name__}: {exc}"
            log.warning("Ray is not reachable: %s", self.ray_error)
            return False
        self.ray_error = None
        return ray_ready()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._note_cancellations()
                if self._ensure_ray():
                    self._claim()
            except Exception:
                log.exception("job manager iteration failed")
            self._wake.wait(1.0)
            self._wake.clear()

    def _note_cancellations(self) -> None:
        """Jobs of this runner cancelled by another process (a follower of ``serve --workers``
        that served the cancel, service/leader.py): their tasks stop as if cancelled here."""
        with self._lock:
            running = [job_id for job_id in self._threads if job_id not in self._cancelled]
        if not running:
            return
        with self._session() as s:
            cancelled = repo.jobs_in_states(s, ["cancelled"], ids=running)
        with self._lock:
            self._cancelled.update(row.id for row in cancelled)

    def _claim(self) -> None:
        with self._lock:
            self._threads = {k: t for k, t in self._threads.items() if t.is_alive()}
            free = self.settings.max_concurrent_jobs - len(self._threads)
        if free <= 0:
            return
        with self._session() as s:
            queued = repo.jobs_in_states(s, ["queued"])[:free]
            for row in queued:
                claimed = repo.set_job_state(
                    s,
                    row.id,
                    "running",
                    only_from=["queued"],
                    started_at=row.started_at or utcnow(),
                    runs=row.runs + 1,
                )
                if not claimed:
                    continue
                self._job_log(row.id, logging.INFO, f"claimed (run {row.runs + 1})")
                thread = threading.Thread(
                    target=self._run_job, args=(row.id,), name=f"job-{row.id[:8]}", daemon=True
                )
                with self._lock:
                    self._threads[row.id] = thread
                thread.start()

    # ------------------------------------------------------------------ one job

    def _should_stop(self, job_id: str) -> bool:
        with self._lock:
            return self._stop.is_set() or job_id in self._cancelled

    def _run_job(self, job_id: str) -> None:
        try:
            self._execute(job_id)
        except Exception as exc:
            if self._stop.is_set():
                log.info("job %s interrupted by shutdown: %s", job_id, exc)
                return
            log.exception("job %s failed", job_id)
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._job_log(job_id, logging.ERROR, f"failed: {text}")
            with self._session() as s:
                repo.set_job_state(s, job_id, "failed", error=text, only_from=["running"])
        finally:
            self.notify()

    def _execute(self, job_id: str) -> None:
        # on first use, not at import: see the module docstring
        from workers.execution import LayerOutcome, gpus_per_task, run_layer_groups
        from workers.execution.scheduler import group_layers

        with self._session() as s:
            job = s.get(JobRow, job_id)
            if job is None or job.state != "running":
                return
            spec = repo.job_spec(job)
            ckpt = s.get(CheckpointRow, spec.checkpoint_id)
            dataset = s.get(DatasetRow, spec.dataset_id) if spec.dataset_id else None
        prepared = self._prepare(spec, ckpt, dataset)
        with self._session() as s:
            repo.ensure_job_layers(s, job_id, prepared.names)
            done = repo.stored_layer_names(s, job_id)
            remaining = [n for n in prepared.names if n not in done]
            repo.set_layers_state(s, job_id, remaining, "pending")
            repo.set_job_state(
                s,
                job_id,
                "running",
                only_from=["running"],
                provenance_json=prepared.provenance.model_dump_json(),
            )
        self._job_log(
            job_id,
            logging.INFO,
            f"{len(remaining)} of {len(prepared.names)} layers to profile"
            + (f" ({len(done)} already stored)" if done else ""),
        )
        settings = prepared.settings

        def on_submit(names: list[str]) -> None:
            with self._session() as s:
                repo.set_layers_state(s, job_id, names, "running", bump_attempts=True)

        def on_retry(names: list[str]) -> None:
            self._job_log(job_id, logging.WARNING, f"{RETRY_LINE} {', '.join(names)}")
            with self._session() as s:
                repo.set_layers_state(s, job_id, names, "running", bump_attempts=True)

        def on_layer(outcome: LayerOutcome) -> None:
            with self._session() as s:
                row = s.get(JobRow, job_id)
                assert row is not None
                if outcome.profile is not None:
                    profile = outcome.profile
                    if profile.wall_seconds is None:
                        profile = profile.model_copy(update={"wall_seconds": outcome.wall_seconds})
                    where = {"node_id": outcome.node_id, "hostname": outcome.hostname}
                    provenance = prepared.provenance.model_copy(
                        update={**where, "device": outcome.device}
                    )
                    stored = repo.record_layer_result(s, row, profile, provenance, settings)
                    if stored and self.on_layer_stored is not None:
                        self.on_layer_stored(outcome.wall_seconds)
                else:
                    state = "cancelled" if outcome.error == "cancelled" else "failed"
                    repo.set_layers_state(s, job_id, [outcome.name], state, error=outcome.error)
            if outcome.profile is not None:
                wall = f"{outcome.wall_seconds:.2f} s" if outcome.wall_seconds is not None else "-"
                self._job_log(
                    job_id,
                    logging.INFO,
                    f"layer {outcome.name}: alpha {_num(outcome.profile.alpha)}, "
                    f"{wall} on {outcome.hostname or outcome.node_id or '?'}",
                )
            else:
                self._job_log(job_id, logging.WARNING, f"layer {outcome.name}: {outcome.error}")

        for round_ in range(1 + UNREPORTED_ROUNDS):
            result = run_layer_groups(
                prepared.model_reference,
                prepared.data_reference,
                group_layers(remaining, self.settings.layers_per_task),
                settings,
                on_layer=on_layer,
                on_submit=on_submit,
                on_retry=on_retry,
                should_stop=lambda: self._should_stop(job_id),
                num_gpus=gpus_per_task(self.settings.num_gpus_per_task),
                max_retries=self.settings.task_max_retries,
            )
            if result == "stopped":
                break
            with self._session() as s:
                remaining = self._unreported(s, job_id)
                if remaining and round_ == UNREPORTED_ROUNDS:
                    repo.set_layers_state(
                        s, job_id, remaining, "failed", error="no result was stored for it"
                    )
            if not remaining:
                break
            self._job_log(
                job_id,
                logging.WARNING,
                f"{len(remaining)} layers ended with no stored result: run again "
                f"({', '.join(remaining)})",
            )
        with self._session() as s:
            if result == "stopped":
                if job_id in self._cancelled:
                    open_layers = [
                        n for n in prepared.names if n not in repo.stored_layer_names(s, job_id)
                    ]
                    repo.set_layers_state(s, job_id, open_layers, "cancelled")
                return
            job_obj = s.get(JobRow, job_id)
            assert job_obj is not None
            progress = repo.job_model(s, job_obj).progress
            failed = [lp for lp in progress.layers if lp.state == "failed"]
            if failed:
                first = failed[0]
                error = (
                    f"{len(failed)} of {progress.total} layers failed; {first.name}: {first.error}"
                )
                # the last line is stored before the state: a finished job's log is complete
                self._job_log(job_id, logging.ERROR, f"failed: {error}")
                repo.set_job_state(s, job_id, "failed", error=error, only_from=["running"])
            else:
                self._job_log(job_id, logging.INFO, f"succeeded: {progress.total} layers")
                repo.set_job_state(s, job_id, "succeeded", only_from=["running"])

    def _unreported(self, s: Session, job_id: str) -> list[str]:
        """Layers of a finished run that neither stored a result nor failed: a job succeeds
        only when every layer is stored, so these run again (``UNREPORTED_ROUNDS``)."""
        job = s.get(JobRow, job_id)
        assert job is not None
        layers = repo.job_model(s, job).progress.layers
        return [lp.name for lp in layers if lp.state not in ("succeeded", "failed")]

    def _prepare(
        self, spec: JobSpec, ckpt: CheckpointRow | None, dataset: DatasetRow | None
    ) -> PreparedJob:
        # on first use, not at import: see the module docstring
        from workers.execution import DataReference, ModelReference
        from workers.execution.prepare import DataSource, prepare

        limits = self.settings.intake_limits
        if dataset is not None:
            assert dataset.path is not None
            data = DataSource(dataset.path, sha256=dataset.sha256)
        else:
            assert spec.dataset is not None
            data = DataSource(spec.dataset)
        if ckpt is not None and ckpt.format == "pt2":
            return self._prepare_program(spec, ckpt, data)
        source = self._model_source(spec, ckpt)
        prepared = prepare(spec.to_settings(), source, data, loss=spec.loss, limits=limits)
        # the tasks open the same stored artifacts and check they are the ones opened here
        reference = ModelReference(source, prepared.loaded.sha256, prepared.settings.seed, limits)
        indices = tuple(prepared.provenance.data_indices or ())
        return PreparedJob(
            model_reference=reference,
            data_reference=DataReference(
                data, prepared.batch.sha256 or "", indices, source, limits
            ),
            names=prepared.names,
            settings=prepared.settings,
            provenance=_shared(prepared.provenance),
        )

    def _prepare_program(self, spec: JobSpec, ckpt: CheckpointRow, data: DataSource) -> PreparedJob:
        """A ``.pt2`` job: the program is opened only in a child process here (fit check and
        layer names) and in the Ray workers that profile it, never in this process."""
        # on first use, not at import: see the module docstring
        from workers.data import measurement_batch
        from workers.execution import DataReference, ModelReference
        from workers.execution.prepare import ModelSource, open_data
        from workers.intake.isolated import probe_program

        assert ckpt.path is not None and ckpt.sha256 is not None
        if not self.settings.allow_pickle_checkpoints:
            raise ValueError(".pt2 checkpoints are refused by this server (no pickle opt-in)")
        settings = spec.to_settings()
        probe = probe_program(
            Path(ckpt.path),
            limits=self.settings.intake_limits,
            data=data.source,
            loss=settings.loss,
            layers=spec.layers,
            timeout_s=self.settings.pickle_probe_timeout_s,
        )
        program = ModelSource(path=ckpt.path, allow_pickle=True)
        ds = open_data(data, program, self.settings.intake_limits)
        _, indices = measurement_batch(ds, settings.batch_size, settings.seed)
        prov = Provenance(
            checkpoint_sha256=ckpt.sha256,
            data_name=ds.name,
            data_sha256=ds.sha256 or data.sha256,
            data_seed=settings.seed,
            data_indices=indices,
            versions=library_versions(),
        )
        return PreparedJob(
            model_reference=ModelReference(
                program, ckpt.sha256, settings.seed, self.settings.intake_limits
            ),
            data_reference=DataReference(
                data, ds.sha256 or "", tuple(indices), program, self.settings.intake_limits
            ),
            names=probe.names,
            settings=settings,
            provenance=prov,
        )

    def _model_source(self, spec: JobSpec, ckpt: CheckpointRow | None) -> ModelSource:
        # on first use, not at import: see the module docstring
        from workers.execution.prepare import ModelSource

        zoo = zoo_reference(spec.checkpoint_id, spec.zoo_config)
        if zoo is not None:
            return ModelSource(zoo_config=zoo)
        if ckpt is None or ckpt.path is None:
            raise ValueError(f"checkpoint {spec.checkpoint_id} is not stored")
        if ckpt.format == "hf":
            return ModelSource(path=ckpt.path)
        return ModelSource(weights=ckpt.path, zoo_config=json.loads(ckpt.config_json or "{}"))


def _shared(provenance: Provenance) -> Provenance:
    """The job's Provenance without where it was prepared (this server, not the tasks)."""
    return provenance.model_copy(update={"node_id": None, "hostname": None, "device": None})


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
