"""Fig. 4 of the study: what each restorer costs against what it delivers — parameters (from the checkpoints'
configs: the CLDM's own, its stage 1 included) and measured latency per image (wall time of degradation +
restoration, compilation and checkpoint loading excluded: :class:`jaxir.cost.Meter`) against SSIM and NIQE, one
point per restorer and task (image and level means).

    jaxir experiment fig4 [--models …] [--levels sr2,sr4,blur2] [--full]

Latency is that of the machine and image size of the run that computed the cell (cells are shared between
experiments); the report states the image sizes.
"""

from __future__ import annotations

from pathlib import Path

from jaxir.degradations.levels import parse_levels
from jaxir.restorers import registered
from jaxir.study.experiment import Cell, Experiment, Options, Plan, Summary, available_restorers, restore_and_score
from jaxir.study.plots import plt, save_figure
from jaxir.study.sweep import TRADITIONAL, judge, mean_by


def plan(options: Options) -> Plan:
    usable, unavailable = available_restorers(options.models or list(registered()))
    restorers = registered()
    levels = options.levels or parse_levels("sr2,sr4,blur2,blur8" if options.full else "sr2,sr4,blur2")
    cells = tuple(Cell("restore", model, level, image, options.seed, (),
                       (("family", restorers[model].family), ("parameters", restorers[model].parameter_count(level))))
                  for model in usable for level, image in options.inputs(levels) if restorers[model].handles(level))
    sizes = sorted({f"{r.image.shape[0]}×{r.image.shape[1]}" for r in options.records()})
    return Plan(cells, unavailable, (f"latency: seconds per image of {', '.join(sizes)} pixels, compilation and "
                                     "loading excluded",))


def summarize(rows: list[dict], out: Path) -> Summary:
    table = mean_by(rows, ("task", "model"), ("ssim", "psnr", "niqe", "seconds", "parameters"))
    family = {r["model"]: r["family"] for r in rows}
    tasks = sorted({task for task, _ in table})
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    panels = (("parameters", "ssim", "parameters (log)", "SSIM ↑"), ("seconds", "ssim", "seconds per image (log)",
              "SSIM ↑"), ("seconds", "niqe", "seconds per image (log)", "NIQE ↓"))
    markers = dict(zip(tasks, "osD^v"))
    colours = {m: f"C{i}" for i, m in enumerate(sorted(family))}
    for ax, (x, y, x_label, y_label) in zip(axes, panels):
        for (task, model), m in table.items():
            ax.scatter(max(m[x], 1e-4 if x == "seconds" else 1), m[y], marker=markers[task], color=colours[model],
                       label=f"{model} ({task})")
            ax.annotate(model, (max(m[x], 1e-4 if x == "seconds" else 1), m[y]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    save_figure(fig, out / "fig4.png", "cost against quality (classical restorers drawn at 1 parameter)")
    lines = ["| task | model | parameters | seconds / image | SSIM | PSNR | NIQE |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {t} | {m} | {v['parameters']:,.0f} | {v['seconds']:.3f} | {v['ssim']:.4f} | {v['psnr']:.2f} | "
              f"{v['niqe']:.2f} |" for (t, m), v in sorted(table.items())]
    dearer, parts = [], []
    for task in tasks:
        cldms = [m for t, m in table if t == task and family[m] == "cldm"]
        others = [m for t, m in table if t == task and family[m] in TRADITIONAL]
        if not others:
            continue
        best = max(others, key=lambda m: table[task, m]["ssim"])
        for cldm in cldms:
            c, b = table[task, cldm], table[task, best]
            dearer.append(c["parameters"] > b["parameters"] and c["seconds"] > b["seconds"] and c["ssim"] < b["ssim"])
            parts.append(f"{task}: {cldm} {c['parameters']:,.0f} parameters, {c['seconds']:.2f} s, SSIM "
                         f"{c['ssim']:.4f} against {best} {b['parameters']:,.0f}, {b['seconds']:.3f} s, "
                         f"{b['ssim']:.4f}")
    if not dearer:
        return Summary("\n".join(lines), ("fig4.png",), "cannot be tested",
                       "needs a CLDM and a traditional restorer on the same task")
    return Summary("\n".join(lines), ("fig4.png",), *judge({"dearer and worse": sum(dearer) / len(dearer)},
                                                          "; ".join(parts)))


EXPERIMENT = Experiment(
    "fig4", "cost (parameters, latency) against quality",
    "CLDMs cost far more (parameters, time per image) than traditional restorers and buy no fidelity with it: "
    "the most faithful traditional restorer is cheaper and has higher SSIM.", plan, restore_and_score, summarize)
