"""Fig. 8 of the study: one network evaluation against many. From the same starting noise level (the stage-1
latent noised to ``t_start``), the one-step x0 prediction (the sampler run for one step) is compared with the
restorer's full multi-step sampling; both start from the same noise (the cell's key). One-step diffusion
restorers trained for it (HYPIR, OSEDiff, PiSA-SR: family ``onestep``) join as points at their own timestep, when
their weights are converted.

    jaxir experiment fig8 [--models jaxir_cldm,hypir,osediff,pisa_sr] [--levels sr2,sr4,blur2] [--full]
"""

from __future__ import annotations

from pathlib import Path

from jaxir.checkpoints import read_config
from jaxir.degradations.levels import parse_levels
from jaxir.restorers import registered
from jaxir.study.experiment import Cell, Experiment, Options, Plan, Summary, available_restorers, restore_and_score
from jaxir.study.sweep import judge, plot_sweep, sweep_table
from jaxir.weights import checkpoint_path

T_STARTS = (100, 250, 400, 600, 800)
FULL_T_STARTS = (100, 200, 300, 400, 500, 600, 700, 800, 900, 999)
MODELS, FULL_MODELS = ("jaxir_cldm",), ("diffbir_v2", "diffbir_v2.1", "jaxir_cldm")
SSIM_MARGIN = 0.01
ONE_STEP = "onestep"   # the family of the one-step diffusion restorers


def one_step_restorers() -> tuple[str, ...]:
    return tuple(name for name, r in registered().items() if r.family == ONE_STEP)


def model_timestep(restorer) -> int:
    """The UNet timestep of a one-step restorer's checkpoint (read from its config, nothing loaded)."""
    return read_config(checkpoint_path(restorer.settings.checkpoint))[1].model_t


def plan(options: Options) -> Plan:
    defaults = (FULL_MODELS if options.full else MODELS) + one_step_restorers()
    usable, unavailable = available_restorers(
        options.models or defaults,
        lambda r: None if "t_start" in r.setting_names() or r.family == ONE_STEP
        else "has no start timestep (t_start) to start both from")
    restorers = registered()
    levels = options.levels or parse_levels("sr2,sr4,blur2,blur8,blur20" if options.full else "sr2,sr4,blur2")
    cells = []
    for model in usable:
        restorer = restorers[model]
        if restorer.family == ONE_STEP:
            point = (("t_start", model_timestep(restorer)), ("evaluations", 1))
            cells += [Cell("restore", model, level, image, options.seed, (), point)
                      for level, image in options.inputs(levels) if restorer.handles(level)]
            continue
        for level in (lv for lv in levels if restorer.handles(lv)):
            for t in FULL_T_STARTS if options.full else T_STARTS:
                for evaluations in dict.fromkeys((1, restorer.settings.steps)):
                    settings = {"start_from_condition": True, "t_start": t, "steps": evaluations}
                    cells += [Cell("restore", model, level, image.name, options.seed, tuple(sorted(settings.items())),
                                   (("t_start", t), ("evaluations", evaluations))) for image in options.images]
    return Plan(tuple(cells), unavailable, ("one step = the restorer's sampler run for a single step from t_start "
                                            "(its x0 prediction); many = its default step count; one-step "
                                            "restorers (HYPIR, OSEDiff, PiSA-SR) at their own timestep",))


def trained_one_step(rows: list[dict]) -> str:
    """The one-step restorers' mean SSIM per level, as a clause of the evidence ("" without them)."""
    trained: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r["model"] in one_step_restorers():
            trained.setdefault((r["model"], r["level"]), []).append(r["ssim"])
    return "; one-step restorers: " + ", ".join(f"{model} {level} SSIM {sum(v) / len(v):.4f}"
                                                for (model, level), v in trained.items()) if trained else ""


def _labelled(rows: list[dict]) -> list[dict]:
    return [{**r, "model": f"{r['model']} ({r['evaluations']} step{'s' * (r['evaluations'] > 1)})"} for r in rows]


def summarize(rows: list[dict], out: Path) -> Summary:
    labelled = _labelled(rows)
    plot = plot_sweep(labelled, "t_start", "start timestep t_start", out, "fig8.png",
                      "one-step x0 prediction against multi-step sampling from the same start")
    by_eval = {}
    for r in rows:
        by_eval.setdefault((r["model"], r["level"], r["t_start"], r["evaluations"]), []).append(r["ssim"])
    gaps = []
    for (model, level, t, evaluations), values in by_eval.items():
        many = max(e for (m, lv, tt, e) in by_eval if (m, lv, tt) == (model, level, t))
        if evaluations == 1 and many > 1:
            one, multi = sum(values) / len(values), sum(by_eval[model, level, t, many]) / len(values)
            gaps.append((model, level, t, one - multi))
    if not gaps:
        return Summary(sweep_table(labelled, "t_start", "t_start"), (plot,), "cannot be tested",
                       "no restorer with more than one step" + trained_one_step(rows))
    ok = sum(g >= -SSIM_MARGIN for *_, g in gaps) / len(gaps)
    worst = min(gaps, key=lambda g: g[3])
    evidence = (f"one-step minus multi-step SSIM over {len(gaps)} (model, level, t_start) points: mean "
                f"{sum(g[3] for g in gaps) / len(gaps):+.4f}, worst {worst[3]:+.4f} ({worst[0]} {worst[1]} "
                f"t={worst[2]}); as faithful = no more than {SSIM_MARGIN} below")
    evidence += trained_one_step(rows)
    return Summary(sweep_table(labelled, "t_start", "t_start"), (plot,), *judge({"as faithful": ok}, evidence))


EXPERIMENT = Experiment(
    "fig8", "one-step x0 prediction against multi-step sampling from the same starting noise",
    "A single network evaluation (the x0 prediction from the starting noise level) restores about as faithfully "
    "as full multi-step sampling from the same level.", plan, restore_and_score, summarize)
