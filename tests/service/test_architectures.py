"""Every architecture of tests/models/archs.py through both paths: ``curvprof profile`` on this
machine and the service (upload, job on a real Ray, stored rows through a real uvicorn).

One server and one Ray for all of them; the jobs are submitted together (through
``curvprof submit``, which zips a Hugging Face directory), the local profiles run while the
service works, and every stored float64 number must equal the CLI's to 1e-10.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from api_schemas import LayerProfile, Profile
from service.cli import main
from service.embedded import EmbeddedServer
from service.settings import Settings
from tests.models.archs import ARCHS, SEQ, STATIC_BATCH, Arch, N
from tests.service.helpers import MLP_CONFIG, write_checkpoint

pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("ray_cluster")

SETTINGS = ["--top-k", "3", "--batch-size", str(N), "--seq-len", str(SEQ)]
TOL = 1e-10
NAMES = [a.name for a in ARCHS]


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def both_paths(
    ray_cluster: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("archs")
    built = {a.name: (a, a.build(root), a.data(root)) for a in ARCHS}
    zoo_dir = write_checkpoint(root / "runs" / "mlp").parent  # a `curvprof train` directory
    settings = Settings(data_dir=root / "data", allow_pickle_checkpoints=True, layers_per_task=64)
    server = EmbeddedServer(settings)
    client = server.client()
    jobs: dict[str, str] = {}
    for name, (_, checkpoint, data) in built.items():
        code, printed = _run(
            ["submit", str(checkpoint), "--data", str(data), "--url", server.url,
             "--lanczos-steps", "3", *SETTINGS]
        )  # fmt: skip
        assert code == 0, name
        jobs[name] = printed.split()[0]
    code, printed = _run(["submit", str(zoo_dir), "--url", server.url, *SETTINGS])
    assert code == 0
    jobs["zoo_dir"] = printed.split()[0]
    local: dict[str, Profile] = {}
    for name, (_, checkpoint, data) in built.items():
        out = root / f"{name}.json"
        argv = ["profile", str(checkpoint), "--data", str(data), "--out", str(out), "--quiet"]
        code, _ = _run([*argv, "--lanczos", "3", *SETTINGS])
        assert code == 0, name
        local[name] = Profile.model_validate_json(out.read_text())
    done = {name: client.wait(job, timeout=300, poll=0.2) for name, job in jobs.items()}
    stored = {name: list(client.layers(job_id=job.id)) for name, job in done.items()}
    yield {
        "built": built,
        "local": local,
        "jobs": done,
        "stored": stored,
        "client": client,
        "root": root,
        "server": server,
    }
    client.close()
    server.stop()


def _weights(model: nn.Module) -> set[str]:
    """Every weight a Linear, a convolution or GPT-2's Conv1D applies (the matrices), by the
    parameter's own name (a tied head's weight is its embedding's)."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = set()
    for module in model.modules():
        is_matrix = isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
        if is_matrix or type(module).__name__ == "Conv1D":
            out.add(names[id(module.weight)])
    return out


def _close(a: object, b: object, where: str) -> None:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), where
        else:
            assert abs(a - b) <= TOL * max(1.0, abs(a)), f"{where}: {a} vs {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


@pytest.mark.parametrize("name", NAMES)
def test_default_loss_follows_the_head(both_paths: dict[str, Any], name: str) -> None:
    arch: Arch = both_paths["built"][name][0]
    assert both_paths["local"][name].settings.loss == arch.loss


@pytest.mark.parametrize("name", NAMES)
def test_service_stores_the_cli_numbers(both_paths: dict[str, Any], name: str) -> None:
    job = both_paths["jobs"][name]
    assert job.state == "succeeded", job.error
    local = {layer.name: layer for layer in both_paths["local"][name].layers}
    rows = both_paths["stored"][name]
    assert sorted(r.name for r in rows) == sorted(local)
    skip = {"wall_seconds"}
    for row in rows:
        mine = local[row.name].model_dump(exclude=skip)
        theirs = row.profile().model_dump(exclude=skip)
        assert row.sigma and row.h, row.name
        _close(mine, theirs, f"{name}:{row.name}")


@pytest.mark.parametrize("name", NAMES)
def test_every_matrix_is_analysed_or_listed(both_paths: dict[str, Any], name: str) -> None:
    profile: Profile = both_paths["local"][name]
    arch, checkpoint, _ = both_paths["built"][name]
    from workers.intake.checkpoints import load_checkpoint

    model = load_checkpoint(checkpoint, allow_pickle=True).model
    analysed = {layer.parameter for layer in profile.layers}
    listed = {key if key.endswith(".weight") else f"{key}.weight" for key in profile.skipped}
    missing = _weights(model) - analysed - listed
    assert not missing, f"{arch.name}: neither analysed nor in skipped: {sorted(missing)}"
    assert all(layer.k > 0 and len(layer.h) == layer.k for layer in profile.layers)


def test_heads_and_attention_of_the_transformers(both_paths: dict[str, Any]) -> None:
    """Kinds where names and structure agree (the inventory's own tests cover the rest)."""
    kinds = {
        name: {layer.name.removeprefix("model."): layer.kind for layer in profile.layers}
        for name, profile in both_paths["local"].items()
    }
    assert kinds["bert"]["classifier"] == "head"
    assert kinds["bert"]["bert.encoder.layer.0.attention.self.query"] == "attn_q"
    assert kinds["llama"]["lm_head"] == "head"
    assert kinds["llama"]["model.layers.0.self_attn.o_proj"] == "attn_o"
    assert kinds["t5"]["decoder.block.0.layer.1.EncDecAttention.q"] == "attn_q"
    assert kinds["vit"]["classifier"] == "head"
    assert kinds["resnet"]["fc"] == "head"


