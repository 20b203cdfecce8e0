"""Session-wide test settings."""

from __future__ import annotations

import os

import torch

# Tiny models on a shared 2-core machine run several times faster on one thread.
torch.set_num_threads(int(os.environ.get("CURVPROF_TEST_THREADS", "1")))
