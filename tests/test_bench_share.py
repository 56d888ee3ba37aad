"""bench.timing.share: the GEMM share of a step from paired samples, or "too noisy".

Synthetic samples only: nothing is timed here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.timing import share  # noqa: E402


def _t(samples):
    return {"samples": list(samples)}


def test_a_steady_share_is_a_number():
    gemm = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.02, 0.98]
    step = [2 * g for g in gemm]  # drift cancels: every round is paired
    value, why = share(_t(gemm), _t(step))
    assert value == pytest.approx(0.5) and why == ""


def test_a_share_above_one_is_too_noisy_not_clamped():
    gemm = [1.4, 1.42, 1.39, 1.41, 1.4, 1.43, 1.38, 1.41]  # the 1.41 seen under load
    value, why = share(_t(gemm), _t([1.0] * 8))
    assert value is None and "> 1" in why


def test_a_wide_spread_is_too_noisy():
    gemm = [0.2, 0.9, 0.3, 0.8, 0.25, 0.85, 0.5, 0.6]
    value, why = share(_t(gemm), _t([1.0] * 8))
    assert value is None and "spread" in why


def test_too_few_or_unpaired_rounds_are_too_noisy():
    assert share(_t([0.5] * 3), _t([1.0] * 3))[0] is None
    assert share(_t([0.5] * 8), _t([1.0] * 9))[0] is None
    assert share({}, _t([1.0] * 8))[0] is None
    assert share(_t([0.5] * 7 + [0.0]), _t([1.0] * 8))[0] is None


def test_the_report_prints_too_noisy():
    from bench import report
    from bench.runtime import GEMM_NAME

    rec = {"network": "mnist", "batch": 128, "dtype": "float64", "gemm_flops": 1e9,
           "times": {"grad": {GEMM_NAME: {"median": 1.41, **_t([1.41] * 9)},
                              "hand": {"median": 1.0, **_t([1.0] * 9)}}}}
    text = report._gemm([rec])
    assert "too noisy (share 1.41 > 1)" in text and "| 1.41 |" not in text
