"""The Typer application: the root options (``--version``, shell completion) and every
command module's commands, run with one-line errors and the exit codes of ``service.cli``."""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any

import typer
from typer._click import exceptions as click_exceptions
from typer.completion import Shells, completion_init, get_completion_script, install

from service.cli import EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_INTERRUPTED, error, version

PROG = "curvprof"
COMPLETE_VAR = "_CURVPROF_COMPLETE"  # Typer's protocol: the shell sets it to complete a word
SHELL_OPTION: dict[str, Any] = {"metavar": "SHELL", "is_eager": True}  # shell completion
# each module exposes its ``COMMANDS`` or a sub-command ``GROUP``; a module whose extra is
# missing is left out
COMMAND_MODULES = (
    "service.cli.local",
    "service.cli.demo",
    "service.cli.reproduce",
    "service.cli.remote",
    "service.cli.browse",
    "service.cli.db",
)


def _show_version(value: bool) -> None:
    if value:
        print(f"{PROG} {version()}")
        raise typer.Exit(0)


def _show_completion(shell: Shells | None) -> None:
    if shell is not None:
        print(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell.value))
        raise typer.Exit(0)


def _install_completion(shell: Shells | None) -> None:
    if shell is not None:
        chosen, path = install(shell=shell.value, prog_name=PROG, complete_var=COMPLETE_VAR)
        print(f"{chosen} completion installed in {path}; it takes effect in a new shell")
        raise typer.Exit(0)


def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="print the version and exit"
        ),
    ] = False,
    install_completion: Annotated[
        Shells | None,
        typer.Option(
            callback=_install_completion, help="install completion for SHELL", **SHELL_OPTION
        ),
    ] = None,
    show_completion: Annotated[
        Shells | None,
        typer.Option(callback=_show_completion, help="print the completion script", **SHELL_OPTION),
    ] = None,
) -> None:
    """Curvature profiling of neural networks."""


def build_app() -> typer.Typer:
    app = typer.Typer(
        name=PROG,
        epilog=EXIT_CODES_HELP,
        no_args_is_help=True,
        add_completion=False,  # our own options: the shell named, never guessed
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",  # a docstring's lines are one paragraph
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    completion_init()  # the shells' completion classes (Typer registers them with its options)
    app.callback()(_root)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        for command in getattr(module, "COMMANDS", ()):
            app.command()(command)
        if hasattr(module, "GROUP"):
            app.add_typer(module.GROUP)
    return app


def usage_message(exc: click_exceptions.UsageError) -> str:
    """A bad command line in one line, with the command whose help tells more."""
    if isinstance(exc, click_exceptions.NoSuchOption):
        text = f"unrecognized arguments: {exc.option_name}"
        if exc.possibilities:
            text += f" (did you mean {' or '.join(sorted(exc.possibilities))}?)"
    else:
        text = " ".join(exc.format_message().split())
    where = exc.ctx.command_path if exc.ctx is not None else PROG
    return f"{text}; see '{where} --help'"


def run(argv: list[str]) -> int:
    """The command's exit status; a bad command line is one line on stderr and status 2."""
    command = typer.main.get_command(build_app())
    try:
        result = command.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:  # Rich has printed the help already
        if exc.format_message().strip():
            print(exc.format_message())
        return EXIT_BAD_INPUT
    except click_exceptions.UsageError as exc:
        error(usage_message(exc))
        return EXIT_BAD_INPUT
    except click_exceptions.ClickException as exc:
        error(" ".join(exc.format_message().split()))
        return EXIT_BAD_INPUT
    except typer.Abort:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(result or 0)
