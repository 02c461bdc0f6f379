"""One factory per CLDM pipeline family: a registered restorer that runs :class:`~jaxir.pipelines.diffbir.DiffBIR`
(DiffBIR's releases, jaxir's small CLDM) or :class:`~jaxir.pipelines.supir.SUPIRPipeline` (SUPIR's releases).

A family's restorer settings are its pipeline's settings plus the ``checkpoint`` they run on (a name under
``$JAXIR_CHECKPOINTS`` or a path); every sampler setting is a setting of the restorer
(``restorer.configure(t_start=400, steps=20)``, ``--set``). DiffBIR's ``stage1`` names the registered restorers of
its first stage per task, handed to the pipeline as restore functions; ``check`` reports whichever is missing.
SUPIR's stage 1 is its own degradation-robust encoder; its ``latent_tile`` / ``latent_tile_stride`` give the tiled
sampler's tile in image pixels (the stride defaulting to half the tile), converted to the latent pixels of
``tile_size`` / ``tile_stride`` with the model's VAE factor. Sample b of a call draws from ``fold_in(key,
sample_ids[b])``.
"""

from __future__ import annotations

import dataclasses

from jaxir.errors import JaxirInputError
from jaxir.pipelines.diffbir import DiffBIR, DiffBIRSettings
from jaxir.pipelines.supir import SUPIRPipeline, SUPIRSettings
from jaxir.restorers.base import Restorer, get, load_checkpoint, load_timed, register
from jaxir.weights import missing_reason

# the CLI's generic sampler flags → SUPIR's names for them
SUPIR_ALIASES = (("pos_prompt", "a_prompt"), ("neg_prompt", "n_prompt"), ("min_short_edge", "min_size"))


@dataclasses.dataclass(frozen=True)
class DiffBIRRestorerSettings(DiffBIRSettings):
    """:class:`DiffBIRSettings` and the checkpoint they run on."""

    checkpoint: str = ""


@dataclasses.dataclass(frozen=True)
class SUPIRRestorerSettings(SUPIRSettings):
    """:class:`SUPIRSettings`, the checkpoint, and the sampling tile in image pixels (0: ``tile_size`` as set)."""

    checkpoint: str = ""
    latent_tile: int = 0
    latent_tile_stride: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.latent_tile < 0 or self.latent_tile_stride < 0:
            raise JaxirInputError("latent_tile and latent_tile_stride must be >= 0")
        if self.latent_tile_stride and not self.latent_tile:
            raise JaxirInputError("latent_tile_stride needs latent_tile")


def stage1_restore(settings: DiffBIRSettings):
    """The stage-1 restore function of ``settings.stage1`` (the registered restorer named for the task)."""
    def restore(lq, degradation, key, sample_ids):
        restorer = get(settings.stage1_for(degradation.task))
        reason = restorer.unavailable_reason()
        if reason:
            raise JaxirInputError(f"stage-1 restorer {restorer.name} unavailable: {reason}")
        return restorer.restore(lq, degradation, key, sample_ids)

    return restore


def diffbir_pipeline(settings: DiffBIRRestorerSettings) -> DiffBIR:
    """The DiffBIR pipeline of a DiffBIR restorer's settings (checkpoint, stage 1, sampler)."""
    model, params = load_checkpoint(settings.checkpoint)
    return DiffBIR(model, params, settings, stage1=stage1_restore(settings))


def check_diffbir(settings: DiffBIRRestorerSettings, how: str) -> str | None:
    reason = missing_reason(settings.checkpoint, how)
    if reason:
        return reason
    missing = [f"{name} ({get(name).unavailable_reason()})" for name in sorted({n for _, n in settings.stage1})
               if get(name).unavailable_reason()]
    return f"stage-1 restorers unavailable: {'; '.join(missing)}" if missing else None


def diffbir_checkpoints(settings: DiffBIRRestorerSettings, degradation) -> tuple:
    """The ControlLDM's checkpoint and those of the stage-1 restorer of the degradation's task."""
    stage1 = get(settings.stage1_for(degradation.task))
    return (settings.checkpoint, *stage1.checkpoints(stage1.settings, degradation))


def diffbir_restorer(name: str, settings: DiffBIRRestorerSettings, tasks: tuple[str, ...], description: str,
                     how: str, accepts=None) -> Restorer:
    """Register a DiffBIR-pipeline restorer with ``settings`` as its defaults; ``how``: how to get its checkpoint."""
    return register(Restorer(name, diffbir_pipeline, tasks, "cldm", description, settings=settings,
                             check=lambda s: check_diffbir(s, how), accepts=accepts, checkpoints=diffbir_checkpoints,
                             static_part=DiffBIRSettings.static_part))


def supir_pipeline(settings: SUPIRRestorerSettings) -> SUPIRPipeline:
    """The SUPIR pipeline of a SUPIR restorer's settings. The checkpoint is loaded for this pipeline alone (not
    shared through :func:`load_checkpoint`): the pipeline keeps no text tower, and at 1024² on a 24 GiB machine the
    3 GiB of CLIP-L + bigG must not stay resident in a cache."""
    model, params = load_timed(settings.checkpoint)
    if settings.latent_tile:
        factor = model.config.vae.downsample_factor
        stride = settings.latent_tile_stride or settings.latent_tile // 2
        if settings.latent_tile % factor or stride % factor:
            raise JaxirInputError(f"latent_tile and its stride must be multiples of the VAE factor {factor} pixels, "
                                  f"got {settings.latent_tile} and {stride}")
        settings = dataclasses.replace(settings, tile_size=settings.latent_tile // factor,
                                       tile_stride=stride // factor)
    return SUPIRPipeline(model, params, settings)


def supir_restorer(name: str, settings: SUPIRRestorerSettings, tasks: tuple[str, ...], description: str,
                   how: str) -> Restorer:
    """Register a SUPIR-pipeline restorer with ``settings`` as its defaults; ``how``: how to get its checkpoint."""
    return register(Restorer(name, supir_pipeline, tasks, "cldm", description, settings=settings,
                             check=lambda s: missing_reason(s.checkpoint, how), aliases=SUPIR_ALIASES,
                             checkpoints=lambda s, degradation: (s.checkpoint,)))
