"""The study's analyses, one module per figure or table (and its future-work sweeps), run by ``jaxir experiment
NAME`` on the shared runner :mod:`jaxir.study.experiment`. Each module exports ``EXPERIMENT``.

Offline defaults: the shipped models (``jaxir_cnn``, ``jaxir_cldm``) on centre crops of the bundled photos
(:data:`DEFAULT_PHOTOS`, :data:`DEFAULT_CROP` pixels a side), so that each experiment finishes in minutes on a
2-core CPU; ``--full`` selects the study's models, levels and sampler values (converted checkpoints needed,
listed as unavailable otherwise).
"""

from __future__ import annotations

import importlib

from jaxir.data.images import ImageRecord
from jaxir.errors import JaxirInputError

# name -> module, in the order of the study (then its future-work list)
MODULES = {
    "fig1": "fig1_perception_distortion",
    "fig2": "fig2_degradation_levels",
    "table1": "table1_alignment",
    "table2": "table2_vae",
    "table3": "table3_alignment",
    "fig4": "fig4_cost",
    "fig5": "fig5_latent_loss",
    "fig6": "fig6_start_timestep",
    "fig7": "fig7_steps",
    "fig8": "fig8_one_step",
    "fig9": "fig9_x0_trajectory",
    "visual": "visual",
    "guidance": "future_guidance_scale",
    "cfg": "future_cfg_scale",
    "noise": "future_noise_injection",
    "gamma": "future_gamma_start",
}
DEFAULT_PHOTOS = ("astronaut", "camera", "chelsea", "coffee")
DEFAULT_CROP = 192


def names() -> list[str]:
    return list(MODULES)


def get(name: str):
    """The :class:`~jaxir.study.experiment.Experiment` called ``name``."""
    if name not in MODULES:
        raise JaxirInputError(f"unknown experiment {name!r}; choose from {', '.join(MODULES)} or all")
    return importlib.import_module(f"experiments.{MODULES[name]}").EXPERIMENT


def centre_crop(record: ImageRecord, side: int) -> ImageRecord:
    """The central ``side``² of an image (the whole image where it is smaller)."""
    h, w = record.image.shape[:2]
    top, left = max((h - side) // 2, 0), max((w - side) // 2, 0)
    image = record.image[top:top + side, left:left + side]
    return ImageRecord(record.name, image, f"{record.source}, centre {image.shape[0]}×{image.shape[1]}")


def run(selected: list[str], options, root, progress: bool = True) -> tuple[list, dict[str, str]]:
    """Run the experiments ``selected`` (names, or ``["all"]``) into ``root`` one after another, then rewrite the
    overview ``root/report.md``; returns their :class:`~jaxir.study.experiment.ExperimentRun` and {name: error} of
    those that stopped on bad input (a setting a model refuses, …): one failing experiment never costs the others."""
    from jaxir.study.experiment import run_experiment, write_overview

    chosen = names() if selected == ["all"] else selected
    experiments = [get(name) for name in chosen]   # every name checked before the first cell
    runs, failed = [], {}
    for experiment in experiments:
        try:
            runs.append(run_experiment(experiment, options, root, progress=progress))
        except JaxirInputError as err:
            failed[experiment.name] = str(err)
    write_overview(root, names())
    return runs, failed
