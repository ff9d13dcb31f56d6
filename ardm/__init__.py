"""Autoregressive Diffusion Models in plain PyTorch: data, upscaling, objective, networks, training,
evaluation and sampling. No Ray or MLflow import anywhere in this package."""
