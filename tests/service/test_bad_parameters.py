"""Bad parameters, tried as a client would, on SQLite and PostgreSQL: each one a 4xx problem
document (RFC 9457), never a 500; racing idempotent writes; a saturated pool is a 503."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from service.store.paging import INT64_MAX
from tests.service.helpers import SPEC

LISTINGS = ("/v1/jobs", "/v1/checkpoints", "/v1/datasets", "/v1/layers", "/v1/layers?sort=-alpha")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(payload: Any) -> str:
    return _b64(json.dumps(payload).encode())


BAD_CURSORS = [
    "!!!",
    "a",
    "é",
    _b64(b"\xff\xfe"),
    _b64(b"[]"),
    _b64(b"null"),
    _cursor({}),
    _cursor({"l": "layers", "k": "alpha", "d": False, "v": "x", "i": 1}),
    _cursor({"l": "layers", "k": "alpha", "d": False, "v": 0.5, "i": 2**70}),
    _cursor({"l": "layers", "k": "alpha", "d": False, "v": [1], "i": 1}),
    _cursor({"l": "layers", "k": "id", "d": False, "v": 1, "i": True}),
    _cursor({"l": "jobs", "k": "created_at", "d": True, "v": "yesterday", "i": "x"}),
    _cursor({"l": "jobs", "k": "created_at", "d": True, "v": "2026-01-01T00:00:00", "i": 7}),
    _cursor({"l": "jobs", "k": "created_at", "d": True, "v": "2026-01-01", "i": "a\x00"}),
    _cursor({"l": "checkpoints", "k": "created_at", "d": True, "v": None}),
    _b64(b'{"l":"layers","k":"alpha","d":false,"v":NaN,"i":1}'),
    _b64(b"[" * 5000 + b"]" * 5000),
    "A" * 5000,
]


def _is_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.request.url, response.text[:300])
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["type"] == "about:blank"
    assert body["instance"] == response.request.url.path
    return body


@pytest.fixture
def server(make_server, db_url: str):  # type: ignore[no-untyped-def]
    return make_server(db_url=db_url)


def test_malformed_and_foreign_cursors_are_400_on_every_listing(server) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for _ in range(2):
            assert http.post("/v1/jobs", json={"checkpoint_id": "zoo:mlp", **SPEC}).is_success
        jobs_cursor = http.get("/v1/jobs", params={"limit": 1}).json()["next_cursor"]
        assert http.get("/v1/jobs", params={"cursor": jobs_cursor}).status_code == 200
        for listing in LISTINGS:
            for cursor in BAD_CURSORS:
                body = _is_problem(http.get(listing, params={"cursor": cursor}), 400)
                assert "cursor" in body["detail"]
        for listing in LISTINGS[1:]:  # a good cursor of another listing
            _is_problem(http.get(listing, params={"cursor": jobs_cursor}), 400)


def test_ids_beyond_int64_and_nul_bytes_are_4xx(server) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        _is_problem(http.get(f"/v1/layers/{INT64_MAX}"), 404)
        for path in (f"/v1/layers/{INT64_MAX + 1}", f"/v1/layers/{-(2**64)}/plot", "/v1/layers/x"):
            _is_problem(http.get(path), 422)
        for path, params in (
            ("/v1/jobs", {"state": "queued\x00"}),
            ("/v1/jobs", {"checkpoint_id": "\x00"}),
            ("/v1/layers", {"arch": "mlp\x00", "view": "brief"}),
            ("/v1/layers.csv", {"kind": "\x00"}),
            ("/v1/summary", {"jobs": "a\x00b"}),
            ("/v1/jobs/a%00b", {}),
            ("/v1/checkpoints/%00", {}),
            ("/v1/datasets/x%00", {}),
        ):
            _is_problem(http.get(path, params=params), 422)
        for body in (
            {"checkpoint_id": "zoo:mlp\x00", **SPEC},
            {"checkpoint_id": "zoo:mlp", **{**SPEC, "layers": "fc\x00*"}},
            {"checkpoint_id": "zoo:mlp", **{k: v for k, v in SPEC.items() if k != "dataset"}}
            | {"dataset_id": "\x00"},
        ):
            problem = _is_problem(http.post("/v1/jobs", json=body), 422)
            assert "NUL" in problem["detail"] and problem["errors"]
        batch = {"checkpoint_ids": ["zoo:mlp", "\x00"], **SPEC}
        _is_problem(http.post("/v1/batches", json=batch), 422)
        assert http.get("/v1/jobs").json()["items"] == []


def test_a_csv_export_the_database_refuses_is_a_problem_not_a_cut_stream(server) -> None:  # type: ignore[no-untyped-def]
    """Found by schemathesis on PostgreSQL: a filter value the database cannot hold (a
    step beyond its integer column, subnormal floats) used to fail after the CSV's 200
    had started, which the client saw as a broken chunked response."""
    query = (
        "alpha_min=2.2250738585e-313&s_max=-1.1125369292536007e-308"
        "&step=1717128574&step_min=10253130496156300"
    )
    with httpx.Client(base_url=server.url, timeout=30) as http:
        response = http.get(f"/v1/layers.csv?{query}")  # read whole: a cut stream raises
        if response.status_code == 200:  # SQLite holds these values: an empty table
            assert response.text.splitlines()[0].startswith("id,job_id,")
        else:
            _is_problem(response, 422)


def test_validation_errors_are_problem_documents_and_times_carry_utc(server) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        problem = _is_problem(http.post("/v1/jobs", json={"top_k": "many"}), 422)
        locs = {tuple(item["loc"]) for item in problem["errors"]}
        assert ("body", "checkpoint_id") in locs and ("body", "top_k") in locs
        _is_problem(http.get("/v1/jobs", params={"limit": 0}), 422)
        _is_problem(http.get("/v1/no-such-route"), 404)
        before = datetime.now(UTC)
        job = http.post("/v1/jobs", json={"checkpoint_id": "zoo:mlp", **SPEC}).json()
        created = datetime.fromisoformat(job["timings"]["created_at"])
        assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
        assert abs((created - before).total_seconds()) < 60
        listed = http.get("/v1/jobs").json()["items"][0]["timings"]["created_at"]
        assert datetime.fromisoformat(listed) == created


def test_idempotency_key_under_concurrent_posts(server) -> None:  # type: ignore[no-untyped-def]
    """10 simultaneous POSTs with one key: with 10 bodies, one 201 and nine 409; with one
    body, one 201 and nine 200 carrying that same job."""

    def race(key: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
        start = threading.Barrier(len(bodies))
        out: list[httpx.Response | None] = [None] * len(bodies)

        def post(i: int) -> None:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                start.wait()
                out[i] = http.post("/v1/jobs", json=bodies[i], headers={"Idempotency-Key": key})

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [r for r in out if r is not None]

    spec = {"checkpoint_id": "zoo:mlp", **SPEC}
    different = race("k-diff", [{**spec, "seed": i} for i in range(10)])
    codes = sorted(r.status_code for r in different)
    assert codes == [201] + [409] * 9, codes
    winner = next(r.json() for r in different if r.status_code == 201)
    for r in different:
        if r.status_code == 409:
            assert "different request body" in _is_problem(r, 409)["detail"]
    same = race("k-same", [spec] * 10)
    assert sorted(r.status_code for r in same) == [200] * 9 + [201]
    assert len({r.json()["id"] for r in same}) == 1
    with httpx.Client(base_url=server.url, timeout=30) as http:
        ids = {j["id"] for j in http.get("/v1/jobs").json()["items"]}
        assert ids == {winner["id"], same[0].json()["id"]}
        again = http.post(
            "/v1/jobs", json={**spec, "seed": 9}, headers={"Idempotency-Key": "k-diff"}
        )
        assert again.status_code == (200 if winner["spec"]["seed"] == 9 else 409)


def test_non_ascii_bearer_tokens_are_401(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(api_tokens=["s3cret", "tökén"])
    spec = {"checkpoint_id": "zoo:mlp", **SPEC}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for raw in (b"Bearer s3cr\xe9t", b"Bearer \xc3\xa9", b"Bearer s3cret\xff", b"Bearer \x80"):
            response = http.post("/v1/jobs", json=spec, headers={"Authorization": raw})
            assert _is_problem(response, 401)["detail"] == "missing or invalid bearer token"
            assert response.headers["www-authenticate"] == "Bearer"
        good = "Bearer tökén".encode()
        assert http.post("/v1/jobs", json=spec, headers={"Authorization": good}).status_code == 201
        latin1 = "Bearer tökén".encode("latin-1")  # the same characters, other bytes
        _is_problem(http.post("/v1/jobs", json=spec, headers={"Authorization": latin1}), 401)


def test_openapi_declares_problems_and_the_bearer_scheme(make_server) -> None:  # type: ignore[no-untyped-def]
    schema = httpx.get(make_server().url + "/v1/openapi.json", timeout=30).json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["HTTPBearer"]["description"],
    }
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path, item in schema["paths"].items():
        for method, op in item.items():
            declared = op["responses"]
            if path.startswith("/v1/"):
                assert op["security"] == [{"HTTPBearer": []}], (method, path)
                expected = {"401", "422", "503"}
                expected |= (
                    {"400"}
                    if any(p["name"] == "cursor" for p in op.get("parameters", []))
                    else set()
                )
                expected |= {"404"} if "{" in path else set()
                expected |= (
                    {"409"} if method == "post" and path in ("/v1/jobs", "/v1/batches") else set()
                )
                expected |= (
                    {"413", "415"}
                    if path in ("/v1/checkpoints", "/v1/datasets") and method == "post"
                    else set()
                )
                assert expected <= set(declared), (method, path, sorted(declared))
            for status, response in declared.items():
                if status[0] in "45" and path != "/readyz":
                    assert response["content"] == {
                        "application/problem+json": {"schema": problem_ref}
                    }, (method, path, status)


def test_saturated_pool_is_503_with_retry_after(make_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = make_server(api_threads=2, db_pool_timeout=0.2)
    engine = server.app.state.services.engine
    held = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]
    try:
        response = httpx.get(server.url + "/v1/jobs", timeout=30)
        assert _is_problem(response, 503)["detail"].startswith("the server is saturated")
        assert response.headers["retry-after"] == "1"
    finally:
        for conn in held:
            conn.close()
    assert httpx.get(server.url + "/v1/jobs", timeout=30).status_code == 200
