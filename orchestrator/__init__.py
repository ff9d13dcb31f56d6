"""The `ardm` command line; Ray Tune/Train sweeps and MLflow tracking build on it."""
