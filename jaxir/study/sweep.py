"""Sweeps of one restorer setting (start timestep, steps, guidance and CFG scales, η, …) as experiments: cells for
every value × model × level × image, scored as the study scores restorations, the image mean of each metric
against the value plotted per task, and a verdict from a rule stated in the report.

Values that a restorer traces (start timestep, scales, η) reuse one compiled program per image shape; a value that
changes the program's shape (the step count) compiles once per value (the report states the compilations).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxir.degradations.levels import parse_levels
from jaxir.restorers import registered
from jaxir.study.experiment import Cell, Experiment, Options, Plan, Summary, available_restorers, restore_and_score
from jaxir.study.plots import plt, save_figure

# the restorer families the study calls traditional (its Real-ESRGAN, SwinIR, Stripformer; jaxir's classical and
# small CNN), against which CLDMs are compared; one-step diffusion restorers (family "onestep") are neither
TRADITIONAL = ("classical", "learned")
METRICS = (("ssim", "SSIM ↑"), ("psnr", "PSNR (dB) ↑"), ("niqe", "NIQE ↓"))


def mean_by(rows: Sequence[dict], keys: Sequence[str], metrics: Sequence[str] = ("psnr", "ssim", "niqe")) -> dict:
    """{tuple of ``keys`` values: {metric: mean over the rows with those values}}."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return {group: {m: float(np.mean([r[m] for r in members])) for m in metrics}
            for group, members in groups.items()}


def rank_correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's ρ (ranks without tie correction; 0 for fewer than 3 points or a constant series)."""
    if len(xs) < 3 or np.ptp(ys) == 0:
        return 0.0
    rx, ry = np.argsort(np.argsort(xs)), np.argsort(np.argsort(ys))
    return float(np.corrcoef(rx, ry)[0, 1])


