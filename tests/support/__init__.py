"""Helpers shared by the tests (reference models, sweep files, an MLflow server, subprocess helpers): not tests."""
