"""Schemathesis against the live OpenAPI of a real uvicorn on 127.0.0.1, per store backend.

    python -m bench.fuzz --minutes 10                 # SQLite, and PostgreSQL when
                                                      # CURVPROF_TEST_PG_URL is set
    python -m bench.fuzz --seconds 30 --backend sqlite --out fuzz.json

Each backend gets a fresh store with a token configured (the fuzzer sends it, so writes are
reached) and the job runner off (submitted jobs stay queued: the API is what is fuzzed).
Schemathesis runs its examples, coverage, fuzzing and stateful phases until the time budget
is spent, in positive and negative modes, with the checks below; a run passes with no
failure of any of them: no 5xx, every status, content type, header and body as declared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
TOKEN = "fuzz-token"


@dataclass
class FuzzResult:
    """One backend's run: requests sent, failures by check, and the first few failures."""

    backend: str
    seconds: float
    operations: int = 0
    requests: int = 0  # test cases generated (one request each, stateful steps included)
    server_errors: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    exit_code: int = 0

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.failures and self.requests > 0


@contextmanager
def served(db_url: str | None, data_dir: Path) -> Iterator[str]:
    """A real uvicorn on loopback over a fresh store; yields its base URL."""
    from service.embedded import EmbeddedServer
    from service.settings import Settings

    settings = Settings(data_dir=data_dir, db_url=db_url, run_jobs=False, api_tokens=[TOKEN])
    with EmbeddedServer(settings) as server:
        yield server.url


def _count_report(report: Path, result: FuzzResult) -> None:
    """Read schemathesis' JSON run report: cases generated, failures by check, errors."""
    if not report.exists():
        result.examples.append("schemathesis wrote no report")
        return
    data = json.loads(report.read_text())
    result.operations = int(data["operations"]["tested"])
    result.requests = int(data["test_cases"]["generated"])
    for failure in data.get("failures", []):
        text = json.dumps(failure)
        names = [c for c in CHECKS if c in text] or [str(failure.get("title", "other"))]
        for name in names:
            result.failures[name] = result.failures.get(name, 0) + 1
        result.server_errors += int("not_a_server_error" in names)
        if len(result.examples) < 10:
            result.examples.append(text[:400])
    for error in data.get("errors", []):
        result.failures["error"] = result.failures.get("error", 0) + 1
        if len(result.examples) < 10:
            result.examples.append(json.dumps(error)[:400])


def fuzz(backend: str, db_url: str | None, seconds: float, seed: int = 0) -> FuzzResult:
    """One bounded schemathesis run against a fresh server on ``backend``."""
    result = FuzzResult(backend=backend, seconds=seconds)
    with tempfile.TemporaryDirectory(prefix="curvprof-fuzz-") as tmp:
        report = Path(tmp) / "report.json"
        with served(db_url, Path(tmp) / "data") as url:
            command = [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{url}/v1/openapi.json",
                "--checks",
                ",".join(CHECKS),
                "--max-time",
                str(max(1, int(seconds))),
                "--seed",
                str(seed),
                "--workers",
                "1",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--report",
                "json",
                "--report-json-path",
                str(report),
                "--exclude-path",
                "/readyz",  # its 503 is the answer while Ray is down (the runner is off)
                "--suppress-health-check",
                "all",
                "--request-timeout",
                "30",
            ]
            env = {**os.environ, "SCHEMATHESIS_TELEMETRY": "false"}
            env["PYTHONPATH"] = os.pathsep.join(
                [str(Path(__file__).resolve().parents[1])]
                + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
            )
            done = subprocess.run(  # in tmp: schemathesis keeps a .schemathesis/ cache in cwd
                command, capture_output=True, text=True, env=env, check=False, cwd=tmp
            )
            result.exit_code = done.returncode
            _count_report(report, result)
            unexplained = done.returncode not in (0, 1) or (done.returncode and not result.failures)
            if unexplained or "error" in result.failures:  # the report names only the kind
                result.examples.append(done.stdout[-2000:] + done.stderr[-2000:])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="time budget per backend")
    budget.add_argument("--seconds", type=float, help="time budget per backend")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    seconds = args.seconds or (args.minutes or 1.0) * 60
    pg_url = os.environ.get("CURVPROF_TEST_PG_URL")
    backends: list[tuple[str, str | None]] = []
    if args.backend in ("sqlite", "both"):
        backends.append(("sqlite", None))
    if args.backend in ("postgres", "both"):
        if pg_url is None:
            print("postgres: skipped (CURVPROF_TEST_PG_URL is not set)")
        else:
            backends.append(("postgres", pg_url))
    results = []
    for name, url in backends:
        started = time.monotonic()
        with _database(url) as db_url:
            result = fuzz(name, db_url, seconds, seed=args.seed)
        print(
            f"{name}: {result.requests} requests over {result.operations} operations in "
            f"{time.monotonic() - started:.0f} s; server errors {result.server_errors}; "
            f"failed checks {sum(result.failures.values())} {result.failures or ''}"
        )
        for line in result.examples:
            print("  " + line)
        results.append(result)
    if args.out:
        rows: list[dict[str, Any]] = [{**asdict(r), "passed": r.passed} for r in results]
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if results and all(r.passed for r in results) else 1


@contextmanager
def _database(pg_url: str | None) -> Iterator[str | None]:
    """None (a SQLite file under the server's data dir), or a fresh PostgreSQL database."""
    if pg_url is None:
        yield None
        return
    from bench.live import fresh_pg_database

    with fresh_pg_database(pg_url) as url:
        yield url


if __name__ == "__main__":
    raise SystemExit(main())
