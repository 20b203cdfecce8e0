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
    "service.cli.browse",
    "service.cli.db",
)


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """No abbreviated options: ``--dat`` is an error, never silently ``--data``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


# options whose value may start with '-' (``--sort -alpha``, as the README writes it)
DASHED_VALUE_OPTIONS = frozenset({"--sort"})


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("curvprof")
    except PackageNotFoundError:
        return "unknown"


def join_dashed_values(argv: Sequence[str]) -> list[str]:
    """``--sort -alpha`` -> ``--sort=-alpha`` (argparse would read ``-alpha`` as an option)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in DASHED_VALUE_OPTIONS and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="curvprof", description="Curvature profiling of neural networks.")
    parser.add_argument("--version", action="version", version=f"curvprof {version()}")
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
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


def quiet_library_tracebacks() -> None:
    """torch.export logs a full traceback as a warning before raising on an unreadable .pt2;
    the command line reports that error in one line instead."""
    import logging

    # a filter, not a level: importing torch resets the levels of its loggers
    logging.getLogger("torch.export").addFilter(lambda record: record.levelno >= logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    quiet_library_tracebacks()
    parser = build_parser()
    args = parser.parse_args(join_dashed_values(sys.argv[1:] if argv is None else argv))
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # `curvprof layers --json | head`: the reader left, stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
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