def test_training_directory_submits_by_path(both_paths: dict[str, Any]) -> None:
    job = both_paths["jobs"]["zoo_dir"]
    assert job.state == "succeeded", job.error
    assert job.architecture == MLP_CONFIG["arch"]
    assert {r.name for r in both_paths["stored"]["zoo_dir"]} == {"layers.0", "layers.1", "head"}


def test_static_batch_export_runs_in_its_own_batch_size(both_paths: dict[str, Any]) -> None:
    """A default ``torch.export`` (static batch of 4) on 8 examples: micro-batches of 4 whose
    sums are the full batch's, so the numbers equal those of the eager model on all 8."""
    from tests.models.archs import TinyResNet, eager_model
    from workers.curvature import profile_model
    from workers.data.files import load_data_file

    _, _, data = both_paths["built"]["resnet"]
    ds = load_data_file(data)
    eager = profile_model(eager_model(TinyResNet), ds.inputs, ds.targets, top_k=3, lanczos_steps=3)
    exported = {layer.name: layer for layer in both_paths["local"]["resnet"].layers}
    assert set(exported) == {layer.name for layer in eager.layers}
    for layer in eager.layers:
        got: LayerProfile = exported[layer.name]
        for field in ("sigma", "h", "eigenvalues"):
            _close(getattr(layer, field), getattr(got, field), f"{layer.name}.{field}")


def test_static_batch_export_refuses_a_batch_it_cannot_run(
    both_paths: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _, checkpoint, data = both_paths["built"]["resnet"]
    code = main(["profile", str(checkpoint), "--data", str(data), "--batch-size", "6", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"static batch of {STATIC_BATCH}" in err and "--batch-size 4" in err
    assert "dynamic_shapes" in err


def test_plain_text_is_tokenized_by_the_models_tokenizer(both_paths: dict[str, Any]) -> None:
    profile: Profile = both_paths["local"]["gpt2_text"]
    assert profile.provenance.data_name == "corpus"
    assert len(profile.provenance.data_indices) == N


def test_hf_archive_with_pickled_weights_is_refused(both_paths: dict[str, Any]) -> None:
    import zipfile

    from service.client import ApiError

    _, checkpoint, _ = both_paths["built"]["bert"]
    bad = both_paths["root"] / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.write(Path(checkpoint) / "config.json", "config.json")
        archive.write(Path(checkpoint) / "model.safetensors", "model.safetensors")
        archive.writestr("pytorch_model.bin", b"\x80\x04not really a pickle")
    with pytest.raises(ApiError) as info:
        both_paths["client"].upload_checkpoint(bad)
    assert info.value.status == 422 and "pickled" in str(info.value)
    tmp = Path(both_paths["server"].settings.data_dir) / "artifacts" / "tmp"
    assert not any(tmp.iterdir()) if tmp.exists() else True


def test_t5_decoder_reads_the_shifted_targets(both_paths: dict[str, Any]) -> None:
    from workers.intake.checkpoints import load_checkpoint

    _, checkpoint, _ = both_paths["built"]["t5"]
    model: Any = load_checkpoint(checkpoint).model
    targets = torch.tensor([[5, 6, -100]])
    shifted = model.decoder_inputs(targets)
    start = model.model.config.decoder_start_token_id
    pad = model.model.config.pad_token_id
    assert shifted.tolist() == [[start, 5, 6]]
    assert pad == 0


def test_model_loss_is_the_models_own_outputs_loss(both_paths: dict[str, Any]) -> None:
    """``--loss model``: transformers' own loss from the labels. For BERT's classifier that is
    the mean cross-entropy, so CLI and service numbers equal the default ones; DistilBERT's
    regression loss is the mean squared error without curvprof's ½, so σ and h double."""
    client, server = both_paths["client"], both_paths["server"]
    _, bert, bert_data = both_paths["built"]["bert"]
    code, printed = _run(
        ["submit", str(bert), "--data", str(bert_data), "--url", server.url, "--loss", "model",
         "--lanczos-steps", "3", *SETTINGS]
    )  # fmt: skip
    assert code == 0
    job = client.wait(printed.split()[0], timeout=300, poll=0.2)
    assert job.state == "succeeded", job.error
    default = {layer.name: layer for layer in both_paths["local"]["bert"].layers}
    for row in client.layers(job_id=job.id):
        for field in ("sigma", "h", "eigenvalues"):
            _close(getattr(row, field), getattr(default[row.name], field), f"{row.name}.{field}")

    _, distil, distil_data = both_paths["built"]["distilbert"]
    out = both_paths["root"] / "distil-model.json"
    argv = ["profile", str(distil), "--data", str(distil_data), "--loss", "model", "--quiet"]
    code, _ = _run([*argv, "--lanczos", "3", "--out", str(out), *SETTINGS])
    assert code == 0
    own = Profile.model_validate_json(out.read_text())
    assert own.settings.loss == "model"
    halved = {layer.name: layer for layer in both_paths["local"]["distilbert"].layers}
    for layer in own.layers:
        _close(layer.sigma, [2 * v for v in halved[layer.name].sigma], f"{layer.name}.sigma")
        _close(layer.h, [2 * v for v in halved[layer.name].h], f"{layer.name}.h")


def test_model_loss_refuses_micro_batches(
    both_paths: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _, checkpoint, data = both_paths["built"]["bert"]
    argv = ["profile", str(checkpoint), "--data", str(data), "--loss", "model"]
    assert main([*argv, "--micro-batch-size", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("curvprof: error:") and "micro-batches" in last
