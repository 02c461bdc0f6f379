"""Table 2 of the study: the information a CLDM's autoencoder loses (eq. 5). Each CLDM's VAE round trip of the
ground truth, ``D(mode(E(x)))``, scored as a restoration, beside the CLDM's own restorations of the same images:
no restoration can be closer to x than the best image the decoder can produce.

    jaxir experiment table2 [--models jaxir_cldm] [--levels sr2,sr4,blur2] [--full]
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from jaxir.data.images import crop_to_multiple
from jaxir.degradations.levels import parse_levels
from jaxir.metrics import lpips as lpips_metric
from jaxir.pipelines.autoencoder import load_autoencoder
from jaxir.restorers import registered
from jaxir.study.ceiling import roundtrip
from jaxir.study.cells import score, to_8bit
from jaxir.study.experiment import Cell, Experiment, Options, Plan, Summary, available_restorers, restore_and_score
from jaxir.study.sweep import judge, mean_by
from jaxir.weights import checkpoint_path

MODELS, FULL_MODELS = ("jaxir_cldm",), ("diffbir_v2", "diffbir_v2.1", "supir_v0Q", "jaxir_cldm")
VAE, VAE_LPIPS = "vae_round_trip", "vae_round_trip+lpips"
VAE_MULTIPLE = 8   # every VAE factor here divides it


@functools.lru_cache(maxsize=2)
def autoencoder(checkpoint: str):
    """The autoencoder of a CLDM checkpoint (cached: the experiments reuse it per image)."""
    return load_autoencoder(checkpoint_path(checkpoint))


def needs_autoencoder(restorer) -> str | None:
    return None if restorer.family == "cldm" else "not a CLDM (no autoencoder)"


def plan(options: Options) -> Plan:
    names = options.models or (FULL_MODELS if options.full else MODELS)
    usable, unavailable = available_restorers(names, needs_autoencoder)
    restorers = registered()
    lpips_missing = lpips_metric.check("alex")
    measure = VAE if lpips_missing else VAE_LPIPS
    levels = options.levels or parse_levels("sr2,sr4,blur2,blur8,blur20" if options.full else "sr2,sr4,blur2")
    cells = [Cell(measure, model, None, image.name, options.seed) for model in usable for image in options.images]
    cells += [Cell("restore", model, level, image.name, options.seed) for model in usable for level in levels
              if restorers[model].handles(level) for image in options.images]
    notes = ("VAE round trip D(mode(E(x))) of the ground truth, cropped to a multiple of 8, 8-bit, scored as a "
             "restoration",)
    if lpips_missing:
        notes += (f"LPIPS not computed: {lpips_missing}",)
    return Plan(tuple(cells), unavailable, notes)


def evaluate(cell: Cell, gt: np.ndarray) -> dict:
    if cell.measure == "restore":
        return restore_and_score(cell, gt)
    model, params = autoencoder(registered()[cell.model].settings.checkpoint)
    gt = crop_to_multiple(gt, VAE_MULTIPLE)
    out = to_8bit(roundtrip(model, params, gt[None]))
    result = score(out, gt[None])
    if cell.measure == VAE_LPIPS:
        result["lpips"] = float(lpips_metric.lpips(out, gt[None], "alex")[0])
    return result


def summarize(rows: list[dict], out: Path) -> Summary:
    vae = mean_by([r for r in rows if r["measure"] != "restore"], ("model",))
    restored = mean_by([r for r in rows if r["measure"] == "restore"], ("model", "level"))
    lines = ["| model | what | PSNR | SSIM | NIQE | PSNR below the VAE |", "|---|---|---|---|---|---|"]
    below, parts = [], []
    for (model,), v in vae.items():
        lines.append(f"| {model} | VAE round trip of the GT | {v['psnr']:.2f} | {v['ssim']:.4f} | {v['niqe']:.2f} "
                     "| – |")
        for (m, level), r in restored.items():
            if m == model:
                gap = v["psnr"] - r["psnr"]
                below.append(gap > 0)
                parts.append(f"{model} {level}: {r['psnr']:.2f} dB against its VAE's {v['psnr']:.2f} ({gap:+.2f})")
                lines.append(f"| {model} | restoration, {level} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                             f"{r['niqe']:.2f} | {gap:.2f} |")
    if not below:
        return Summary("\n".join(lines), (), "cannot be tested", "no restoration rows")
    return Summary("\n".join(lines), (), *judge({"below": sum(below) / len(below)}, "; ".join(parts)))


EXPERIMENT = Experiment(
    "table2", "the VAE's information loss: autoencoder round trip against the CLDM's restorations",
    "A CLDM's fidelity is capped by its VAE: its restorations score below its autoencoder's round trip of the "
    "ground truth.", plan, evaluate, summarize)
