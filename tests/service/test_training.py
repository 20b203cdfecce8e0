"""Profiling during training: a plain PyTorch loop (in-process and through a real server)
and a Hugging Face Trainer, each on a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from service.integrations.training import CheckpointProfiler, MeasurementSettings
from tests.service.helpers import MLP_CONFIG
from workers.curvature import profile_model
from workers.intake.checkpoints import load_checkpoint, sha256_file
from workers.zoo import build_model

FAST = MeasurementSettings(top_k=10, lanczos_steps=0)


def train(model: nn.Module, steps: int, profiler: CheckpointProfiler | None) -> None:
    """SGD on random minibatches drawn from the global RNG (so a disturbed RNG shows)."""
    generator_data = torch.Generator().manual_seed(1)
    x = torch.randn(256, 64, generator=generator_data)
    y = torch.randint(0, 10, (256,), generator=generator_data)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, 256, (32,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        optimizer.step()
        if profiler is not None:
            profiler.maybe_profile(model, step)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(96, 64, generator=g), torch.randint(0, 10, (96,), generator=g)


def test_plain_loop_profiles_every_n_steps_in_process(tmp_path: Path) -> None:
    inputs, targets = batch()
    torch.manual_seed(0)
    model = build_model(MLP_CONFIG)
    profiler = CheckpointProfiler(
        every=3, out_dir=tmp_path, inputs=inputs, targets=targets, settings=FAST
    )
    train(model, 7, profiler)
    torch.manual_seed(0)
    untouched = build_model(MLP_CONFIG)
    train(untouched, 7, None)
    # the run itself is unchanged by profiling (weights, mode, random stream)
    for a, b in zip(model.parameters(), untouched.parameters(), strict=True):
        assert torch.equal(a, b)
    assert model.training
    assert [r.step for r in profiler.records] == [3, 6]
    first, second = profiler.records
    # a record is the checkpoint of its own step: recompute it from the saved files
    for record in profiler.records[:1]:
        loaded = load_checkpoint(str(record.checkpoint_dir))
        again = profile_model(loaded.model, inputs, targets, top_k=10, lanczos_steps=0)
        assert record.profile is not None
        assert [x.alpha for x in record.profile.layers] == [x.alpha for x in again.layers]
        assert any(x.alpha is not None for x in again.layers)
    assert first.profile is not None and second.profile is not None
    assert first.profile.layers[0].sigma != second.profile.layers[0].sigma


def test_plain_loop_submits_to_the_service(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    inputs, targets = batch()
    torch.manual_seed(0)
    model = build_model(MLP_CONFIG)
    with server.client() as client:
        profiler = CheckpointProfiler(
            every=2,
            out_dir=tmp_path,
            inputs=inputs,
            targets=targets,
            settings=FAST,
            client=client,
            name="mlp-run",
            tags=["sgd"],
        )
        train(model, 4, profiler)
        jobs = [client.job(job_id) for job_id in profiler.job_ids]
        assert [(j.step, j.name, j.tags) for j in jobs] == [
            (2, "mlp-run", ["sgd"]),
            (4, "mlp-run", ["sgd"]),
        ]
        assert len({j.spec.dataset_id for j in jobs}) == 1  # the batch was uploaded once
        assert jobs[0].spec.batch_size == 96 and jobs[0].spec.top_k == 10
        for job, record in zip(jobs, profiler.records, strict=True):
            weights = record.checkpoint_dir / "model.safetensors"
            assert client.checkpoint(job.spec.checkpoint_id).sha256 == sha256_file(weights)
        assert profiler.compare_url() == (f"{server.url}/ui/compare?jobs={jobs[0].id},{jobs[1].id}")


def test_hugging_face_trainer_callback(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from service.integrations.hf_callback import CurvprofCallback

    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=30, n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    tokens = torch.tensor(np.random.default_rng(0).integers(0, 30, size=(32, 9)))
    train_set = [{"input_ids": t, "labels": t} for t in tokens]
    profiler = CheckpointProfiler(
        every=2,
        out_dir=tmp_path / "profiles",
        inputs=tokens[:16, :-1],
        targets=tokens[:16, 1:],
        settings=MeasurementSettings(top_k=4, lanczos_steps=0),
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=4,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=train_set, callbacks=[CurvprofCallback(profiler)]
    )
    trainer.train()
    assert [r.step for r in profiler.records] == [2, 4]
    for record in profiler.records:
        assert record.profile is not None and record.profile.settings.loss == "lm"
        assert {layer.kind for layer in record.profile.layers} >= {"attn_qkv", "mlp_up"}
        saved = transformers.GPT2LMHeadModel.from_pretrained(record.checkpoint_dir)
        assert saved.config.n_embd == 8
    # the last checkpoint is the trained model
    final = transformers.GPT2LMHeadModel.from_pretrained(profiler.records[-1].checkpoint_dir)
    for a, b in zip(final.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b.detach().cpu())
