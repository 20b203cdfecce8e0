"""The ``curvprof`` command line (Typer + Rich; the ``[cli]`` extra): one module per command
group (``service.cli.app`` lists them), one entry point, the exit codes of ``EXIT_CODES_HELP``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from workers.errors import IntakeError

EXIT_OK, EXIT_JOB_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141
EXIT_CODES_HELP = (
    "Exit codes: 0 done (a job that succeeded or is still running); 1 a job that failed or "
    "was cancelled; 2 bad input, a refused request or a bad command line; 3 an unexpected "
    "error (CURVPROF_DEBUG=1 shows the traceback); 130 interrupted; 141 the reader left."
)
CLI_EXTRA_MISSING = "the command line needs its extra: pip install 'curvprof[cli]'"


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("curvprof")
    except PackageNotFoundError:
        return "unknown"


def _user_error_types() -> tuple[type[BaseException], ...]:
    return (CliError, FileNotFoundError, PermissionError, IntakeError)


def quiet_library_tracebacks() -> None:
    """torch.export logs a full traceback as a warning before raising on an unreadable .pt2;
    the command line reports that error in one line instead."""
    import logging

    # a filter, not a level: importing torch resets the levels of its loggers
    logging.getLogger("torch.export").addFilter(lambda record: record.levelno >= logging.ERROR)


def error(message: str) -> None:
    print(f"curvprof: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (see the module docstring)."""
    try:
        from service.cli.app import run
    except ModuleNotFoundError as exc:
        if exc.name not in ("typer", "rich"):
            raise
        error(CLI_EXTRA_MISSING)
        return EXIT_BAD_INPUT
    quiet_library_tracebacks()
    try:
        status = run(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # `curvprof layers --json | head`: the reader left, stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("curvprof: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _user_error_types() as exc:
        error(one_line(exc))
        return EXIT_BAD_INPUT
    except Exception as exc:  # anything else: still one line; CURVPROF_DEBUG=1 shows the trace
        if os.environ.get("CURVPROF_DEBUG"):
            raise
        error(f"{type(exc).__name__}: {one_line(exc)}")
        return EXIT_INTERNAL


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
