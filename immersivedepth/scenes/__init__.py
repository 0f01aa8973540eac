"""Procedural example scenes (analytic ray casting): the bundled example, test scenes and the oracle's ground truth.

Sits below ``depth`` in the layering (the import-linter contract in pyproject.toml): tests, the oracle depth
model and the benchmarks use it; it depends only on ``sphere``.
"""
