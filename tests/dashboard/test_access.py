"""Closed reads show the login prompt and never data; downloads equal the API's; bad input
gets a 4xx page, not a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from service.embedded import EmbeddedServer
from service.settings import Settings
from tests.dashboard.conftest import TOKEN, Fleet, Tab

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def closed(fleet: Fleet) -> Iterator[EmbeddedServer]:
    """A second server over the same store, with reads closed (a token required)."""
    settings = Settings(
        data_dir=fleet.server.settings.data_dir,
        api_tokens=[TOKEN],
        open_reads=False,
        run_jobs=False,
    )
    server = EmbeddedServer(settings)
    yield server
    server.stop()


def test_closed_reads_show_the_login_prompt_not_data(
    tab: Tab, fleet: Fleet, closed: EmbeddedServer
) -> None:
    ids = [fleet.full.id, fleet.h_only.id, fleet.failed.id]
    layer = next(iter(fleet.client.layers(job_id=fleet.full.id)))
    guarded = [
        "/ui",
        f"/ui/jobs/{fleet.full.id}",
        f"/ui/layers/{layer.id}",
        f"/ui/compare?jobs={ids[0]},{ids[1]}",
    ]
    for path in guarded:
        response = tab.page.goto(closed.url + path)
        assert response.status == 401, path
        assert tab.page.locator("#login form").is_visible()
        # the page names only what was asked for (the form's way back), nothing stored
        html = tab.page.content().replace(f'value="{path.replace("&", "&amp;")}"', "")
        assert not any(i in html for i in ids), path
        assert f">{layer.name}<" not in html and "α" not in html, path
        assert tab.page.locator("[data-figure], #layer-table, #jobs-table").count() == 0
    # a job that does not exist is a 401 too: the gate comes before the lookup
    unknown = "/ui/jobs/nope/preconditioner.json"
    for path in (f"/ui/progress?ids={ids[0]}", f"/ui/jobs/{ids[0]}/layers.csv", unknown):
        r = httpx.get(closed.url + path)
        assert r.status_code == 401 and ids[0] not in r.text
    # a wrong token keeps the prompt up, the right one opens the page it was asked for
    tab.page.goto(closed.url + f"/ui/jobs/{fleet.full.id}")
    tab.page.fill('input[name="token"]', "wrong")
    tab.page.click('#login button[type="submit"]')
    assert tab.page.locator("#login .error").inner_text() == "invalid token"
    tab.page.fill('input[name="token"]', TOKEN)
    tab.page.click('#login button[type="submit"]')
    tab.page.wait_for_url(f"**/ui/jobs/{fleet.full.id}")
    tab.page.wait_for_function("document.body.dataset.chartsReady !== undefined")
    assert tab.page.locator("#layer-table tbody tr[data-layer-id]").count() == 3
    csv_text = tab.page.evaluate(
        f"fetch('/ui/jobs/{fleet.full.id}/layers.csv').then((r) => r.text())"
    )
    assert layer.name in csv_text
    tab.page.click("header .logout button")
    tab.page.wait_for_url("**/ui")
    assert tab.page.locator("#login form").is_visible()
    # the 401 responses the prompt is served with are the only console errors
    assert all("401" in e for e in tab.errors), tab.errors


def test_downloads_equal_the_api(fleet: Fleet) -> None:
    base, job = fleet.server.url, fleet.full.id
    with httpx.Client(base_url=base) as http:
        assert (
            http.get(f"/ui/jobs/{job}/layers.csv").text
            == http.get("/v1/layers.csv", params={"job_id": job}).text
        )
        served = http.get(f"/ui/jobs/{job}/layers.json").json()
        api = http.get("/v1/layers", params={"job_id": job, "limit": 1000}).json()["items"]
        assert served["job_id"] == job and served["layers"] == api
        assert (
            http.get(f"/ui/jobs/{job}/preconditioner.json").json()
            == http.get(f"/v1/jobs/{job}/preconditioner").json()
        )
        assert http.get("/ui/jobs/nope/layers.csv").status_code == 404
        # what the progress bars poll: each job's state and layer counts, as the API has them
        jobs = (fleet.full, fleet.h_only, fleet.failed)
        polled = http.get("/ui/progress", params={"ids": ",".join(j.id for j in jobs)}).json()
        for j in jobs:
            api = http.get(f"/v1/jobs/{j.id}").json()
            p = api["progress"]
            assert polled[j.id] == {
                "state": api["state"],
                "done": p["done"],
                "total": p["total"],
                "failed": p["failed"],
            }


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ui/jobs/nope", 404),
        ("/ui/layers/987654321", 404),
        ("/ui/jobs/{job}?sort=bogus", 422),
        ("/ui/jobs/{job}?cursor=garbage", 400),
        ("/ui/jobs/{job}?limit=0", 422),
        ("/ui?state=bogus", 422),
        ("/ui/compare?jobs={job}", 422),
        ("/ui/compare?jobs={job},nope", 404),
        ("/ui/compare?jobs={job},{job2}&metric=bogus", 422),
        ("/ui/static/secrets.txt", 404),
        ("/ui/static/..%2Fpages.py", 404),
    ],
)
def test_bad_input_is_a_4xx(fleet: Fleet, path: str, status: int) -> None:
    url = fleet.server.url + path.format(job=fleet.full.id, job2=fleet.h_only.id)
    response = httpx.get(url)
    assert response.status_code == status, response.text
    if response.headers["content-type"].startswith("text/html"):
        assert "<h1>" in response.text
    else:
        assert json.loads(response.text)["status"] == status
