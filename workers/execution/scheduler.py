"""Driver side of a job: submit one Ray task per layer group, report layers as they finish."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import ray
from ray.exceptions import RayError, TaskCancelledError

from api_schemas import LayerProfile, ProfileSettings
from workers.execution.attempts import AttemptWatch, driver_ledger
from workers.execution.data_cache import BatchSource
from workers.execution.model_cache import ModelReference
from workers.execution.tasks import profile_group_remote


@dataclass
class LayerOutcome:
    """One finished layer: a profile, or the error that stopped it."""

    name: str
    profile: LayerProfile | None
    error: str | None
    wall_seconds: float | None = None
    node_id: str | None = None
    hostname: str | None = None
    device: str | None = None


def group_layers(names: Sequence[str], per_task: int) -> list[list[str]]:
    per_task = max(1, per_task)
    return [list(names[i : i + per_task]) for i in range(0, len(names), per_task)]


def _task_options(num_gpus: float, max_retries: int) -> dict[str, Any]:
    options: dict[str, Any] = {"max_retries": max_retries, "retry_exceptions": False}
    if num_gpus > 0:
        options["num_gpus"] = num_gpus
        options["num_cpus"] = 0
    else:
        options["num_cpus"] = 1
    return options


def _error_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    base = cause if isinstance(cause, BaseException) else exc
    text = str(base).strip()
    return f"{type(base).__name__}: {text.splitlines()[0]}" if text else type(base).__name__


def run_layer_groups(
    model: ModelReference | ray.ObjectRef,
    data: BatchSource | ray.ObjectRef,
    groups: Sequence[Sequence[str]],
    settings: ProfileSettings,
    *,
    on_layer: Callable[[LayerOutcome], None],
    on_submit: Callable[[list[str]], None] | None = None,
    on_retry: Callable[[list[str]], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    num_gpus: float = 0.0,
    max_retries: int = 3,
    poll_seconds: float = 0.2,
) -> Literal["done", "stopped"]:
    """Run every group; ``on_layer`` is called in this thread for each layer as it arrives.

    The model and the data travel by reference (each task opens the stored artifacts, once per
    worker process: ``model_cache``, ``data_cache``); the references go into the object store
    once and every task gets them.
    When ``should_stop()`` turns true the pending tasks are cancelled with ``ray.cancel``.
    Ray retries a task whose worker died (``max_retries``); ``on_retry`` is called with the
    group's names at each retry, as it starts (workers.execution.attempts).
    """
    model_ref = model if isinstance(model, ray.ObjectRef) else ray.put(model)
    data_ref = data if isinstance(data, ray.ObjectRef) else ray.put(data)
    settings_json = settings.model_dump_json()
    remote = profile_group_remote.options(**_task_options(num_gpus, max_retries))
    watch = AttemptWatch(driver_ledger() if on_retry is not None else None, on_retry)
    try:
        return _run(
            remote,
            model_ref,
            data_ref,
            groups,
            settings_json,
            watch,
            on_layer,
            on_submit,
            should_stop,
            poll_seconds,
        )
    finally:
        watch.close()


def _run(
    remote: Any,
    model_ref: ray.ObjectRef,
    data_ref: ray.ObjectRef,
    groups: Sequence[Sequence[str]],
    settings_json: str,
    watch: AttemptWatch,
    on_layer: Callable[[LayerOutcome], None],
    on_submit: Callable[[list[str]], None] | None,
    should_stop: Callable[[], bool],
    poll_seconds: float,
) -> Literal["done", "stopped"]:
    pending: dict[ray.ObjectRef, list[str]] = {}
    for index, group in enumerate(groups):
        names = list(group)
        key = watch.key(index, names)
        ref = remote.remote(watch.ledger, key, model_ref, data_ref, names, settings_json)
        pending[ref] = names
        if on_submit is not None:
            on_submit(names)
    while pending:
        watch.poll()
        if should_stop():
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            return "stopped"
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_seconds)
        for ref in ready:
            names = pending.pop(ref)
            try:
                entries = ray.get(ref)
            except TaskCancelledError:
                for name in names:
                    on_layer(LayerOutcome(name, None, "cancelled"))
                continue
            except RayError as exc:
                for name in names:
                    on_layer(LayerOutcome(name, None, _error_text(exc)))
                continue
            for entry in entries:
                profile, error = None, entry.get("error")
                if entry.get("profile") is not None:
                    try:
                        profile = LayerProfile.model_validate(entry["profile"])
                    except ValueError as exc:
                        error = f"invalid LayerProfile from the engine: {_error_text(exc)}"
                on_layer(
                    LayerOutcome(
                        name=entry["name"],
                        profile=profile,
                        error=error,
                        wall_seconds=entry.get("wall_seconds"),
                        node_id=entry.get("node_id"),
                        hostname=entry.get("hostname"),
                        device=entry.get("device"),
                    )
                )
    return "done"
