"""curvprof service: REST front end, SQL store, Ray job runner, client and command line."""

__version__ = "0.1.0"
