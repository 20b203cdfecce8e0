"""The γ panel's fitted line is the γ fit itself (OLS of log σ on log k)."""

from __future__ import annotations

import numpy as np

from service.plots import gamma_line, layer_figure
from tests.service.helpers import fake_profile
from workers.curvature import fit_exponents


def test_gamma_line_is_the_least_squares_fit() -> None:
    rng = np.random.default_rng(0)
    k = np.arange(1, 21, dtype=float)
    sigma = 3.0 * k**-0.7 * np.exp(rng.normal(0, 0.05, k.size))
    h = sigma**1.8
    fit = fit_exponents(sigma, h)
    slope, intercept = np.polyfit(np.log(k), np.log(sigma), 1)  # independent reference
    assert abs(fit.gamma + slope) < 1e-12
    line = gamma_line(sigma, fit.gamma)
    assert line is not None
    ks, values = line
    np.testing.assert_allclose(values, np.exp(intercept) * ks**slope, rtol=1e-10)
    assert gamma_line(sigma, None) is None
    png = layer_figure(fake_profile("l", sigma=list(sigma), h=list(h), gamma=fit.gamma))
    assert png[:4] == b"\x89PNG"
