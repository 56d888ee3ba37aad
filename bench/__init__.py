"""Benchmark harness for symgrad (run with ``python -m bench``).

This package must not import numpy at import time: ``bench/__main__.py``
pins the BLAS/OpenMP/XLA thread counts through environment variables, which
only take effect if they are set before numpy (or torch, or jax) is imported.
"""
