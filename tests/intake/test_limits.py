"""Bounds before allocation: zip bombs, npz headers, safetensors headers, model size."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bench.hostile_files import npy_header, safetensors_bytes, stored, write_zip, zero_bomb
from workers.data import load_data_file
from workers.intake.archive import check_pt2, check_zip
from workers.intake.checkpoints import load_checkpoint, save_checkpoint
from workers.intake.errors import IntakeError
from workers.intake.limits import IntakeLimits
from workers.intake.safetensors_header import read_safetensors_header
from workers.zoo import ARCHS, build_model, check_model_size

MIB = 1 << 20


def _bomb_npz(path: Path, n: int) -> Path:
    return write_zip(
        path,
        [
            zero_bomb("inputs.npy", npy_header((n // 8,)), n),
            zero_bomb("targets.npy", npy_header((n // 8,), "|u1"), n // 8),
        ],
    )


def test_npz_bomb_is_refused_from_its_directory_and_is_a_real_archive(tmp_path: Path) -> None:
    path = _bomb_npz(tmp_path / "bomb.npz", 16 * MIB)
    assert path.stat().st_size < MIB // 4  # 16 MiB of inputs in well under 1 MiB
    with pytest.raises(IntakeError, match=r"decompressed bytes: .* \(CURVPROF_MAX_DECOMPRESSED"):
        load_data_file(path, IntakeLimits(max_decompressed_bytes=8 * MIB))
    ds = load_data_file(path, IntakeLimits(max_decompressed_bytes=32 * MIB))  # valid CRCs
    assert ds.inputs.shape == (2 * MIB,) and float(ds.inputs.abs().max()) == 0.0
    with pytest.raises(IntakeError, match="MAX_ELEMENTS"):
        load_data_file(path, IntakeLimits(max_elements=4 * MIB - 1))
    assert len(load_data_file(path, IntakeLimits(max_elements=4 * MIB))) == 2 * MIB


@pytest.mark.parametrize(
    ("members", "needle"),
    [
        ([stored("inputs.npy", npy_header((10**6, 10**6)) + bytes(8))], "does not match its"),
        ([stored("inputs.npy", npy_header((2,), "|O") + bytes(16))], "unsupported dtype object"),
        ([stored("inputs.npy", b"\x93NUMPY\x09\x00" + bytes(20))], "'inputs.npy'"),
        ([stored("../inputs.npy", npy_header((1,)) + bytes(8))], "unsafe member name"),
        ([stored("inputs.txt", b"1")], "holds 'inputs.txt'"),
        ([stored(f"a{i}.npy", b"") for i in range(5)], "MAX_ARCHIVE_MEMBERS"),
    ],
)
def test_bad_npz_members(tmp_path: Path, members: list, needle: str) -> None:  # type: ignore[type-arg]
    path = write_zip(tmp_path / "bad.npz", members)
    with pytest.raises(IntakeError, match=needle) as info:
        load_data_file(path, IntakeLimits(max_archive_members=4))
    assert "\n" not in str(info.value)


T = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (safetensors_bytes(None, bytes(16), b"[" * 50_000 + b"]" * 50_000), "RecursionError"),
        (safetensors_bytes({"x": {**T, "data_offsets": ["0", "16"]}}, bytes(16)), "data_offsets"),
        (safetensors_bytes({"x": {**T, "data_offsets": [[0], [16]]}}, bytes(16)), "data_offsets"),
        (safetensors_bytes({"x": {**T, "data_offsets": [0, 16, 0]}}, bytes(16)), "data_offsets"),
        (safetensors_bytes({"x": {**T, "shape": [2, True]}}, bytes(16)), "bad shape"),
        (safetensors_bytes({"x": {**T, "shape": [-2, -2]}}, bytes(16)), "bad shape"),
        (safetensors_bytes({"x": {**T, "shape": [1] * 9}}, bytes(16)), "bad shape"),
        (safetensors_bytes({"x": {**T, "dtype": 5}}, bytes(16)), "unknown dtype"),
        (safetensors_bytes({"x": {**T, "extra": 1}}, bytes(16)), "exactly the fields"),
        (safetensors_bytes({"x": [1, 2]}, bytes(16)), "exactly the fields"),
        (safetensors_bytes({"x": {**T, "shape": [3, 2]}}, bytes(16)), "shape needs 24"),
        (safetensors_bytes({"x": T}, bytes(20)), "cover 16 of 20"),
        (safetensors_bytes({"x": T, "y": T}, bytes(32)), "overlaps or leaves a gap"),
        (safetensors_bytes({"__metadata__": {"config": {"a": 1}}, "x": T}, bytes(16)), "strings"),
        (safetensors_bytes({"__metadata__": 3, "x": T}, bytes(16)), "strings"),
        (safetensors_bytes([T], bytes(16)), "not a JSON object"),
        ((1 << 63).to_bytes(8, "little") + b"{}", "does not fit"),
        (b"\x01\x02", "shorter than"),
    ],
)
def test_hostile_safetensors_headers(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(IntakeError, match=needle) as info:
        read_safetensors_header(path, IntakeLimits())
    assert "\n" not in str(info.value)
    with pytest.raises(IntakeError):
        load_data_file(path)


def test_safetensors_header_agrees_with_the_library_and_bounds_size(tmp_path: Path) -> None:
    tensors = {"inputs": torch.randn(5, 3), "targets": torch.arange(5), "m": torch.ones(5, 2)}
    path = tmp_path / "d.safetensors"
    save_file(tensors, str(path), metadata={"config": json.dumps({"arch": "mlp"})})
    header = read_safetensors_header(path, IntakeLimits())
    assert {k: t.shape for k, t in header.tensors.items()} == {
        k: tuple(v.shape) for k, v in tensors.items()
    }
    assert header.metadata == {"config": '{"arch": "mlp"}'} and header.elements == 30
    with pytest.raises(IntakeError, match="MAX_ELEMENTS"):
        read_safetensors_header(path, IntakeLimits(max_elements=29))
    n = int.from_bytes(path.read_bytes()[:8], "little")
    with pytest.raises(IntakeError, match="MAX_HEADER_BYTES"):
        read_safetensors_header(path, IntakeLimits(max_header_bytes=n - 1))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_model_size_from_the_meta_device_matches_the_built_model(arch: str) -> None:
    shapes = check_model_size({"arch": arch})
    model = build_model({"arch": arch})
    assert shapes == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    count = sum(math.prod(s) for s in shapes.values())
    assert count == sum(v.numel() for v in model.state_dict().values())
    check_model_size({"arch": arch}, max_parameters=count)
    with pytest.raises(IntakeError, match="MAX_MODEL_PARAMETERS"):
        check_model_size({"arch": arch}, max_parameters=count - 1)


def test_huge_config_and_mismatched_weights_fail_before_the_model_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.zoo

    save_checkpoint(build_model({"arch": "mlp", "widths": [8, 6]}), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    built: list[object] = []
    real_build = workers.zoo.build_model

    def counting_build(*args: object, **kwargs: object) -> torch.nn.Module:
        built.append(args)
        return real_build(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(workers.zoo, "build_model", counting_build)
    for config, needle in [
        ({"arch": "mlp", "widths": [20000, 20000]}, "401,520,010 is above the limit"),
        ({"arch": "mlp", "widths": [10**9]}, "bad entry 1000000000"),
        ({"arch": "vgg", "image_size": 100000}, "MAX_MODEL_PARAMETERS"),
        ({"arch": "gpt", "depth": 10**6}, "at most 256"),
        ({"arch": "mlp", "widths": [8, 7]}, "shape mismatch for 'layers.1.weight'"),
    ]:
        cfg = tmp_path / "c.json"
        cfg.write_text(json.dumps(config))
        with pytest.raises(IntakeError, match=needle):
            load_checkpoint(cfg, weights=weights)
    assert built == []
    (tmp_path / "c.json").write_text(json.dumps({"arch": "mlp", "widths": [8, 6]}))
    assert load_checkpoint(tmp_path / "c.json", weights=weights).arch == "mlp" and built


def test_pt_state_dicts_are_bounded(tmp_path: Path) -> None:
    save_checkpoint(build_model({"arch": "mlp", "widths": [8]}), tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    view = tmp_path / "view.pt"  # one stored element viewed as 10^10 (stride 0)
    state = dict(build_model({"arch": "mlp", "widths": [8]}).state_dict())
    torch.save({**state, "x": torch.zeros(1).expand(10**10)}, view)
    with pytest.raises(IntakeError, match="MAX_ELEMENTS"):
        load_checkpoint(cfg, weights=view)
    bomb = write_zip(tmp_path / "bomb.pt", [zero_bomb("archive/data/0", b"", 8 * MIB)])
    with pytest.raises(IntakeError, match="MAX_DECOMPRESSED_BYTES"):
        load_checkpoint(cfg, weights=bomb, limits=IntakeLimits(max_decompressed_bytes=MIB))


def test_pt2_layout_is_checked_without_unpickling(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2).eval()
    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(2, 3),)), str(good))
    assert check_pt2(good, IntakeLimits()).total_bytes > 0
    with zipfile.ZipFile(good) as zf:
        members = [stored(i.filename, zf.read(i.filename)) for i in zf.infolist()]
    cases = {
        "two roots": [*members, stored("other/x", b"")],
        "no archive_format": [m for m in members if not m[0].endswith("archive_format")],
        "bomb": [*members, zero_bomb(members[0][0].split("/")[0] + "/data/w9", b"", 4 * MIB)],
    }
    for name, content in cases.items():
        path = write_zip(tmp_path / "bad.pt2", content)
        with pytest.raises(IntakeError):
            check_pt2(path, IntakeLimits(max_decompressed_bytes=2 * MIB))
        assert name in cases
    (tmp_path / "junk.pt2").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(IntakeError, match="not a readable zip"):
        check_zip(tmp_path / "junk.pt2", IntakeLimits(), ".pt2 archive")


def test_hugging_face_config_is_sized_on_the_meta_device(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from workers.intake.hf import _check_hf_size

    config = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=8)
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path / "gpt2")
    count = sum(p.numel() for p in model.parameters())  # the tied head counted once
    _check_hf_size(transformers, transformers.GPT2LMHeadModel, tmp_path / "gpt2", count)
    with pytest.raises(IntakeError, match=f"{count:,} is above the limit"):
        load_checkpoint(tmp_path / "gpt2", limits=IntakeLimits(max_model_parameters=count - 1))


def test_cli_reads_the_same_limit_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    save_checkpoint(build_model({"arch": "mlp", "widths": [8]}), tmp_path / "m")
    bomb = _bomb_npz(tmp_path / "bomb.npz", 8 * MIB)
    monkeypatch.setenv("CURVPROF_MAX_DECOMPRESSED_BYTES", str(2 * MIB))
    assert main(["profile", str(tmp_path / "m"), "--data", str(bomb), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "above the limit of 2,097,152 (CURVPROF_MAX_DECOMPRESSED" in err[0]
