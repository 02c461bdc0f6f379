"""Table 2 of the study: the information a CLDM's autoencoder loses (eq. 5). Each CLDM's VAE round trip of the
ground truth, ``D(mode(E(x)))``, scored as a restoration, beside the CLDM's own restorations of the same images:
no restoration can be closer to x than the best image the decoder can produce (Rombach et al. 2022, Table 8,
report the same round trip for SD's autoencoders).

    jaxir experiment table2 [--models jaxir_cldm,CHECKPOINT…] [--levels sr2,sr4,blur2] [--full]
    jaxir experiment table2 --models shipped:jaxir_cldm --photos all --crop 0    # the ceiling on whole photos

``--models`` takes CLDM restorers (round trip and restorations) and checkpoints that hold an autoencoder (kind
``vae``, ``diffbir_cldm``, ``supir``: round trip only), e.g. an autoencoder just trained with ``jaxir train``.
Images larger than 256 px go through the autoencoder in overlapping 256-px tiles
(:func:`jaxir.pipelines.autoencoder.roundtrip`). PSNR/SSIM/NIQE as the study scores restorations, LPIPS (AlexNet) on the
round trips and the restorations when its weights are converted.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from jaxir.data.images import crop_to_multiple
from jaxir.degradations.levels import parse_levels
from jaxir.errors import JaxirInputError
from jaxir.metrics import lpips as lpips_metric
from jaxir.pipelines.autoencoder import check_autoencoder, load_autoencoder, roundtrip
from jaxir.restorers import registered
from jaxir.study.cells import cell_key, evaluate_cell, score, to_8bit
from jaxir.study.experiment import Cell, Experiment, Options, Plan, Summary, available_restorers
from jaxir.study.sweep import judge, mean_by
from jaxir.weights import checkpoint_path

MODELS, FULL_MODELS = ("jaxir_cldm",), ("diffbir_v2", "diffbir_v2.1", "supir_v0Q", "jaxir_cldm")
VAE = "vae_round_trip"
VAE_MULTIPLE = 8   # every VAE factor here divides it
TILE = 256         # autoencoder tile side for larger images (jaxir_cldm's attention was trained on 16² latents)


@functools.lru_cache(maxsize=2)
def autoencoder(checkpoint: str):
    """The autoencoder of a CLDM checkpoint (cached: the experiments reuse it per image)."""
    return load_autoencoder(checkpoint_path(checkpoint))


def needs_autoencoder(restorer) -> str | None:
    return None if restorer.family == "cldm" else "not a CLDM (no autoencoder)"


def autoencoder_checkpoint(name: str) -> str:
    """The checkpoint whose autoencoder a ``--models`` entry names: a CLDM restorer's, or the entry itself."""
    restorers = registered()
    return restorers[name].settings.checkpoint if name in restorers else name


def split_models(names) -> tuple[list[str], list[str], dict[str, str]]:
    """(CLDM restorers, autoencoder checkpoints, {name: why unusable}) of ``--models`` entries: a registered name is
    a restorer; any other entry must be a checkpoint (name or path) that holds an autoencoder."""
    restorers = registered()
    usable, unavailable = available_restorers([n for n in names if n in restorers], needs_autoencoder)
    checkpoints = []
    for name in (n for n in names if n not in restorers):
        try:
            check_autoencoder(checkpoint_path(name))
            checkpoints.append(name)
        except JaxirInputError as err:
            unavailable[name] = f"neither a registered restorer nor a checkpoint with an autoencoder ({err})"
    return usable, checkpoints, unavailable


