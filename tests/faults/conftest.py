"""Fixtures of the fault tests."""

from tests.support.nodes import node_fault  # noqa: F401  (a fixture: nodes added to the session's cluster, one lost)
