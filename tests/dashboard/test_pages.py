"""The dashboard in a real browser: every page opens without console errors, the layer
table shows the API's numbers, every chart draws its traces, sorting and pages work."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.dashboard.charts import chart_names, drawn
from tests.dashboard.conftest import Fleet, Tab

pytestmark = pytest.mark.timeout(300)

LAYER_COLUMNS = (
    "alpha",
    "r2_alpha",
    "gamma",
    "s",
    "predicted_s",
    "triangle_relative_error",
    "triangle_bound",
    "s_eig",
    "pr_h",
)


def _rows(tab: Tab) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = tab.page.eval_on_selector_all(
        "#layer-table tbody tr[data-layer-id]",
        """(trs) => trs.map((tr) => {
            const out = {id: Number(tr.dataset.layerId)};
            tr.querySelectorAll('td[data-col]').forEach((td) => {
              out[td.dataset.col] = {text: td.textContent.trim(), value: td.dataset.value};
            });
            return out;
        })""",
    )
    return rows


def test_every_page_opens_and_draws_without_console_errors(tab: Tab, fleet: Fleet) -> None:
    layer_ids = [r.id for r in fleet.client.layers_page(job_id=fleet.full.id, limit=1).items]
    paths = [
        "/ui",
        f"/ui/jobs/{fleet.full.id}",
        f"/ui/jobs/{fleet.h_only.id}",
        f"/ui/jobs/{fleet.failed.id}",
        *(f"/ui/layers/{i}" for i in layer_ids),
        f"/ui/compare?jobs={fleet.full.id},{fleet.h_only.id}",
    ]
    for path in paths:
        response = tab.open(path)
        assert response.status == 200, path
        figures = tab.page.locator("[data-figure]").count()
        assert tab.page.evaluate("document.body.dataset.chartsReady") == str(figures), path
        for name in chart_names(tab.page):
            counts = drawn(tab.page, name)
            assert counts["svg"] > 0 and counts["marks"] > 0, (path, name, counts)
    assert tab.page.goto(fleet.server.url + "/").url.endswith("/ui")
    assert tab.errors == []


def test_jobs_list_states_progress_and_failed_error(tab: Tab, fleet: Fleet) -> None:
    tab.open("/ui")
    for job in (fleet.full, fleet.h_only, fleet.failed):
        row = tab.page.locator(f'tr.job[data-job-id="{job.id}"]')
        assert row.locator("td.state").inner_text() == job.state
        total = job.progress.total
        assert row.locator(".count").inner_text().startswith(f"{job.progress.done}/{total}")
    error = tab.page.locator(f'tr.job-error[data-job-id="{fleet.failed.id}"]').inner_text()
    assert error.strip() == fleet.failed.error
    assert tab.page.locator("tr.job-error").count() == 1  # only the failed job has one
    tab.page.select_option('select[name="state"]', "failed")
    tab.page.click('#job-filters button[type="submit"]')
    tab.page.wait_for_url("**state=failed**")
    ids = tab.page.eval_on_selector_all("tr.job", "(t) => t.map((r) => r.dataset.jobId)")
    assert ids == [fleet.failed.id]
    tab.page.goto(fleet.server.url + f"/ui/jobs/{fleet.failed.id}")
    assert tab.page.locator("p.job-error").inner_text().strip() == fleet.failed.error
    # the job's name and tags filter the list as they filter GET /v1/jobs
    for query in ("name=run-a", "tag=sweep", "name=run-a&tag=sweep"):
        tab.open(f"/ui?{query}")
        ids = tab.page.eval_on_selector_all("tr.job", "(t) => t.map((r) => r.dataset.jobId)")
        assert ids == [j.id for j in fleet.client.iter_jobs(**dict(
            pair.split("=") for pair in query.split("&")))] == [fleet.full.id]  # fmt: skip
    tab.open("/ui?name=no-such-run")
    assert tab.page.locator("tr.job").count() == 0
    assert "match these filters" in tab.page.locator("table").inner_text()
    assert tab.errors == []


def test_layer_table_equals_the_api(tab: Tab, fleet: Fleet) -> None:
    for job in (fleet.full, fleet.h_only):
        api = {r.id: r for r in fleet.client.layers(job_id=job.id)}
        tab.open(f"/ui/jobs/{job.id}")
        shown = _rows(tab)
        assert sorted(r["id"] for r in shown) == sorted(api)
        for row in shown:
            layer = api[row["id"]]
            assert row["name"]["text"] == layer.name and row["kind"]["text"] == layer.kind
            for column in LAYER_COLUMNS:
                expected = getattr(layer, column)
                cell = row[column]
                if expected is None:
                    assert cell["value"] == "" and cell["text"] == "—", column
                    continue
                assert float(cell["value"]) == expected, column  # the exact stored value
                shown_number = float(cell["text"].split("±")[0])
                assert math.isclose(shown_number, expected, rel_tol=5e-3, abs_tol=1e-12), column
            assert layer.route is not None and row["route"]["text"] == layer.route
            assert row["flags"]["text"].split() == layer.flags
        precond = tab.page.locator("#preconditioner-table tbody tr").count()
        assert precond == sum(len(r.preconditioner) for r in api.values())
    assert tab.errors == []


def test_job_charts_have_a_trace_per_kind(tab: Tab, fleet: Fleet) -> None:
    layers = list(fleet.client.layers(job_id=fleet.full.id))
    kinds = {r.kind for r in layers}
    tab.open(f"/ui/jobs/{fleet.full.id}")
    assert drawn(tab.page, "depth")["traces"] == len(kinds)
    assert drawn(tab.page, "identity")["traces"] == len(kinds) + 1  # and the line s = αγ
    points = drawn(tab.page, "depth")["marks"]
    assert points == sum(r.alpha is not None for r in layers)


def test_layer_page_charts_and_provenance(tab: Tab, fleet: Fleet) -> None:
    for job, compressed in ((fleet.full, True), (fleet.h_only, False)):
        # the last layer of each job (the head: the fit set and K differ from the hidden layers)
        for brief in list(fleet.client.layers(job_id=job.id, sort="-id"))[:1]:
            layer = fleet.client.layer(brief.id)
            tab.open(f"/ui/layers/{layer.id}")
            expected = {
                "h-sigma": 1 + (layer.alpha is not None),
                "sigma-k": 1,
                "rank": 2,
                **({"compressed": 1} if layer.compressed else {}),
                **({"kfac": 2} if layer.phi or layer.chi else {}),
            }
            assert bool(layer.compressed) == compressed
            assert sorted(chart_names(tab.page)) == sorted(expected)
            for name, traces in expected.items():
                assert drawn(tab.page, name)["traces"] == traces, (layer.name, name)
            if compressed:
                assert drawn(tab.page, "compressed")["heatmaps"] == 1
                k = len(layer.compressed)
                z = tab.page.evaluate("document.getElementById('chart-compressed').data[0].z")
                assert len(z) == k and z[0][0] == layer.compressed[0][0]
            else:
                assert tab.page.locator("#no-compressed").is_visible()
            h_points = sum(1 for s, h in zip(layer.sigma, layer.h, strict=True) if s > 0 and h > 0)
            assert (
                tab.page.evaluate("document.getElementById('chart-h-sigma').data[0].x.length")
                == h_points
            )
            provenance = tab.page.locator("#provenance").inner_text()
            assert (
                layer.provenance.checkpoint_sha256
                and layer.provenance.checkpoint_sha256 in provenance
            )
            assert str(layer.provenance.data_sha256) in provenance
            assert tab.page.locator("#device").inner_text() == layer.provenance.device
            assert tab.page.locator("#route").inner_text() == layer.route
            alpha_cell = tab.page.locator('#fit-table td[data-col="alpha"]')
            assert alpha_cell.get_attribute("data-value") == (
                repr(layer.alpha) if layer.alpha is not None else ""
            )
            tab.open(f"/ui/jobs/{job.id}")  # the job's own provenance: what its layers share
            shared = tab.page.locator("#job-provenance").inner_text()
            assert (
                str(layer.provenance.data_sha256) in shared
                and str(layer.provenance.data_name) in shared
            )
            assert f"{len(layer.provenance.data_indices)} examples" in shared
    assert tab.errors == []


def test_sorting_pagination_and_navigation(tab: Tab, fleet: Fleet) -> None:
    job = fleet.full
    tab.open(f"/ui/jobs/{job.id}")
    tab.page.click('th[data-key="gamma"] a')
    tab.page.wait_for_url("**sort=gamma**")
    api_up = [r.id for r in fleet.client.layers(job_id=job.id, sort="gamma")]
    assert [r["id"] for r in _rows(tab)] == api_up
    tab.page.click('th[data-key="gamma"] a')
    tab.page.wait_for_url("**sort=-gamma**")
    api_down = [r.id for r in fleet.client.layers(job_id=job.id, sort="-gamma")]
    assert [r["id"] for r in _rows(tab)] == api_down

    tab.open(f"/ui/jobs/{job.id}?sort=-alpha&limit=2")
    first = [r["id"] for r in _rows(tab)]
    assert len(first) == 2 and tab.page.locator('[data-page="previous"]').count() == 0
    tab.page.click('[data-page="next"]')
    tab.page.wait_for_url("**cursor=**")
    second = [r["id"] for r in _rows(tab)]
    api = [r.id for r in fleet.client.layers(job_id=job.id, sort="-alpha")]
    assert first + second == api and tab.page.locator('[data-page="next"]').count() == 0
    assert tab.page.locator(".page-number").inner_text() == "page 2"
    tab.page.click('[data-page="previous"]')
    tab.page.wait_for_load_state()
    assert [r["id"] for r in _rows(tab)] == first

    # list -> job -> layer -> back to the job through the crumbs
    tab.open("/ui", charts=False)
    tab.page.click(f'tr.job[data-job-id="{job.id}"] td.job-id a')
    tab.page.wait_for_url(f"**/ui/jobs/{job.id}")
    tab.page.click(f'#layer-table tr[data-layer-id="{api[0]}"] td[data-col="name"] a')
    tab.page.wait_for_url(f"**/ui/layers/{api[0]}")
    tab.page.click("#job-link")
    tab.page.wait_for_url(f"**/ui/jobs/{job.id}")
    assert tab.errors == []


def test_compare_two_jobs(tab: Tab, fleet: Fleet) -> None:
    a, b = fleet.full, fleet.h_only
    tab.open("/ui", charts=False)
    tab.page.check(f'input[name="jobs"][value="{a.id}"]')
    tab.page.check(f'input[name="jobs"][value="{b.id}"]')
    tab.page.click("#compare-button")
    tab.page.wait_for_url("**/ui/compare?**")
    tab.page.wait_for_function("document.body.dataset.chartsReady !== undefined")
    # the jobs come in the list's order (newest first); the first one is the reference
    order = tab.page.eval_on_selector_all(
        "ol.compared a", "(links) => links.map((l) => l.getAttribute('href').split('/').pop())"
    )
    assert sorted(order) == sorted([a.id, b.id])
    a, b = (fleet.full, fleet.h_only) if order[0] == fleet.full.id else (fleet.h_only, fleet.full)
    layers = {j.id: {r.name: r for r in fleet.client.layers(job_id=j.id)} for j in (a, b)}
    names = list(layers[a.id])
    for metric in ("alpha", "gamma", "s", "identity_error"):
        heat = drawn(tab.page, f"{metric}-heat")
        assert heat["traces"] == heat["heatmaps"] == 1
        assert drawn(tab.page, f"{metric}-lines")["traces"] == 2
    z = tab.page.evaluate("document.getElementById('chart-alpha-heat').data[0].z")
    text = tab.page.evaluate("document.getElementById('chart-alpha-heat').data[0].text")
    y = [row[0] for row in text]  # the layer of each heat-map row (depth on the axis)
    assert sorted(y) == sorted(names)
    for name, row in zip(y, z, strict=True):
        assert row == [layers[a.id][name].alpha, layers[b.id][name].alpha]
    # the difference table: value, and highlighted where the second job moved by > 5 %
    cells = tab.page.eval_on_selector_all(
        "#diff-table tbody tr",
        "(trs) => trs.map((tr) => [tr.cells[0].textContent, "
        "Array.from(tr.cells).slice(1).map((c) => [c.dataset.value, c.className])])",
    )
    for name, values in cells:
        ref, other = layers[a.id][name].alpha, layers[b.id][name].alpha
        assert [float(v) for v, _ in values] == [ref, other]
        assert ("changed" in values[1][1]) == (abs(other - ref) > 0.05 * abs(ref))
    tab.page.click('[data-metric="gamma"]')
    tab.page.wait_for_url("**metric=gamma**")
    first_gamma = tab.page.locator("#diff-table tbody tr").first.locator("td").nth(1)
    assert float(first_gamma.get_attribute("data-value") or "nan") == layers[a.id][y[0]].gamma
    assert tab.errors == []
