"""Schemathesis against the live OpenAPI (bench.fuzz, bounded): a real uvicorn on 127.0.0.1
over SQLite and PostgreSQL; 0 server errors and 0 responses unlike their declaration."""

from __future__ import annotations

import pytest

from bench.fuzz import CHECKS, fuzz

SECONDS = 12  # per backend; the standing campaign is `python -m bench.fuzz --minutes 10`


@pytest.mark.timeout(180)
def test_schemathesis_finds_no_server_error_nor_schema_violation(db_url: str) -> None:
    result = fuzz("store", db_url, SECONDS)
    assert result.operations >= 20 and result.requests >= 100, result
    assert result.server_errors == 0 and not result.failures, "\n".join(result.examples)
    assert result.exit_code == 0, "\n".join(result.examples)
    assert set(CHECKS) >= {"not_a_server_error", "response_schema_conformance"}
