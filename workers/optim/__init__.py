"""Spectral Newton (docs/optimizer.md): the direction for one matrix and the optimizer."""

from workers.optim.defaults import DEFAULT_ALPHA, default_alpha
from workers.optim.directions import newton_schulz5, spectral_newton_direction
from workers.optim.spectral_newton import LayerAssignment, SpectralNewton, load_profile

__all__ = [
    "DEFAULT_ALPHA",
    "LayerAssignment",
    "SpectralNewton",
    "default_alpha",
    "load_profile",
    "newton_schulz5",
    "spectral_newton_direction",
]
