"""curvprof workers: the curvature engine, Ray execution and the optimizer."""

__version__ = "0.1.0"
