"""Profiles in the tools researchers already use: DataFrames, MLflow, training loops.

Each module imports its optional package (pandas, mlflow, transformers) only when called."""
