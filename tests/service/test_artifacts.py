"""service/artifacts: the content-addressed store (``store.py``) and the upload checks
(``validate.py``), called directly on real files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from service.artifacts import (
    ArtifactRejected,
    ArtifactStore,
    known_suffix,
    validate_checkpoint,
    validate_dataset,
    zoo_reference,
)
from service.upload import ReceivedUpload
from tests.service.helpers import MLP_CONFIG, write_checkpoint


def received(tmp: Path, payload: bytes, name: str) -> ReceivedUpload:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "upload-test.part"
    path.write_bytes(payload)
    return ReceivedUpload(path, hashlib.sha256(payload).hexdigest(), len(payload), name)


def test_same_bytes_land_on_one_path(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    first = received(store.tmp_dir, b"weights", "m.safetensors")
    path = store.commit(first, ".safetensors")
    assert path == store.path_for(first.sha256, ".safetensors")
    assert path.parent.name == first.sha256[:2] and path.read_bytes() == b"weights"
    again = received(store.tmp_dir, b"weights", "other-name.safetensors")
    assert store.commit(again, ".safetensors") == path
    assert not again.tmp_path.exists() and list(store.tmp_dir.iterdir()) == []
    assert store.remove_stale_uploads() == 0


@pytest.mark.parametrize(
    "name,suffix",
    [("m.SafeTensors", ".safetensors"), ("a.b.npz", ".npz"), ("hf.zip", ".zip"), ("x.pt", "")],
)
def test_known_suffix(name: str, suffix: str) -> None:
    assert known_suffix(name) == suffix


def test_a_checkpoint_is_loaded_with_its_config(tmp_path: Path) -> None:
    weights = write_checkpoint(tmp_path / "ckpt")
    info = validate_checkpoint(weights, "m.safetensors", json.dumps(MLP_CONFIG), allow_pickle=False)
    assert (info.format, info.suffix, info.arch) == ("safetensors", ".safetensors", "mlp")
    assert info.config is not None and info.config["widths"] == [32, 32]
    with pytest.raises(ArtifactRejected, match="architecture config"):
        validate_checkpoint(weights, "m.safetensors", None, allow_pickle=False)
    wrong = {**MLP_CONFIG, "widths": [16, 16]}
    with pytest.raises(ArtifactRejected) as err:
        validate_checkpoint(weights, "mine.safetensors", json.dumps(wrong), allow_pickle=False)
    assert err.value.status == 422 and "shape" in err.value.message


def test_the_config_may_travel_in_the_safetensors_metadata(tmp_path: Path) -> None:
    weights = write_checkpoint(tmp_path / "ckpt")
    from safetensors.torch import load_file

    tagged = tmp_path / "tagged.safetensors"
    save_file(load_file(weights), tagged, metadata={"config": json.dumps(MLP_CONFIG)})
    info = validate_checkpoint(tagged, "tagged.safetensors", None, allow_pickle=False)
    assert info.arch == "mlp"


def test_programs_and_unknown_formats_are_refused_with_415(tmp_path: Path) -> None:
    program = tmp_path / "model.pt2"
    program.write_bytes(b"PK")
    with pytest.raises(ArtifactRejected, match="CURVPROF_ALLOW_PICKLE_CHECKPOINTS") as err:
        validate_checkpoint(program, "model.pt2", None, allow_pickle=False)
    assert err.value.status == 415
    pickle = tmp_path / "model.pkl"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(ArtifactRejected) as err:
        validate_checkpoint(pickle, "model.pkl", None, allow_pickle=True)
    assert err.value.status == 415
    with pytest.raises(ArtifactRejected) as err:
        validate_dataset(pickle, "data.pkl")
    assert err.value.status == 415


def test_a_dataset_is_loaded_as_a_job_loads_it(tmp_path: Path) -> None:
    data = tmp_path / "upload-x.npz"
    np.savez(data, inputs=np.zeros((5, 3), np.float32), targets=np.arange(5))
    info = validate_dataset(data, "mine.npz")
    assert (info.format, info.suffix, info.n_examples) == ("npz", ".npz", 5)
    tensors = tmp_path / "upload-y.safetensors"
    save_file({"inputs": torch.full((2, 3), float("nan")), "targets": torch.zeros(2)}, tensors)
    with pytest.raises(ArtifactRejected) as err:
        validate_dataset(tensors, "mine.safetensors")
    assert "mine.safetensors" in err.value.message and "upload-y" not in err.value.message


def test_a_zoo_reference_names_its_config() -> None:
    assert zoo_reference("zoo:mlp") == {"arch": "mlp"}
    assert zoo_reference("zoo:vgg", {"classes": 3}) == {"arch": "vgg", "classes": 3}
    assert zoo_reference("ab" * 32, {"classes": 3}) is None
