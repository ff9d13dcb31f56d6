"""Tests of the orchestrator (commands, sweeps on Ray, tracking), one file per module under test."""
