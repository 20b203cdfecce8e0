"""A transformers that cannot import (a CUDA torchvision beside the CPU torch) is one line."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from workers.intake.checkpoints import load_checkpoint
from workers.intake.errors import IntakeError


class _BrokenTransformers(types.ModuleType):
    """What ``import transformers`` gives when torchvision's operators do not load: the
    package imports, and its lazy model classes raise on first use."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError("operator torchvision::nms does not exist")


def test_torchvision_mismatch_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertModel"]})
    )
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    monkeypatch.setitem(sys.modules, "transformers", _BrokenTransformers("transformers"))
    with pytest.raises(IntakeError) as info:
        load_checkpoint(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "torchvision::nms" in message and "pip uninstall torchvision" in message
