"""Procedural example scenes (analytic ray casting): the bundled example, test scenes and the oracle's ground truth.

Sits below ``depth`` in the layering (ARCHITECTURE.md): tests, the oracle depth model and the benchmarks use it;
it depends only on ``sphere``.
"""
