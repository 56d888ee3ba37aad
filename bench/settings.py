"""Run settings for the full suite and for ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    quick: bool
    repeats: int  # interleaved rounds (median and min are over these)
    target_s: float  # length of one timed block
    float32_runs: tuple  # (network, batch) pairs also timed in float32; None = all
    allcores_runs: tuple  # (network, batch) pairs of the all-cores table
    gemm_runs: tuple
    sweep_widths: tuple
    sweep_depths: tuple
    warm_repeats: int
    cold_repeats: int
    symgrad_timeout_s: float
    naive_timeout_s: float
    naive_budget_s: float  # total time the naive sweep may use
    ttfg_repeats: int
    e2e_seeds: int
    e2e_max_epochs: int


def make_settings(quick: bool) -> Settings:
    from bench import networks as nw

    if quick:
        return Settings(
            quick=True, repeats=5, target_s=0.01,
            float32_runs=(("mnist", 128),), allcores_runs=(("mnist", 1024),),
            gemm_runs=(("mnist", 128), ("mnist", 1024)),
            sweep_widths=nw.QUICK_SWEEP_WIDTHS, sweep_depths=nw.QUICK_SWEEP_DEPTHS,
            warm_repeats=1, cold_repeats=1, symgrad_timeout_s=10, naive_timeout_s=3,
            naive_budget_s=8, ttfg_repeats=1, e2e_seeds=1, e2e_max_epochs=200)
    return Settings(
        quick=False, repeats=9, target_s=0.05,
        float32_runs=None, allcores_runs=(("mnist", 128), ("mnist", 1024), ("deep", 512)),
        gemm_runs=(("mnist", 128), ("mnist", 1024)),
        sweep_widths=nw.SWEEP_WIDTHS, sweep_depths=nw.SWEEP_DEPTHS,
        warm_repeats=3, cold_repeats=2, symgrad_timeout_s=120, naive_timeout_s=120,
        naive_budget_s=900, ttfg_repeats=3, e2e_seeds=5, e2e_max_epochs=300)
