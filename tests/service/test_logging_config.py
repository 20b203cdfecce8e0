"""The serve log configuration: job lines and uvicorn's lines, as text or JSON lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import logging, logging.config, sys
from service.logging_config import log_config
logging.config.dictConfig(log_config(sys.argv[1], "info"))
logging.getLogger("curvprof.jobs").info("job %s: %s", "abc", "claimed (run 1)")
logging.getLogger("curvprof.jobs").debug("not shown at info")
logging.getLogger("uvicorn.access").info(
    '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/healthz", "1.1", 200
)
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("curvprof.app").exception("unhandled error on GET /x")
"""


def run(fmt: str) -> tuple[list[str], list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, fmt],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines(), result.stderr.splitlines()


def test_json_lines_carry_job_and_access_lines() -> None:
    out, err = run("json")
    records = [json.loads(line) for line in err]
    assert [(r["logger"], r["level"]) for r in records] == [
        ("curvprof.jobs", "INFO"),
        ("curvprof.app", "ERROR"),
    ]
    assert records[0]["message"] == "job abc: claimed (run 1)"
    assert "ZeroDivisionError" in records[1]["exception"]
    (access,) = [json.loads(line) for line in out]
    assert (
        access["logger"] == "uvicorn.access" and '"GET /healthz HTTP/1.1" 200' in access["message"]
    )


def test_text_lines() -> None:
    out, err = run("text")
    assert "INFO    curvprof.jobs: job abc: claimed (run 1)" in err[0]
    assert not any(line.startswith("{") for line in out + err)
    assert '"GET /healthz HTTP/1.1" 200' in out[0]


def test_the_level_applies_to_every_uvicorn_logger() -> None:
    script = (
        "import logging, logging.config\n"
        "from service.logging_config import log_config\n"
        "logging.config.dictConfig(log_config('text', 'warning'))\n"
        "logging.getLogger('uvicorn.access').info('%s - \"%s %s HTTP/%s\" %d', "
        "'127.0.0.1:5000', 'GET', '/healthz', '1.1', 200)\n"
        "for name in ('uvicorn', 'uvicorn.error', 'curvprof.app'):\n"
        "    logging.getLogger(name).info('%s info', name)\n"
        "    logging.getLogger(name).warning('%s warning', name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    logged = result.stdout + result.stderr
    assert "info" not in logged and "/healthz" not in logged
    for name in ("uvicorn", "uvicorn.error", "curvprof.app"):
        assert f"{name} warning" in logged
