"""Benchmarks: mailgate measured against baselines run in the same script."""
