"""The study's markdown report: settings, the mean-metric table per level and restorer, and the plots."""

from __future__ import annotations

from pathlib import Path

from jaxir import atomic
from jaxir.study.summary import level_order, mean_table, restorer_order

REPORT_FILE = "report.md"


def _fmt(value: float, digits: int) -> str:
    return "–" if value != value else f"{value:.{digits}f}"


def write_report(out: Path, run, config_json: dict, level_labels: list[str],
                 unavailable: dict[str, str], plots: list[str], skipped=()) -> Path:
    """Write ``report.md`` (atomically). ``run``: the :class:`jaxir.study.runner.StudyRun` of this invocation (its
    rows include earlier runs'); ``skipped``: the images left out, as :func:`jaxir.study.inputs.screen_images`
    returns them."""
    rows = run.rows
    levels = level_order(rows, level_labels)
    restorers = restorer_order(rows)
    table = mean_table(rows)
    images = sorted({r["image"] for r in rows})
    lines = [
        "# jaxir study: restoration quality versus degradation level", "",
        f"Images ({len(images)}): {', '.join(images)}. Clean images are cropped to a multiple of "
        f"{config_json['crop_multiple']} pixels. Seed {config_json['seed']}.", "",
        "Metrics: PSNR (dB, ↑) and SSIM (↑) on the BT.601 Y channel of the 8-bit output with `crop_border` = scale "
        "(BasicSR conventions); NIQE (↓) as the MATLAB release, on the 8-bit RGB output. "
        "γ = (1 − β)/α is the information retention rate (eq. 12). Each entry is the mean over images.", "",
        "| level | γ | " + " | ".join(f"{r} PSNR | {r} SSIM | {r} NIQE" for r in restorers) + " |",
        "|---|---|" + "---|---|---|" * len(restorers),
    ]
    for level in levels:
        cells = []
        retention = next(v["retention"] for (lv, _), v in table.items() if lv == level)
        for r in restorers:
            v = table.get((level, r))
            cells += ["n/a"] * 3 if v is None else [_fmt(v["psnr"], 2), _fmt(v["ssim"], 4), _fmt(v["niqe"], 3)]
        lines.append(f"| {level} | {retention:.3g} | " + " | ".join(cells) + " |")
    lines.append("")
    if unavailable:
        lines += ["## Restorers not run", ""]
        lines += [f"- **{name}**: {reason}" for name, reason in unavailable.items()]
        lines.append("")
    if skipped:
        lines += ["## Images skipped", "", "Left out before any cell ran (`--skip-bad-images`):", ""]
        lines += [f"- `{bad.source}`: {bad.reason}" for bad in skipped]
        lines.append("")
    lines += _cost_lines(run, restorers) + _settings_lines(config_json.get("settings", {}))
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += ["Per-image values: `results.csv`.", ""]
    path = out / REPORT_FILE
    atomic.write_text(path, "\n".join(lines))
    return path


def _cost_lines(run, restorers: list[str]) -> list[str]:
    """Time per restorer: the mean of the cells' ``seconds`` (compilation and loading excluded), and what this run
    spent compiling and loading checkpoints apart from it."""
    lines = ["## Time", "",
             f"This run: {run.wall_seconds:.1f} s wall, {run.totals.compilations} compilations "
             f"({run.totals.compile_seconds:.1f} s tracing and compiling), {run.totals.loads} checkpoint loads "
             f"({run.totals.load_seconds:.1f} s). A cell's `seconds` is degradation + restoration without them.", "",
             "| restorer | cells | mean seconds per cell | compilations (this run) | compiling s | loading s |",
             "|---|---|---|---|---|---|"]
    for name in restorers:
        cells = [r["seconds"] for r in run.rows if r["restorer"] == name]
        cost = run.costs.get(name)
        extra = (f"{cost.compilations} | {cost.compile_seconds:.1f} | {cost.load_seconds:.1f}" if cost
                 else "0 | 0.0 | 0.0")
        lines.append(f"| {name} | {len(cells)} | {sum(cells) / max(len(cells), 1):.3f} | {extra} |")
    return lines + [""]


def _settings_lines(settings: dict) -> list[str]:
    """Every restorer's effective settings (``study.json`` holds the same)."""
    lines = ["## Restorer settings", ""]
    for name, values in settings.items():
        text = ", ".join(f"{k}={v!r}" for k, v in values.items()) if values else "none"
        lines.append(f"- **{name}**: {text}")
    return lines + [""]
