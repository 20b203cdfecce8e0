"""curvprof inside the tools researchers use: MLflow runs and training loops."""
