"""The test suite (a package so that test-only support modules import by name, e.g.
``tests.gateway.support``; pytest puts the project root on the path)."""
