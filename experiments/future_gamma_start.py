"""Beyond the study (its future-work list): a start timestep chosen from the degradation level. The condition
latent of an input with retention γ (eq. 12) keeps about γ of the signal; the forward process keeps √ᾱ_t of it at
timestep t (eq. 8). The rule starts where the two agree, ``t(γ) = argmin_t |√ᾱ_t − γ|`` on the restorer's own
schedule (at least ``MIN_T_START``), and is compared with fixed start timesteps on the same cells.

    jaxir experiment gamma [--models jaxir_cldm] [--levels sr2,sr4,sr2+noise0.1] [--full]

Blur keeps γ = 1 at every σ, so the rule gives no blur level a different start: it is swept on SR and noise
levels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxir.degradations.levels import parse_levels
from jaxir.pipelines.diffbir import process_alphas_cumprod
from jaxir.restorers import registered
from jaxir.restorers.base import load_checkpoint
from jaxir.restorers.cldm_family import diffbir_pipeline
from jaxir.study.experiment import Cell, Experiment, Options, Plan, Summary, available_restorers, restore_and_score
from jaxir.study.sweep import judge, plot_sweep, series, sweep_table

FIXED = (100, 250, 500, 800)
MIN_T_START = 20
SSIM_MARGIN = 0.01


def gamma_t_start(alphas_cumprod: np.ndarray, gamma: float) -> int:
    """``argmin_t |√ᾱ_t − γ|``, at least :data:`MIN_T_START` (module docstring)."""
    return max(int(np.argmin(np.abs(np.sqrt(np.asarray(alphas_cumprod, np.float64)) - gamma))), MIN_T_START)


def plan(options: Options) -> Plan:
    usable, unavailable = available_restorers(
        options.models or ("jaxir_cldm",),
        lambda r: None if "t_start" in r.setting_names() and r.build is diffbir_pipeline
        else "has no start timestep on a DiffBIR checkpoint's schedule")
    restorers = registered()
    levels = options.levels or parse_levels("sr2,sr4,sr2+noise0.1,sr4+noise0.05" if options.full else "sr2,sr4")
    cells, rules = [], []
    for model in usable:
        process = load_checkpoint(restorers[model].settings.checkpoint)[0].config.process
        alphas = process_alphas_cumprod(process)
        for level in (lv for lv in levels if restorers[model].handles(lv)):
            chosen = gamma_t_start(alphas, level.retention)
            rules.append(f"{model} {level.label}: γ = {level.retention:g} → t = {chosen}")
            for t, rule in [(chosen, "γ"), *((t, "fixed") for t in FIXED if t != chosen)]:
                settings = (("start_from_condition", True), ("t_start", t))
                cells += [Cell("restore", model, level, image.name, options.seed, settings,
                               (("t_start", t), ("rule", rule))) for image in options.images]
    return Plan(tuple(cells), unavailable, (f"fixed starts {list(FIXED)}; γ rule: {'; '.join(rules)}",))


def summarize(rows: list[dict], out: Path) -> Summary:
    plot = plot_sweep(rows, "t_start", "start timestep t_start", out, "gamma.png",
                      "fixed start timesteps and the γ-chosen one (see the report for which)")
    data = series(rows, "t_start")
    chosen = {(r["model"], r["level"]): r["t_start"] for r in rows if r["rule"] == "γ"}
    good, parts = [], []
    for key, points in data.items():
        rule = points[chosen[key]]["ssim"]
        best_t = max((t for t in points if t != chosen[key]), key=lambda t: points[t]["ssim"])
        good.append(rule >= points[best_t]["ssim"] - SSIM_MARGIN)
        parts.append(f"{key[0]} {key[1]}: γ-chosen t={chosen[key]} SSIM {rule:.4f}, best fixed t={best_t} "
                     f"{points[best_t]['ssim']:.4f}")
    return Summary(sweep_table(rows, "t_start", "t_start"), (plot,),
                   *judge({"as good": sum(good) / len(good)}, f"{'; '.join(parts)} (as good = within {SSIM_MARGIN})"))


EXPERIMENT = Experiment(
    "gamma", "a start timestep chosen from the degradation level γ (future work)",
    "Starting where the noise matches the information the degradation kept (√ᾱ_t = γ) is as faithful as the best "
    "fixed start timestep.", plan, restore_and_score, summarize)