def series(rows: Sequence[dict], x: str) -> dict[tuple[str, str], dict[Any, dict]]:
    """{(model, level): {x value: image-mean metrics}} of a sweep's rows."""
    table = mean_by(rows, ("model", "level", x))
    out: dict[tuple[str, str], dict[Any, dict]] = {}
    for (model, level, value), metrics in table.items():
        out.setdefault((model, level), {})[value] = metrics
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def sweep_table(rows: Sequence[dict], x: str, label: str) -> str:
    """Markdown: one line per x value, one column per (model, level): SSIM / PSNR / NIQE, image means."""
    data = series(rows, x)
    columns = list(data)
    values = sorted({v for points in data.values() for v in points})
    lines = [f"| {label} | " + " | ".join(f"{m} {lv} SSIM / PSNR / NIQE" for m, lv in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for value in values:
        cells = []
        for column in columns:
            m = data[column].get(value)
            cells.append(f"{m['ssim']:.4f} / {m['psnr']:.2f} / {m['niqe']:.2f}" if m else "–")
        lines.append(f"| {value} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sweep(rows: Sequence[dict], x: str, label: str, out: Path, filename: str, title: str,
               log_x: bool = False) -> str:
    """SSIM, PSNR and NIQE (rows of panels) against ``x``, one column of panels per task, one line per
    (model, level); image means."""
    data = series(rows, x)
    tasks = sorted({row["task"] for row in rows})
    level_task = {row["level"]: row["task"] for row in rows}
    fig, axes = plt.subplots(len(METRICS), len(tasks), figsize=(5.2 * len(tasks), 3.2 * len(METRICS)),
                             squeeze=False)
    for col, task in enumerate(tasks):
        for row_index, (metric, name) in enumerate(METRICS):
            ax = axes[row_index, col]
            for (model, level), points in data.items():
                if level_task[level] != task:
                    continue
                xs = list(points)
                ax.plot(xs, [points[v][metric] for v in xs], marker="o", label=f"{model} {level}")
            if log_x:
                ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            if row_index == 0:
                ax.set_title(f"task: {task}")
                ax.legend(fontsize=7)
    save_figure(fig, out / filename, title)
    return filename


@dataclasses.dataclass(frozen=True)
class SettingSweep:
    """A sweep of ``setting`` over ``values`` (``full_values`` with ``--full``) on the restorers that have that
    setting; ``fixed``: settings every cell also sets (e.g. starting from the condition for a start-timestep
    sweep); ``verdict``: the rule that judges the claim from :func:`series`, returning (verdict, evidence)."""

    name: str
    title: str
    claim: str
    setting: str
    values: tuple
    full_values: tuple
    label: str
    verdict: Callable[[dict], tuple[str, str]]
    fixed: tuple[tuple[str, Any], ...] = ()
    models: tuple[str, ...] = ("jaxir_cldm",)
    full_models: tuple[str, ...] = ("diffbir_v2", "diffbir_v2.1", "supir_v0Q", "jaxir_cldm")
    levels: str = "sr2,sr4,blur2"
    full_levels: str = "sr2,sr4,blur1,blur2,blur4,blur8,blur20"
    log_x: bool = False

    def missing_settings(self, restorer) -> str | None:
        missing = [s for s in (self.setting, *dict(self.fixed)) if s not in restorer.setting_names()]
        return f"has no setting {', '.join(missing)} (this sweep needs it)" if missing else None

    def plan(self, options: Options) -> Plan:
        names = options.models or (self.full_models if options.full else self.models)
        usable, unavailable = available_restorers(names, self.missing_settings)
        restorers = registered()
        levels = options.levels or parse_levels(self.full_levels if options.full else self.levels)
        values = self.full_values if options.full else self.values
        cells = tuple(Cell("restore", model, level, image.name, options.seed,
                           tuple(sorted({**dict(self.fixed), self.setting: value}.items())),
                           ((self.setting, value),))
                      for model in usable for level in levels if restorers[model].handles(level)
                      for value in values for image in options.images)
        notes = (f"{self.setting} ∈ {list(values)}" + (f"; also set: {dict(self.fixed)}" if self.fixed else ""),)
        return Plan(cells, unavailable, notes)

    def summarize(self, rows: list[dict], out: Path) -> Summary:
        plot = plot_sweep(rows, self.setting, self.label, out, f"{self.name}.png", self.title, self.log_x)
        verdict, evidence = self.verdict(series(rows, self.setting))
        return Summary(sweep_table(rows, self.setting, self.label), (plot,), verdict, evidence)

    def experiment(self) -> Experiment:
        return Experiment(self.name, self.title, self.claim, self.plan, restore_and_score, self.summarize)


def judge(fractions: dict[str, float], evidence: str) -> tuple[str, str]:
    """"holds" when every criterion (name → the fraction of series that meet it) is met by all series, "partly
    holds" when each is met by at least half, else "does not hold"."""
    if all(f == 1.0 for f in fractions.values()):
        return "holds", evidence
    if all(f >= 0.5 for f in fractions.values()):
        return "partly holds", evidence
    return "does not hold", evidence


def trend_verdict(setting: str, direction: int) -> Callable[[dict], tuple[str, str]]:
    """The rule "SSIM falls (``direction`` −1) / rises (+1) as ``setting`` rises": met by a (model, level) series
    whose Spearman ρ of image-mean SSIM against the value has that sign (a flat series — the setting has no
    effect on that model — does not meet it); judged by :func:`judge`."""
    word = "falls" if direction < 0 else "rises"

    def verdict(data: dict) -> tuple[str, str]:
        rhos = {k: rank_correlation(list(p), [m["ssim"] for m in p.values()]) for k, p in data.items()}
        ends = "; ".join(f"{m} {lv}: SSIM {p[min(p)]['ssim']:.4f} → {p[max(p)]['ssim']:.4f}, NIQE "
                         f"{p[min(p)]['niqe']:.2f} → {p[max(p)]['niqe']:.2f} from {min(p)} to {max(p)}"
                         for (m, lv), p in data.items())
        met = sum(np.sign(r) == np.sign(direction) for r in rhos.values()) / len(rhos)
        return judge({f"ssim {word}": met}, f"Spearman ρ of SSIM against {setting} per model and level: "
                     f"{', '.join(f'{r:+.2f}' for r in rhos.values())}; {ends}")

    return verdict
