"""The test suite: tests/ardm (the library), tests/orchestrator (the commands, sweeps and tracking), tests/faults
(faults caused for real), tests/support (shared helpers, not tests)."""
