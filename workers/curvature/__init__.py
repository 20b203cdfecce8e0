"""Pure torch/numpy curvature maths: no Ray, no HTTP, no SQL."""

from workers.curvature.fits import ExponentFit, fit_exponents
from workers.curvature.inventory import LayerSpec, layer_inventory
from workers.curvature.profile import profile_model

__all__ = ["ExponentFit", "LayerSpec", "fit_exponents", "layer_inventory", "profile_model"]
