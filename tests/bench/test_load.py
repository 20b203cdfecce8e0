"""A slice of bench.load: 50 concurrent clients against a real server process; 0 errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.load import KINDS, LoadPlan, run_load


@pytest.mark.timeout(300)
def test_fifty_concurrent_clients_get_no_errors(tmp_path: Path) -> None:
    result = run_load(
        f"sqlite:///{tmp_path / 'load.db'}",
        tmp_path,
        LoadPlan(backend="sqlite", clients=50, requests=3, layers=500),
    )
    assert result.requests == 150
    assert result.errors == 0 and not result.error_kinds, result.error_kinds
    assert set(result.kinds) == set(KINDS) and all(result.kinds[k].requests for k in KINDS)
    assert 0 < result.kinds["layers_brief"].p50_ms <= result.kinds["layers_brief"].p99_ms


@pytest.mark.timeout(300)
def test_two_server_processes_get_no_errors_and_their_cpu_is_counted(tmp_path: Path) -> None:
    result = run_load(
        f"sqlite:///{tmp_path / 'load.db'}",
        tmp_path,
        LoadPlan(backend="sqlite", clients=20, requests=3, layers=500, workers=2),
    )
    assert result.requests == 60 and result.workers == 2
    assert result.errors == 0 and not result.error_kinds, result.error_kinds
    assert result.repeats[0].server_cpu_s > 0


@pytest.mark.timeout(300)
def test_request_cpu_measures_every_kind_on_a_real_server(tmp_path: Path) -> None:
    from bench.request_cpu import measure
    from bench.store import populate, template_profiles

    url = f"sqlite:///{tmp_path / 'cpu.db'}"
    populate(url, 300, template_profiles(), per_job=3)
    figures = measure(url, tmp_path, requests=5)
    assert set(figures) == set(KINDS)
    assert all(wall > 0 for _, wall, _ in figures.values())
    assert sum(cpu for cpu, _, _ in figures.values()) > 0  # /proc counts in 10 ms ticks
    assert figures["layers_full"][2] > figures["layers_brief"][2] > 0  # arrays vs scalars


@pytest.mark.timeout(300)
def test_a_paired_run_drives_both_checkouts_in_turn(tmp_path: Path) -> None:
    from bench.load import run_paired_load, server_process

    checkout = Path(__file__).resolve().parents[2]  # this checkout, against itself
    ours, theirs = run_paired_load(
        f"sqlite:///{tmp_path / 'load.db'}",
        tmp_path,
        LoadPlan(backend="sqlite", clients=10, requests=2, layers=200, repeats=2),
        checkout,
    )
    for result in (ours, theirs):
        assert len(result.repeats) == 2 and result.requests == 40
        assert result.errors == 0 and not result.error_kinds, result.error_kinds
        assert all(r.server_cpu_s > 0 for r in result.repeats)
    # each drive had keys of its own: every submission made a new job, none was a replay
    # (populate stored 200 layers as 100 jobs of 2; each server's warm-up submitted one)
    with server_process(f"sqlite:///{tmp_path / 'load.db'}", tmp_path / "count") as (url, _):
        import httpx

        jobs = httpx.get(f"{url}/v1/jobs", params={"limit": 500}, timeout=30).json()["items"]
    submitted = sum(r.kinds["submit"].requests for r in (*ours.repeats, *theirs.repeats))
    assert submitted > 0 and len(jobs) == 100 + 2 + submitted