def plan(options: Options) -> Plan:
    names = options.models or (FULL_MODELS if options.full else MODELS)
    usable, checkpoints, unavailable = split_models(names)
    restorers = registered()
    lpips_missing = lpips_metric.check("alex")
    suffix = "" if lpips_missing else "+lpips"
    levels = options.levels or parse_levels("sr2,sr4,blur2,blur8,blur20" if options.full else "sr2,sr4,blur2")
    cells = [Cell(VAE + suffix, model, None, image.name, options.seed)
             for model in usable + checkpoints for image in options.images]
    cells += [Cell("restore" + suffix, model, level, image, options.seed) for model in usable
              for level, image in options.inputs(levels) if restorers[model].handles(level)]
    notes = (f"VAE round trip D(mode(E(x))) of the ground truth, cropped to a multiple of 8, {TILE}-px tiles on "
             "larger images, 8-bit, scored as a restoration",)
    if lpips_missing:
        notes += (f"LPIPS not computed: {lpips_missing}",)
    return Plan(tuple(cells), unavailable, notes)


def evaluate(cell: Cell, gt: np.ndarray, lq: np.ndarray | None = None) -> dict:
    with_lpips = cell.measure.endswith("+lpips")
    if cell.measure.startswith("restore"):
        restorer = registered()[cell.model]
        result, out, _ = evaluate_cell(gt, cell.level, restorer, cell_key(cell.seed, cell.level, cell.image), lq)
        out, gt = out[None], gt[None]
    else:
        model, params = autoencoder(autoencoder_checkpoint(cell.model))
        gt = crop_to_multiple(gt, VAE_MULTIPLE)[None]
        out = to_8bit(roundtrip(model, params, gt, TILE))
        result = score(out, gt)
    if with_lpips:
        result["lpips"] = float(lpips_metric.lpips(out, gt, "alex")[0])
    return result


def summarize(rows: list[dict], out: Path) -> Summary:
    metrics = ("psnr", "ssim", "niqe") + (("lpips",) if all("lpips" in r for r in rows) else ())
    round_trips = [r for r in rows if r["measure"].startswith(VAE)]
    vae = mean_by(round_trips, ("model",), metrics)
    restored = mean_by([r for r in rows if r["measure"].startswith("restore")], ("model", "level"), metrics)
    names = {"psnr": "PSNR", "ssim": "SSIM", "niqe": "NIQE", "lpips": "LPIPS"}
    lines = [f"| model | what | {' | '.join(names[m] for m in metrics)} | PSNR below the VAE |",
             "|---|---|" + "---|" * (len(metrics) + 1)]

    def values(v: dict) -> str:
        return " | ".join(f"{v[m]:.4f}" if m in ("ssim", "lpips") else f"{v[m]:.2f}" for m in metrics)

    below, parts = [], []
    for (model,), v in vae.items():
        lines.append(f"| {model} | VAE round trip of the GT | {values(v)} | – |")
        for (m, level), r in restored.items():
            if m == model:
                gap = v["psnr"] - r["psnr"]
                below.append(gap > 0)
                parts.append(f"{model} {level}: {r['psnr']:.2f} dB against its VAE's {v['psnr']:.2f} ({gap:+.2f})")
                lines.append(f"| {model} | restoration, {level} | {values(r)} | {gap:.2f} |")
    images = list(dict.fromkeys(r["image"] for r in round_trips))
    lines += ["", "VAE round trip, PSNR per image:", "", f"| model | {' | '.join(images)} |",
              "|---|" + "---|" * len(images)]
    for (model,) in vae:
        mine = {r["image"]: r["psnr"] for r in round_trips if r["model"] == model}
        lines.append(f"| {model} | " + " | ".join(f"{mine[i]:.2f}" if i in mine else "–" for i in images) + " |")
    if not below:
        return Summary("\n".join(lines), (), "cannot be tested", "no restoration rows")
    return Summary("\n".join(lines), (), *judge({"below": sum(below) / len(below)}, "; ".join(parts)))


EXPERIMENT = Experiment(
    "table2", "the VAE's information loss: autoencoder round trip against the CLDM's restorations",
    "A CLDM's fidelity is capped by its VAE: its restorations score below its autoencoder's round trip of the "
    "ground truth.", plan, evaluate, summarize)
