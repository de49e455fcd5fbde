"""Benchmarks that print their figures (run: make bench)."""
