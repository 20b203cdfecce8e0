"""workers.execution.model_cache: the model opened by reference, once per process, exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.service.helpers import MLP_CONFIG, write_checkpoint
from workers.errors import IntakeError
from workers.execution.model_cache import (
    CACHE_SIZE,
    ModelReference,
    cached_model,
    clear_model_cache,
    models_built,
)
from workers.execution.prepare import ModelSource, load_model
from workers.intake import sha256_file

CPU = torch.device("cpu")


def _stored(directory: Path, seed: int = 0) -> ModelReference:
    weights = write_checkpoint(directory, seed=seed)
    return ModelReference(ModelSource(path=str(directory)), sha256_file(weights))


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    clear_model_cache()


def test_a_job_builds_its_model_once_per_process(tmp_path: Path) -> None:
    reference = _stored(tmp_path / "m")
    before = models_built()
    first = cached_model(reference, CPU)
    assert cached_model(reference, CPU) is first
    assert models_built() - before == 1
    _assert_same_weights(first, load_model(reference.source, 0).model)


def test_zoo_random_init_is_drawn_again_bit_identically() -> None:
    """The runner's model (workers.execution.prepare.load_model) and the task's agree bit
    for bit, so no weights need to travel."""
    source = ModelSource(zoo_config=dict(MLP_CONFIG))
    runners = load_model(source, seed=7).model
    tasks = cached_model(ModelReference(source, "", seed=7), CPU)
    _assert_same_weights(runners, tasks)
    other_seed = cached_model(ModelReference(source, "", seed=8), CPU)
    assert not torch.equal(
        other_seed.state_dict()["head.weight"], tasks.state_dict()["head.weight"]
    )


def test_a_changed_file_is_a_task_error_not_other_numbers(tmp_path: Path) -> None:
    reference = _stored(tmp_path / "m", seed=0)
    write_checkpoint(tmp_path / "m", seed=1)  # the stored file is no longer the prepared one
    with pytest.raises(IntakeError, match=r"is not the .* the job was prepared from"):
        cached_model(reference, CPU)


def test_the_cache_keeps_the_last_models_only(tmp_path: Path) -> None:
    references = [_stored(tmp_path / f"m{i}", seed=i) for i in range(CACHE_SIZE + 1)]
    before = models_built()
    for reference in references:
        cached_model(reference, CPU)
    cached_model(references[-1], CPU)  # still kept
    assert models_built() - before == CACHE_SIZE + 1
    cached_model(references[0], CPU)  # the oldest was dropped: built again
    assert models_built() - before == CACHE_SIZE + 2
