"""``/metrics`` (prometheus_client, HTTP metrics by route, no layer-table scan per scrape)
and the Swagger UI served from installed assets (no CDN)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import event

from tests.service.helpers import SPEC, metric_samples


def test_http_metrics_by_route_and_no_layer_scan(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    with server.client() as client:
        job = client.submit({"checkpoint_id": "zoo:mlp", **SPEC})
        for _ in range(3):
            client.job(job.id)
        client.http.get("/v1/jobs/nosuchjob")
        client.http.get("/no/such/path")
        engine = server.app.state.services.engine
        statements: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        try:
            response = client.http.get("/metrics")
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert response.headers["content-type"].startswith("text/plain")
    samples = metric_samples(response.text)
    route = "/v1/jobs/{job_id}"
    get = (("method", "GET"), ("route", route))
    assert samples[("curvprof_http_requests_total", (*get, ("status", "200")))] == 3
    assert samples[("curvprof_http_requests_total", (*get, ("status", "404")))] == 1
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert samples[("curvprof_http_requests_total", unmatched)] == 1
    assert samples[("curvprof_http_request_duration_seconds_count", get)] == 4
    post = (("method", "POST"), ("route", "/v1/jobs"), ("status", "201"))
    assert samples[("curvprof_http_requests_total", post)] == 1
    assert samples[("curvprof_jobs", (("state", "queued"),))] == 1
    assert statements and not [s for s in statements if "layer_results" in s]


def test_swagger_ui_is_served_offline(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    with server.client() as client:
        page = client.http.get("/v1/docs")
        assert page.status_code == 200 and "/v1/openapi.json" in page.text
        urls = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
        assert urls and all(u.startswith("/v1/docs-assets/") for u in urls), urls
        for url in urls:
            asset = client.http.get(url)
            assert asset.status_code == 200 and len(asset.content) > 100
        assert "swagger-ui-bundle.js" in page.text
        assert "SwaggerUIBundle" in client.http.get("/v1/docs-assets/swagger-ui-bundle.js").text
