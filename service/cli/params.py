"""Options shared by several commands, each declared once as a field of an option group.

A group is a dataclass whose fields are Typer options (``Annotated[type, typer.Option(...)]``
with a default). ``@options(name=Group)`` adds the group's fields to a command's parameters
and hands the command one ``Group`` instance as ``name``, so ``submit``, ``batch`` and
``profile`` share the measurement options without repeating them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar, get_args, get_type_hints

import typer

from api_schemas import ProfileSettings
from api_schemas.enums import ARCHITECTURES
from api_schemas.jobs import BuiltinDataset
from api_schemas.profile import DTypeName, NamedLoss, VariantName
from service.cli import CliError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_URL = "http://127.0.0.1:8000"
JSON_HELP = "JSON on stdout, one document per line"
JsonFlag = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
JobArgument = Annotated[str, typer.Argument(help="job id or a unique prefix of it")]
# `status` follows by default, `logs` prints once; both take either flag
FollowFlag = Annotated[
    bool,
    typer.Option(
        "--follow/--no-follow", "-f", help="until the job finishes; the exit status follows it"
    ),
]


def options(**groups: type) -> Callable[[F], F]:
    """Add each group's fields to the command's options; the command receives the group
    instances under the given keyword names."""

    def decorate(func: F) -> F:
        own = [
            p
            for p in inspect.signature(func, eval_str=True).parameters.values()
            if p.name not in groups
        ]
        added: list[inspect.Parameter] = []
        for group in groups.values():
            hints = get_type_hints(group, include_extras=True)
            for field in dataclasses.fields(group):
                added.append(
                    inspect.Parameter(
                        field.name,
                        inspect.Parameter.KEYWORD_ONLY,
                        annotation=hints[field.name],
                        default=field.default,
                    )
                )

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            for keyword, group in groups.items():
                names = [field.name for field in dataclasses.fields(group)]
                kwargs[keyword] = group(**{name: kwargs.pop(name) for name in names})
            return func(**kwargs)

        parameters = own + added
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command  # type: ignore[return-value]

    return decorate


def choice_of(names: Callable[[], Iterable[str]], what: str, where: str) -> dict[str, Any]:
    """``typer.Option``/``Argument`` keywords for a string that must be one of ``names()``,
    for choices declared as data (``workers.zoo.ARCHS``): read when a value is checked or
    completed, so that the command line starts without importing torch."""

    def check(value: str | None) -> str | None:
        allowed = tuple(names())
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"unknown {what} {value!r}; one of: {', '.join(allowed)}")
        return value

    return {
        "callback": check,
        "autocompletion": lambda incomplete: [n for n in names() if n.startswith(incomplete)],
        "help": f"{what}: one of {where} (completed; a wrong name lists them)",
    }


def zoo_archs() -> list[str]:
    return list(ARCHITECTURES)


def digits_archs() -> list[str]:
    """The zoo architectures that train on the built-in digits."""
    # imported on use: `curvprof --help` stays free of torch and Ray
    from workers.train import DATA_FOR

    return [arch for arch, data in DATA_FOR.items() if "digits" in data]


@dataclasses.dataclass
class ClientOptions:
    """How a client command reaches the service, and what it prints."""

    url: Annotated[str, typer.Option(envvar="CURVPROF_URL", help="the service")] = DEFAULT_URL
    token: Annotated[str | None, typer.Option(envvar="CURVPROF_TOKEN", help="API token")] = None
    json: JsonFlag = False


SETTINGS = ProfileSettings.model_fields
DEFAULT_VARIANTS = ",".join(ProfileSettings.model_validate({}).variants)
VARIANTS: tuple[str, ...] = get_args(VariantName)
# --quick: a first look on a CPU in about a minute (small K, few Lanczos steps, small batch)
QUICK = {"top_k": 8, "lanczos_steps": 5, "batch_size": 256}
QUICK_HELP = (
    f"a fast first look on a CPU: --top-k {QUICK['top_k']} --lanczos-steps "
    f"{QUICK['lanczos_steps']} --batch-size {QUICK['batch_size']} (explicit values win)"
)


def _preset(name: str) -> str:
    return f"default {SETTINGS[name].default}, {QUICK[name]} with --quick"


@dataclasses.dataclass
class MeasureOptions:
    """The measurement settings of ``profile``, ``submit`` and ``batch``
    (``api_schemas.ProfileSettings``; its defaults)."""

    data: Annotated[
        str | None,
        typer.Option(
            help=f"data file (.npz/.safetensors/.txt), dataset id or built-in: "
            f"{', '.join(get_args(BuiltinDataset))}"
        ),
    ] = None
    loss: Annotated[
        NamedLoss | None,
        typer.Option(
            help="default: the loss that fits the model's head; model: a Hugging Face "
            "model's own outputs.loss from the labels"
        ),
    ] = None
    tokenizer: Annotated[
        str | None, typer.Option(help="tokenizer.json for a .txt --data (default: the model's)")
    ] = None
    seq_len: Annotated[int, typer.Option(help="tokens per .txt window")] = 128
    batch_size: Annotated[int | None, typer.Option(help=_preset("batch_size"))] = None
    micro_batch_size: Annotated[
        int | None, typer.Option(help="split the batch (exact accumulation)")
    ] = None
    top_k: Annotated[int | None, typer.Option(help=_preset("top_k"))] = None
    lanczos_steps: Annotated[
        int | None,
        typer.Option("--lanczos-steps", "--lanczos", help=f"0: none; {_preset('lanczos_steps')}"),
    ] = None
    dtype: Annotated[DTypeName, typer.Option()] = SETTINGS["dtype"].default
    layers: Annotated[str | None, typer.Option(help="fnmatch glob(s) on layer names or kinds")] = (
        None
    )
    seed: Annotated[int, typer.Option()] = SETTINGS["seed"].default
    variants: Annotated[str, typer.Option(help=f"comma-separated, of {','.join(VARIANTS)}")] = (
        DEFAULT_VARIANTS
    )
    h_only: Annotated[
        bool, typer.Option(help="h_k without the K x K compressed matrix and residuals (faster)")
    ] = False
    quick: Annotated[bool, typer.Option(help=QUICK_HELP)] = False

    def settings(self) -> dict[str, Any]:
        """The ``ProfileSettings`` fields these options give (the preset filled in)."""
        sized = {
            name: given
            if given is not None
            else QUICK[name]
            if self.quick
            else SETTINGS[name].default
            for name, given in (
                ("batch_size", self.batch_size),
                ("top_k", self.top_k),
                ("lanczos_steps", self.lanczos_steps),
            )
        }
        return {
            **sized,
            "micro_batch_size": self.micro_batch_size,
            "dtype": self.dtype,
            "seed": self.seed,
            "layers": self.layers,
            "variants": self.variant_list(),
            "hvp_diagnostics": not self.h_only,
        }

    def variant_list(self) -> list[str]:
        chosen = [v.strip() for v in self.variants.split(",") if v.strip()]
        unknown = [v for v in chosen if v not in VARIANTS]
        if unknown:
            raise CliError(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
        return chosen


@dataclasses.dataclass
class JobLabels:
    """What a submitted job carries besides its measurement settings."""

    zoo_config: Annotated[
        str | None, typer.Option(help="JSON file: architecture config for zoo:<arch>")
    ] = None
    name: Annotated[str | None, typer.Option(help="a label for the job(s), e.g. the run")] = None
    tag: Annotated[list[str] | None, typer.Option(help="a tag (repeat for several)")] = None


@dataclasses.dataclass
class LabelFilters:
    """Filters on the jobs' labels (with the command's own name option)."""

    tag: Annotated[list[str] | None, typer.Option(help="carrying this tag (repeatable)")] = None
    step: Annotated[int | None, typer.Option(help="at this training step")] = None
    step_min: Annotated[int | None, typer.Option()] = None
    step_max: Annotated[int | None, typer.Option()] = None

    def query(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return {key: value for key, value in values.items() if value not in (None, [])}


def service_settings(**given: str | None) -> Any:
    """``service.settings.Settings`` with the options given (``CURVPROF_*`` for the rest)."""
    from service.settings import Settings

    overrides: dict[str, Any] = {key: value for key, value in given.items() if value}
    return Settings(**overrides)
