"""Benchmarks: correctness first, then warmed-up, synchronized, median timings; JSON to docs/results/."""
