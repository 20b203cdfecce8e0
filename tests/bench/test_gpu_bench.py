"""bench/gpu.py in its --tiny mode: both models profile end to end and print per-layer times."""

from __future__ import annotations

import pytest

from bench import gpu


def test_tiny_mode_profiles_every_matrix_and_prints_totals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    timings = gpu.main(["--tiny", "--device", "cpu"])
    assert [t.model for t in timings] == ["gpt", "cnn"]
    gpt, cnn = timings
    assert len(gpt.layers) == 7  # q, k, v, o, up, down, the tied head
    assert {route for _, route, _ in cnn.layers} == {"ggn_jvp"}  # ReLU/BN-eval/pool net
    assert {route for _, route, _ in gpt.layers} == {"weight_double_backward"}  # final LayerNorm
    assert all(t.total > 0 and all(s > 0 for _, _, s in t.layers) for t in timings)
    out = capsys.readouterr().out
    assert out.count("total") == 2 and "lm_head" in out
