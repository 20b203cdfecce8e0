"""Filters on the labels of jobs (name, tags, training step), shared by the job and layer
listings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, exists

from service.store.models import JobRow, JobTagRow


@dataclass
class JobLabelFilters:
    """Jobs by their labels: ``name`` exactly, every one of ``tags``, ``step`` in a range."""

    name: str | None = None
    tags: list[str] | None = None
    step: int | None = None
    step_min: int | None = None
    step_max: int | None = None

    def job_clauses(self) -> list[ColumnElement[bool]]:
        """Conditions on ``jobs`` rows."""
        out: list[ColumnElement[bool]] = []
        if self.name is not None:
            out.append(JobRow.name == self.name)
        for tag in self.tags or []:
            out.append(exists().where(JobTagRow.job_id == JobRow.id, JobTagRow.tag == tag))
        for lo, hi in ((self.step, self.step), (self.step_min, self.step_max)):
            if lo is not None:
                out.append(JobRow.step >= lo)
            if hi is not None:
                out.append(JobRow.step <= hi)
        return out
