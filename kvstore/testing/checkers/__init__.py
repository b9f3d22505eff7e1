"""Checkers for histories recorded by robustness tests (pure: no I/O, no clock).

Owns: the linearizability checker for KV histories (`linearizability`), the
watch guarantees (`watch`) and the lease lifetime bounds (`lease`). Each
checker takes plain data recorded by a harness and returns a list of
violations (empty = the history is correct); none of them talks to a server.
"""
