"""The job runner's verdict (service/jobs_runner.py): a job succeeds only when every layer is
stored; a layer a run ended without a result for (neither stored nor failed) is unreported
and runs again. Checked on a real store, SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from api_schemas import JobSpec
from service.jobs_runner import JobRunner
from service.settings import Settings
from service.store import repo
from tests.service.helpers import fake_profile, store_layer


def test_only_stored_and_failed_layers_are_reported(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    runner = JobRunner(Settings(data_dir=tmp_path, run_jobs=False), sessions)
    names = ["stored", "failed", "cancelled", "pending", "running"]
    with sessions() as s:
        job, _ = repo.create_job(s, JobSpec(checkpoint_id="zoo:mlp", dataset="digits"), arch="mlp")
        repo.ensure_job_layers(s, job.id, names)
        store_layer(s, job, fake_profile("stored"))
        repo.set_layers_state(s, job.id, ["failed"], "failed", error="boom")
        repo.set_layers_state(s, job.id, ["cancelled"], "cancelled")
        repo.set_layers_state(s, job.id, ["running"], "running")
        s.commit()
        assert runner._unreported(s, job.id) == ["cancelled", "pending", "running"]
        repo.set_layers_state(s, job.id, ["cancelled", "pending", "running"], "failed")
        s.commit()
        assert runner._unreported(s, job.id) == []
