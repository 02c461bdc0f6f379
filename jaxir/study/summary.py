"""Aggregating result rows: mean metrics per (degradation level, restorer), in the study's level order."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

METRICS = ("psnr", "ssim", "niqe")


def level_order(rows: list[dict], levels: list[str] | None = None) -> list[str]:
    """Levels in the configured order (falling back to first appearance)."""
    seen = list(dict.fromkeys(r["level"] for r in rows))
    return [lv for lv in (levels or seen) if lv in seen]


def restorer_order(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["restorer"] for r in rows))


def mean_table(rows: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """{(level, restorer): {metric: mean over images, "n": count, "retention": γ}}; NaN NIQE values are skipped."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["level"], r["restorer"])].append(r)
    table = {}
    for key, group in groups.items():
        entry = {m: float(np.nanmean([g[m] for g in group])) if any(np.isfinite(g[m]) for g in group) else float("nan")
                 for m in METRICS}
        entry["n"] = len(group)
        entry["retention"] = group[0]["retention"]
        table[key] = entry
    return table
