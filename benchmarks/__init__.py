"""Benchmarks: figures beside their baselines, from one run (not part of the test suite)."""
