"""One real server for the whole package, holding real profiled jobs (tiny MLPs through the
job runner and Ray), and a headless Debian Chromium driven by Playwright; the tests share both."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.client import CurvprofClient
from service.embedded import EmbeddedServer
from service.settings import Settings
from tests.service.helpers import MLP_CONFIG, SPEC, write_checkpoint

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "dashboard-test-token"


@dataclass
class Fleet:
    """The server and the jobs it holds."""

    server: EmbeddedServer
    client: CurvprofClient
    full: Any  # succeeded, weight-space route (compressed matrix, K-FAC alignment)
    h_only: Any  # succeeded, another checkpoint, output route
    failed: Any  # failed before any layer ran


def browser_path() -> str:
    found = shutil.which("chromium") or (str(CHROMIUM) if CHROMIUM.exists() else None)
    if found is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return found


@pytest.fixture(scope="session")
def fleet(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("dashboard")
    server = EmbeddedServer(Settings(data_dir=tmp / "data"))
    client = server.client()
    try:
        first = client.upload_checkpoint(write_checkpoint(tmp / "a", seed=0), MLP_CONFIG)
        second = client.upload_checkpoint(write_checkpoint(tmp / "b", seed=1), MLP_CONFIG)
        jobs = [
            client.submit({"checkpoint_id": first.id, **SPEC, "name": "run-a", "tags": ["sweep"]}),
            client.submit({"checkpoint_id": second.id, **SPEC, "hvp_diagnostics": False}),
            # digits has 64 features, this model wants 65: the job fails when it loads the data
            client.submit(
                {
                    "checkpoint_id": "zoo:mlp",
                    **SPEC,
                    "zoo_config": {**MLP_CONFIG, "in_features": 65},
                }
            ),
        ]
        full, h_only, failed = (client.wait(j.id, timeout=240, poll=0.2) for j in jobs)
        assert full.state == h_only.state == "succeeded", (full.error, h_only.error)
        assert failed.state == "failed" and failed.error
        yield Fleet(server, client, full, h_only, failed)
    finally:
        client.close()
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = browser_path()
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@dataclass
class Tab:
    """A browser page that records console errors and failed requests."""

    page: Any
    base: str
    errors: list[str]

    def open(self, path: str, *, charts: bool = True) -> Any:
        response = self.page.goto(self.base + path)
        if charts:
            self.page.wait_for_function("document.body.dataset.chartsReady !== undefined")
        return response


@pytest.fixture(scope="session")
def context(browser: Any) -> Iterator[Any]:
    """One browser context, so Plotly's script is fetched once (it is cacheable)."""
    shared = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield shared
    shared.close()


@pytest.fixture
def tab(context: Any, fleet: Fleet) -> Iterator[Tab]:
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield Tab(page, fleet.server.url, errors)
    page.close()
