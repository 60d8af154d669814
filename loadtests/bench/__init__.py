"""Benchmark drivers behind ``clipsearch bench`` (the CLI is the composition root)."""
