"""Helpers shared by tests, benchmarks and launchers: waiting, ports, clusters."""
