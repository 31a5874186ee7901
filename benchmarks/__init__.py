"""Benchmarks: scripts that print tables, run on demand (not tests)."""
