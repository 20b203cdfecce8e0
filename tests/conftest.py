"""Session-wide test settings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

# Tiny models on a shared 2-core machine run several times faster on one thread.
torch.set_num_threads(int(os.environ.get("CURVPROF_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One embedded loopback Ray for the whole session (ray.init costs seconds)."""
    from workers.execution import init_ray, shutdown_ray

    init_ray(None, num_cpus=2)
    yield
    shutdown_ray()
