"""A DataLoader as the measurement set (``loader.collect_batches``): one set measured in
micro-batches of the loader's batch size, with the indices its sampler chose."""

from __future__ import annotations

import numpy as np
from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset

from tests.curvature.models import FAST, N, classification_data, tanh_classifier
from workers.curvature import profile_model


def test_data_loader_is_one_measurement_set_in_micro_batches() -> None:
    model, (x, y) = tanh_classifier(), classification_data()
    whole = profile_model(model, x, y, **FAST)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)
    batched = profile_model(model, loader, **FAST)
    assert batched.settings.micro_batch_size == 4
    assert batched.provenance.data_indices == list(range(N))
    for a, b in zip(whole.layers, batched.layers, strict=True):
        np.testing.assert_allclose(a.sigma, b.sigma, rtol=1e-10)
        np.testing.assert_allclose(a.h, b.h, rtol=1e-10, atol=1e-14)


def test_a_subset_sampler_records_its_indices() -> None:
    model, (x, y) = tanh_classifier(), classification_data()
    chosen = [9, 2, 7, 4, 0, 11]
    loader = DataLoader(TensorDataset(x, y), batch_size=3, sampler=SubsetRandomSampler(chosen))
    profile = profile_model(model, loader, **FAST)
    assert profile.provenance.data_indices == sorted(chosen)
    reference = profile_model(model, x[sorted(chosen)], y[sorted(chosen)], **FAST)
    for a, b in zip(reference.layers, profile.layers, strict=True):
        np.testing.assert_allclose(a.sigma, b.sigma, rtol=1e-10)
