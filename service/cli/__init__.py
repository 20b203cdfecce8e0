"""The ``curvprof`` command line: one module per command group, one dispatcher."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Each module exposes ``register(subparsers)``; every sub-command sets ``func(args) -> int``.
COMMAND_MODULES = (
    "service.cli.local",
    "service.cli.demo",
    "service.cli.reproduce",
    "service.cli.remote",
    "service.cli.db",
)


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="curvprof", description="Curvature profiling of neural networks."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(subparsers)
    return parser


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [CliError, FileNotFoundError, PermissionError]
    try:
        from workers.intake.errors import IntakeError

        types.append(IntakeError)
    except ImportError:
        pass
    return tuple(types)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("curvprof: interrupted", file=sys.stderr)
        return 130
    except _user_error_types() as exc:
        print(f"curvprof: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # anything else: still one line; CURVPROF_DEBUG=1 shows the trace
        if os.environ.get("CURVPROF_DEBUG"):
            raise
        print(f"curvprof: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
