"""Fig. 5 of the study: what the latent space loses. For each CLDM's autoencoder: the clean image, its round trip
``D(mode(E(x)))``, the absolute error map, and the radial power spectra of both (:mod:`jaxir.metrics.spectrum`):
the frequencies where the round trip's spectrum falls below the image's are the detail no restoration through that
latent space can bring back.

    jaxir experiment fig5 [--models jaxir_cldm] [--full]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from experiments.table2_vae import FULL_MODELS, MODELS, VAE_MULTIPLE, autoencoder, needs_autoencoder
from jaxir.data.images import crop_to_multiple
from jaxir.metrics.spectrum import radial_power_spectrum
from jaxir.restorers import registered
from jaxir.pipelines.autoencoder import roundtrip
from jaxir.study.cells import score, to_8bit
from jaxir.study.experiment import Cell, Experiment, Options, Plan, Summary, available_restorers
from jaxir.study.plots import plt, save_figure
from jaxir.study.sweep import judge

HIGH_BAND = 0.5   # the upper half of the frequencies (k above half the Nyquist frequency)


def plan(options: Options) -> Plan:
    usable, unavailable = available_restorers(options.models or (FULL_MODELS if options.full else MODELS),
                                              needs_autoencoder)
    cells = tuple(Cell("vae_spectrum", model, None, image.name, options.seed) for model in usable
                  for image in options.images)
    return Plan(cells, unavailable, ("round trip of the ground truth cropped to a multiple of 8; spectra of the "
                                     "luminance",))


def evaluate(cell: Cell, gt: np.ndarray) -> dict:
    model, params = autoencoder(registered()[cell.model].settings.checkpoint)
    gt = crop_to_multiple(gt, VAE_MULTIPLE)
    out = to_8bit(roundtrip(model, params, gt[None]))[0]
    k, p_gt = radial_power_spectrum(gt)
    _, p_out = radial_power_spectrum(out)
    return {**score(out[None], gt[None]), "k": k.tolist(), "power_gt": p_gt.tolist(), "power_vae": p_out.tolist(),
            "images": {"ground_truth": gt, "round_trip": out}}


def _read(root: Path, path: str) -> np.ndarray:
    return np.asarray(Image.open(root / path).convert("RGB"), np.float32) / 255.0


def summarize(rows: list[dict], out: Path) -> Summary:
    root = out.parent
    plots, kept = [], []
    lines = ["| model | image | PSNR | power kept, upper half of frequencies |", "|---|---|---|---|"]
    for row in rows:
        gt, rt = _read(root, row["images"]["ground_truth"]), _read(root, row["images"]["round_trip"])
        k, p_gt, p_vae = (np.asarray(row[c]) for c in ("k", "power_gt", "power_vae"))
        high = k > HIGH_BAND * k[-1]
        ratio = float(p_vae[high].sum() / p_gt[high].sum())
        kept.append(ratio)
        lines.append(f"| {row['model']} | {row['image']} | {row['psnr']:.2f} | {ratio:.1%} |")
        fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
        error = np.abs(rt - gt).mean(axis=-1)
        for ax, (title, picture) in zip(axes[:3], (("x", gt), ("D(E(x))", rt), ("|x − D(E(x))|, ×5", None))):
            if picture is None:
                ax.imshow(np.clip(error * 5, 0, 1), cmap="magma", vmin=0, vmax=1)
            else:
                ax.imshow(picture)
            ax.set_title(title)
            ax.axis("off")
        axes[3].loglog(k, p_gt, label="x")
        axes[3].loglog(k, p_vae, label="D(E(x))")
        axes[3].axvspan(HIGH_BAND * k[-1], k[-1], color="grey", alpha=0.15, label="upper half")
        axes[3].set_xlabel("frequency (cycles per image)")
        axes[3].set_ylabel("radial power")
        axes[3].legend()
        axes[3].grid(alpha=0.3, which="both")
        plots.append(save_figure(fig, out / f"fig5_{row['model']}_{row['image']}.png",
                                 f"{row['model']} autoencoder on {row['image']}: PSNR {row['psnr']:.2f} dB, "
                                 f"upper-half power kept {ratio:.1%}", dpi=90))
    verdict, evidence = judge({"loses detail": sum(r < 1 for r in kept) / len(kept)},
                              f"power the round trip keeps in the upper half of the frequencies: "
                              f"{', '.join(f'{r:.1%}' for r in kept)}")
    return Summary("\n".join(lines), tuple(plots), verdict, evidence)


EXPERIMENT = Experiment(
    "fig5", "what the latent space loses: error maps and radial power spectra of the VAE round trip",
    "The autoencoder drops fine detail: its round trip has less power than the image at high frequencies.",
    plan, evaluate, summarize)
