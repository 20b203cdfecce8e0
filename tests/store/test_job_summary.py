"""A job's listing figures (service/store/job_summary.py): fixed on its row when it ends,
written as zeros for a new job, cleared by any later write to its layers, filled by
migration 0005 for jobs that had ended; fixed or counted, the listing shows the same numbers
(SQLite, and PostgreSQL when set)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from api_schemas import JobSpec
from service.store import db, job_summary, repo
from service.store.models import JobRow
from tests.service.helpers import fake_profile, store_layer


def _job_with_layers(session: Session) -> JobRow:
    """Three planned layers: one stored (2.5 s), one failed, one pending."""
    job, _ = repo.create_job(
        session, JobSpec(checkpoint_id="zoo:mlp", dataset="digits"), arch="mlp"
    )
    repo.ensure_job_layers(session, job.id, ["a", "b", "c"])
    assert store_layer(session, job, fake_profile("a", wall_seconds=2.5))
    repo.set_layers_state(session, job.id, ["b"], "failed", error="boom")
    return job


def _listed(session: Session, job_id: str) -> tuple[int, int, int, float]:
    session.expire_all()
    row = session.get(JobRow, job_id)
    assert row is not None
    (listed,) = repo.job_summaries(session, [row])
    p = listed.progress
    return p.done, p.total, p.failed, listed.timings.compute_seconds


def test_an_ended_job_is_listed_from_its_fixed_figures(session: Session) -> None:
    job = _job_with_layers(session)
    assert job.summary_total is None  # running: counted
    assert _listed(session, job.id) == (1, 3, 1, 2.5)
    assert repo.set_job_state(session, job.id, "cancelled")
    session.refresh(job)
    fixed = (job.summary_done, job.summary_total, job.summary_failed, job.summary_compute_seconds)
    assert fixed == (1, 3, 1, 2.5)
    assert _listed(session, job.id) == (1, 3, 1, 2.5)
    # the fixed figures are what is listed: a row changed behind the store's back shows
    session.execute(text("UPDATE jobs SET summary_done = 7 WHERE id = :id"), {"id": job.id})
    session.commit()
    assert _listed(session, job.id)[0] == 7


def test_a_late_layer_write_clears_the_fixed_figures(session: Session) -> None:
    job = _job_with_layers(session)
    repo.set_job_state(session, job.id, "cancelled")
    assert store_layer(session, job, fake_profile("c", wall_seconds=1.0))  # arrives late
    session.refresh(job)
    assert job.summary_total is None
    assert _listed(session, job.id) == (2, 3, 1, 3.5)
    repo.set_job_state(session, job.id, "queued")  # run again: nothing fixed while it runs
    repo.set_layers_state(session, job.id, ["b"], "succeeded")
    repo.set_job_state(session, job.id, "succeeded")
    session.refresh(job)
    assert (job.summary_done, job.summary_total, job.summary_failed) == (3, 3, 0)
    assert _listed(session, job.id) == (3, 3, 0, 3.5)


def test_a_new_job_is_listed_from_the_figures_of_no_layers(session: Session) -> None:
    job, _ = repo.create_job(
        session, JobSpec(checkpoint_id="zoo:mlp", dataset="digits"), arch="mlp"
    )
    fixed = (job.summary_done, job.summary_total, job.summary_failed, job.summary_compute_seconds)
    assert fixed == (0, 0, 0, 0.0)
    assert job_summary.counted(session, [job.id])[job.id] == job_summary.JobSummary()
    repo.ensure_job_layers(session, job.id, ["a", "b"])  # planned: counted from now on
    session.refresh(job)
    assert job.summary_total is None
    assert _listed(session, job.id) == (0, 2, 0, 0.0)


def test_counted_matches_fixed_for_every_job_of_a_page(session: Session) -> None:
    jobs = [_job_with_layers(session) for _ in range(3)]
    repo.set_job_state(session, jobs[0].id, "succeeded")
    repo.set_job_state(session, jobs[2].id, "failed")
    ids = [j.id for j in jobs]
    rows = [session.get(JobRow, job_id) for job_id in ids]
    listed = job_summary.summaries(session, [r for r in rows if r is not None])
    assert listed == job_summary.counted(session, ids)


def test_upgrade_to_0005_fixes_the_figures_of_ended_jobs(db_url: str) -> None:
    db.upgrade(db_url, "0004_layer_route_device")
    engine = db.make_engine(db_url)
    now = datetime(2026, 1, 1)
    with engine.begin() as conn:
        for job_id, state in (("ended", "succeeded"), ("live", "running")):
            conn.execute(
                text(
                    "INSERT INTO jobs (id, state, spec_json, checkpoint_id, dataset_ref, runs,"
                    " created_at) VALUES (:id, :state, '{}', 'c1', 'digits', 1, :now)"
                ),
                {"id": job_id, "state": state, "now": now},
            )
            for position, layer_state in enumerate(("succeeded", "succeeded", "failed")):
                conn.execute(
                    text(
                        "INSERT INTO job_layers (job_id, position, layer_name, state, attempts)"
                        " VALUES (:job, :pos, :name, :state, 1)"
                    ),
                    {"job": job_id, "pos": position, "name": f"l{position}", "state": layer_state},
                )
            for position, wall in enumerate((1.25, 2.0)):
                conn.execute(
                    text(
                        "INSERT INTO layer_results (job_id, layer_name, kind, flags, k, data_seed,"
                        " data_indices, dtype, top_k, versions, created_at, wall_seconds) VALUES"
                        " (:job, :name, 'linear', '[]', 3, 0, '[]', 'float64', 3, '{}', :now, :w)"
                    ),
                    {"job": job_id, "name": f"l{position}", "now": now, "w": wall},
                )
    db.upgrade(db_url)
    with db.make_session_factory(engine)() as s:
        ended, live = s.get(JobRow, "ended"), s.get(JobRow, "live")
        assert ended is not None and live is not None
        fixed = (ended.summary_done, ended.summary_total, ended.summary_failed)
        assert fixed == (2, 3, 1) and ended.summary_compute_seconds == 3.25
        assert live.summary_total is None
        assert job_summary.summaries(s, [ended, live]) == job_summary.counted(s, ["ended", "live"])
    db.downgrade(db_url, "0004_layer_route_device")
    db.upgrade(db_url)
    engine.dispose()
