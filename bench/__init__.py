"""Benchmarks: scripts that print figures (and --json); never part of the pass/fail suite."""
