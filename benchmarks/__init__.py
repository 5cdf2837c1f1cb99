"""Tenure benchmark suite: ``python -m benchmarks`` (``make bench``)."""
