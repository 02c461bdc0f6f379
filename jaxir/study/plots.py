"""The study's figures: metrics versus degradation level (Fig. 2 style) and the perception–distortion
plane (Fig. 1 style; Blau & Michaeli, CVPR 2018), from the mean-metric table."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxir import atomic  # noqa: E402
from jaxir.study.summary import level_order, mean_table, restorer_order  # noqa: E402

FIG2_FILE = "fig2_metrics_vs_degradation.png"
FIG1_FILE = "fig1_perception_distortion.png"


def save_figure(fig, path: Path, title: str | None = None, dpi: int = 100) -> str:
    """``fig`` with its title, laid out tight, written atomically as ``path`` (PNG) and closed; returns the file
    name (what reports link)."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic.replacing(path) as temp:
        fig.savefig(temp, dpi=dpi)
    plt.close(fig)
    return Path(path).name


def plot_metrics_vs_level(out: Path, rows: list[dict], levels: list[str] | None = None) -> str:
    """SSIM, PSNR and NIQE against degradation level, one line per restorer."""
    order = level_order(rows, levels)
    table = mean_table(rows)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for metric, ax, better in zip(("ssim", "psnr", "niqe"), axes, ("↑", "↑", "↓")):
        for restorer in restorer_order(rows):
            ys = [table.get((lv, restorer), {}).get(metric, float("nan")) for lv in order]
            ax.plot(range(len(order)), ys, marker="o", label=restorer)
        ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
        ax.set_title(f"{metric.upper()} {better}")
        ax.grid(alpha=0.3)
    axes[0].legend()
    save_figure(fig, out / FIG2_FILE, "Restoration quality versus degradation level (mean over images)", dpi=110)
    return FIG2_FILE


def plot_perception_distortion(out: Path, rows: list[dict], levels: list[str] | None = None) -> str:
    """Distortion (PSNR, x) against perceptual quality (NIQE, y; lower is better) per restorer and level."""
    order = level_order(rows, levels)
    table = mean_table(rows)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for restorer in restorer_order(rows):
        pts = [(lv, table[(lv, restorer)]) for lv in order if (lv, restorer) in table]
        line = ax.plot([v["psnr"] for _, v in pts], [v["niqe"] for _, v in pts], marker="o", ls=":", label=restorer)
        for lv, v in pts:
            ax.annotate(lv, (v["psnr"], v["niqe"]), fontsize=7, color=line[0].get_color(),
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("PSNR (dB) — distortion, better →")
    ax.set_ylabel("NIQE — perceptual quality, better ↓")
    ax.invert_yaxis()
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Perception–distortion plane (mean over images)")
    save_figure(fig, out / FIG1_FILE, dpi=110)
    return FIG1_FILE
