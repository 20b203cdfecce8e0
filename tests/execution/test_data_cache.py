"""workers.execution.data_cache: the measurement batch read by reference, once per process,
exactly the batch the runner drew; a changed file is refused; the Ray task gets the reference
(small) and profiles the same numbers as the batch sent by value."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from api_schemas import ProfileSettings
from workers.errors import IntakeError
from workers.execution import run_layer_groups
from workers.execution.data_cache import (
    CACHE_SIZE,
    DataPayload,
    DataReference,
    cached_dataset,
    clear_data_cache,
    datasets_read,
)
from workers.execution.model_cache import ModelReference, clear_model_cache
from workers.execution.prepare import DataSource, ModelSource, prepare
from workers.execution.scheduler import LayerOutcome
from workers.execution.tasks import profile_group

CONFIG = {"arch": "mlp", "in_features": 6, "widths": [5], "classes": 4}
SETTINGS = ProfileSettings(
    batch_size=24, top_k=3, lanczos_steps=0, variants=["ggn"], min_fit_points=3
)
MODEL = ModelSource(zoo_config=dict(CONFIG))


@pytest.fixture(autouse=True)
def _empty_caches() -> None:
    clear_data_cache()
    clear_model_cache()


def _write_data(path: Path, seed: int = 0, n: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((n, 6)).astype(np.float32)
    np.savez(path, inputs=inputs, targets=rng.integers(0, 4, n))
    return path


def _prepared(data: DataSource, model: ModelSource = MODEL) -> tuple[DataReference, DataPayload]:
    """What the runner builds from ``prepare``: the reference, and the same batch by value."""
    prepared = prepare(SETTINGS, model, data)
    batch = prepared.batch
    indices = tuple(prepared.provenance.data_indices)
    reference = DataReference(data, batch.sha256 or "", indices, model)
    by_value = DataPayload.from_tensors(batch.inputs, batch.targets, batch.attention_mask)
    return reference, by_value


def _assert_same_batch(a: DataReference | DataPayload, b: DataReference | DataPayload) -> None:
    for x, y in zip(a.tensors(), b.tensors(), strict=True):
        assert (x is None and y is None) or (
            x is not None and y is not None and x.dtype == y.dtype and torch.equal(x, y)
        )


def test_a_reference_gives_the_runners_batch_bit_for_bit(tmp_path: Path) -> None:
    reference, by_value = _prepared(DataSource(str(_write_data(tmp_path / "d.npz"))))
    assert len(reference.indices) == SETTINGS.batch_size
    _assert_same_batch(reference, by_value)


def test_a_builtin_set_is_a_reference_by_name() -> None:
    digits_model = ModelSource(zoo_config={**CONFIG, "in_features": 64, "classes": 10})
    reference, by_value = _prepared(DataSource("digits"), digits_model)
    assert reference.source.source == "digits" and len(reference.sha256) == 64
    _assert_same_batch(reference, by_value)


def test_the_dataset_is_read_once_per_process_and_tensors_are_the_callers(
    tmp_path: Path,
) -> None:
    reference, _ = _prepared(DataSource(str(_write_data(tmp_path / "d.npz"))))
    before = datasets_read()
    first = reference.tensors()
    first[0].zero_()  # the caller owns its tensors: the cached dataset is untouched
    second = reference.tensors()
    assert datasets_read() - before == 1
    assert cached_dataset(reference) is cached_dataset(reference)
    assert bool(second[0].abs().sum() > 0)


def test_the_cache_keeps_the_last_datasets_only(tmp_path: Path) -> None:
    references = [
        _prepared(DataSource(str(_write_data(tmp_path / f"d{i}.npz", seed=i))))[0]
        for i in range(CACHE_SIZE + 1)
    ]
    before = datasets_read()
    for reference in references:
        reference.tensors()
    references[-1].tensors()  # still kept
    assert datasets_read() - before == CACHE_SIZE + 1
    references[0].tensors()  # the oldest was dropped: read again
    assert datasets_read() - before == CACHE_SIZE + 2


def test_a_changed_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = _write_data(tmp_path / "d.npz")
    reference, _ = _prepared(DataSource(str(path)))
    _write_data(path, seed=1)  # the stored file is no longer the one the job was prepared from
    with pytest.raises(IntakeError, match=r"d\.npz: sha256 [0-9a-f]{64} is not the .* prepared"):
        reference.tensors()


def test_data_payload_round_trips_and_owns_its_arrays() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 4, (16,), generator=gen)
    mask = torch.ones(16, dtype=torch.bool)
    payload = DataPayload.from_tensors(x, y, mask)
    inputs, targets, got_mask = payload.tensors()
    assert torch.equal(inputs, x) and torch.equal(targets, y)
    assert got_mask is not None and torch.equal(got_mask, mask)
    inputs.zero_()  # the task's tensors are copies: the payload is untouched
    np.testing.assert_array_equal(payload.inputs, x.numpy())
    assert DataPayload.from_tensors(x, y).tensors()[2] is None


def _comparable(entry: dict[str, object]) -> str:
    profile = entry["profile"]
    assert isinstance(profile, dict), entry
    return json.dumps({k: v for k, v in profile.items() if k != "wall_seconds"})


def test_profile_group_by_reference_equals_by_value(tmp_path: Path) -> None:
    reference, by_value = _prepared(DataSource(str(_write_data(tmp_path / "d.npz"))))
    model = ModelReference(MODEL, "", seed=SETTINGS.seed)
    layers, settings_json = ["layers.0", "head"], SETTINGS.model_dump_json()
    mine = profile_group(model, reference, layers, settings_json)
    theirs = profile_group(model, by_value, layers, settings_json)
    assert [_comparable(e) for e in mine] == [_comparable(e) for e in theirs]


def _run_on_ray(reference: DataReference) -> list[LayerOutcome]:
    outcomes: list[LayerOutcome] = []
    model = ModelReference(MODEL, "", seed=SETTINGS.seed)
    run_layer_groups(model, reference, [["head"]], SETTINGS, on_layer=outcomes.append)
    return outcomes


@pytest.mark.usefixtures("ray_cluster")
def test_the_ray_task_reads_the_stored_file_itself(tmp_path: Path) -> None:
    """The task is sent the reference (its size is the indices', whatever the data's), not
    the batch: it profiles the runner's batch, and a file changed after the job was prepared
    is refused in the task's own process, which only a task that reads the file can do."""
    path = _write_data(tmp_path / "d.npz", n=4000)
    reference, by_value = _prepared(DataSource(str(path)))
    assert len(pickle.dumps(reference)) < 1_500
    [done] = _run_on_ray(reference)
    model = ModelReference(MODEL, "", seed=SETTINGS.seed)
    [expected] = profile_group(model, by_value, ["head"], SETTINGS.model_dump_json())
    assert done.error is None and done.profile is not None
    assert json.dumps(done.profile.sigma) == json.dumps(expected["profile"]["sigma"])
    changed = _write_data(tmp_path / "e.npz", n=4000)
    changed_reference, _ = _prepared(DataSource(str(changed)))
    _write_data(changed, seed=1, n=4000)
    [refused] = _run_on_ray(changed_reference)
    assert refused.profile is None
    assert refused.error is not None and "is not the" in refused.error
