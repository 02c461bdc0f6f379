"""DiffBIR restoration (Lin et al., ECCV 2024; XPixelGroup/DiffBIR ``diffbir/pipeline.py`` ``Pipeline.run``):

1. stage 1, ``I_reg = M_φ(I_y)`` (eq. 3): any restorer (a registered name or a callable ``(lq, degradation) →
   image at the clean size``); DiffBIR uses SwinIR (v1, v2.1), BSRNet (v2 SR) or SCUNet (v2 denoising);
2. if the short side is below ``min_short_edge`` (512 in DiffBIR) the condition image is resized up to it
   (``F.interpolate`` bicubic with antialias, :func:`jaxir.degradations.resize.resize_torch` ``bicubic_aa``);
3. zero padding at the bottom/right to a multiple of 64 (DiffBIR pads to 8 when tiling and lets the UNet see
   latents of any multiple of 8 px; here every latent, and every latent tile, is a multiple of 8 so that SD's
   three downsamplings divide it; in general the multiple is the VAE factor times 2^(UNet downsamplings), 16 for
   jaxir's small CLDM); ``c_f = E(I_reg)`` (eq. 7, the posterior mode), optionally with a tiled VAE encoder;
4. sampling in latent space (eq. 10), :func:`jaxir.pipelines.sampling.sample_latent`, from pure noise or from the
   noised condition at ``t_start`` (the study's starting noise level);
5. decoding (eq. 11), optionally tiled, cropping the padding, and the wavelet colour fix towards ``I_reg``;
6. resizing back to the clean size (bicubic with antialias) and clipping to [0, 1].

Tiled VAE here is overlapping tiles blended with Gaussian weights (:func:`jaxir.tiling.tiled_apply`); DiffBIR's
``tilevae`` instead shares GroupNorm statistics across tiles, so tiled outputs differ from DiffBIR's tiled outputs
(both approximate the untiled result). Randomness: sample b of a batch draws its starting latent and step noise
from ``fold_in(key, sample_ids[b])``, so a result never depends on batch size or device count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxir import parallel
from jaxir.degradations.pipeline import Degradation
from jaxir.degradations.resize import resize_torch
from jaxir.diffusion import schedule as S
from jaxir.diffusion.noise import sampler_noise
from jaxir.errors import JaxirInputError
from jaxir.batches import check_images, clean_size, pad_to_multiple
from jaxir.pipelines.colorfix import COLOR_FIXES
from jaxir.pipelines.sampling import (SAMPLERS, Conditions, SamplerSpec, sample_latent, sample_latent_per_sample,
                                      sampler_values, stack_values, start_latent, start_latents)
from jaxir.tiling import tiled_apply

LATENT_FACTOR = 8            # SD's VAE; other models use their own (``pad_multiple``)
PAD_MULTIPLE = 64            # DiffBIR pads the condition to a multiple of 64 (without tiling)
MIN_SHORT_EDGE = 512         # DiffBIR's stage-2 condition images are at least 512 on the short side
# settings that enter the sampler as traced values: samples of one batch may differ in them
TRACED_SETTINGS = ("t_start", "cfg_scale", "strength", "s_churn", "s_tmin", "s_tmax", "s_noise", "eta",
                   "guidance_scale", "guidance_t_start", "guidance_t_stop")
# inference.py's negative prompt for the v2 paper runs, and DEFAULT_POS/NEG_PROMPT for v2.1
V2_NEG_PROMPT = "low quality, blurry, low-resolution, noisy, unsharp, weird textures"
V21_POS_PROMPT = ("Cinematic, High Contrast, highly detailed, taken using a Canon EOS R camera, hyper detailed photo "
                  "- realistic maximum detail, 32k, Color Grading, ultra HD, extreme meticulous detailing, skin pore "
                  "detailing, hyper sharpness, perfect without deformations.")
V21_NEG_PROMPT = ("painting, oil painting, illustration, drawing, art, sketch, oil painting, cartoon, CG Style, 3D "
                  "render, unreal engine, blurring, dirty, messy, worst quality, low quality, frames, watermark, "
                  "signature, jpeg artifacts, deformed, lowres, over-smooth.")


@dataclasses.dataclass(frozen=True)
class DiffBIRSettings:
    """Everything a DiffBIR run depends on besides the model and the image. ``stage1`` maps a task
    (``Degradation.task``) to a restorer name. The noise schedule and what the network predicts are the
    checkpoint's own (``model.config.process``, recorded at conversion; v2.1: the zero-terminal-SNR SD 2.1 with
    v-prediction), never a setting that could disagree with the file."""

    stage1: tuple[tuple[str, str], ...] = (("sr", "bsrnet"), ("denoise", "scunet"), ("deblur", "bsrnet"))
    sampler: str = dataclasses.field(default="spaced", metadata={"choices": SAMPLERS})
    steps: int = 50
    cfg_scale: float = 4.0
    rescale_cfg: bool = False
    strength: float = 1.0
    pos_prompt: str = ""
    neg_prompt: str = V2_NEG_PROMPT
    start_from_condition: bool = False
    t_start: int | None = None
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = 300.0
    s_noise: float = 1.0
    eta: float = 1.0
    guidance_space: str | None = dataclasses.field(default=None, metadata={"choices": (None, "latent", "rgb")})
    guidance_loss: str = dataclasses.field(default="w_mse", metadata={"choices": ("mse", "w_mse")})
    guidance_scale: float = 0.0
    guidance_t_start: float = 1001.0
    guidance_t_stop: float = -1.0
    guidance_repeat: int = 1
    min_short_edge: int = MIN_SHORT_EDGE
    color_fix: str = dataclasses.field(default="wavelet", metadata={"choices": tuple(COLOR_FIXES)})
    latent_tile: int = 0          # pixels (DiffBIR's cldm_tile_size, a multiple of the pad multiple); 0 = untiled
    latent_tile_stride: int = 256
    vae_tile: int = 0             # pixels; 0 = untiled
    vae_tile_overlap: int = 64

    @classmethod
    def preset(cls, version: str, **overrides) -> DiffBIRSettings:
        """DiffBIR's published settings: ``v1`` (SwinIR stage 1, spaced 50 steps, no prompts, no CFG), ``v2`` (the
        ECCV paper's command: BSRNet/SCUNet stage 1, spaced 50 steps, CFG 4 with the v2 negative prompt), ``v2.1``
        (zero-SNR v-prediction, SwinIR stage 1, DPM++ 3M SDE 10 steps, CFG 8 with the v2.1 prompts; DiffBIR
        writes the positive prompt with LLaVA captions, here the fixed default prompt is used). ``jaxir``: the
        small CLDM that jaxir trains (:mod:`jaxir.train.diffusion`) on its own restorer ``jaxir_cnn`` as stage 1,
        started from the condition latent noised to t = 250 (DiffBIR's ``start_point_type="cond"``), 10 ancestral
        DDIM steps (η = 1), no prompts or CFG, no short-edge resize, a tiled VAE (256-px tiles: its attention was
        trained on 16² latents). Measured on a 256² crop of ``astronaut`` at SR ×2 (Y-PSNR / SSIM): this preset
        28.79 / 0.746; from pure noise with 20 steps 22.39 / 0.437 (η = 1; η = 0 and the EDM samplers do worse
        with this small model); its stage 1 34.47 / 0.961."""
        presets = {
            "v1": dict(stage1=(("sr", "diffbir_swinir"), ("denoise", "diffbir_swinir"),
                               ("deblur", "diffbir_swinir")), cfg_scale=1.0, neg_prompt=""),
            "v2": {},
            "v2.1": dict(stage1=(("sr", "diffbir_swinir"), ("denoise", "diffbir_swinir"),
                                 ("deblur", "diffbir_swinir")),
                         sampler="edm_dpm++_3m_sde", steps=10, cfg_scale=8.0, pos_prompt=V21_POS_PROMPT,
                         neg_prompt=V21_NEG_PROMPT),
            "jaxir": dict(stage1=(("sr", "jaxir_cnn"), ("deblur", "jaxir_cnn")), sampler="ddim", steps=10, eta=1.0,
                          start_from_condition=True, t_start=250, cfg_scale=1.0, neg_prompt="", min_short_edge=0,
                          vae_tile=256, vae_tile_overlap=64),
        }
        if version not in presets:
            raise JaxirInputError(f"unknown DiffBIR version {version!r}; choose from {', '.join(presets)}")
        return dataclasses.replace(cls(**presets[version]), **overrides)

    def static_part(self) -> tuple:
        """What of these settings is compiled in: every setting but the traced ones (:data:`TRACED_SETTINGS`), and
        of those whether CFG runs and whether a start timestep is set. Runs with equal static parts share one
        compiled program, each sample with its own traced values (:meth:`DiffBIR.per_sample`)."""
        fixed = tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self)
                      if f.name not in TRACED_SETTINGS)
        return (*fixed, ("use_cfg", self.cfg_scale != 1.0), ("from_t_start", self.t_start is not None))

    def stage1_for(self, task: str) -> str:
        table = dict(self.stage1)
        if task not in table:
            raise JaxirInputError(f"no DiffBIR stage-1 restorer for task {task!r} (have {', '.join(table)})")
        return table[task]

    def __post_init__(self):
        self.check_tiles(PAD_MULTIPLE)
        if self.latent_tile and not 0 < self.latent_tile_stride <= self.latent_tile:
            raise JaxirInputError(f"latent_tile_stride must be in (0, {self.latent_tile}]")

    def check_tiles(self, multiple: int) -> None:
        """Tiles must be multiples of the model's pad multiple (64 for SD)."""
        for name in ("latent_tile", "vae_tile"):
            if getattr(self, name) % multiple:
                raise JaxirInputError(f"{name} must be a multiple of {multiple} pixels, got {getattr(self, name)}")

    def sampler_spec(self, parameterization: str, latent_factor: int = LATENT_FACTOR) -> SamplerSpec:
        """The sampler's static settings for a network predicting ``parameterization`` (the checkpoint's), with the
        latent tiling converted to latent pixels by the VAE factor."""
        tile = self.latent_tile // latent_factor
        overlap = (self.latent_tile - self.latent_tile_stride) // latent_factor if tile else 0
        return SamplerSpec(self.sampler, self.steps, parameterization, use_cfg=self.cfg_scale != 1.0,
                           tile=tile, tile_overlap=overlap, guidance_space=self.guidance_space,
                           guidance_loss=self.guidance_loss, guidance_repeat=self.guidance_repeat)

    def values(self, alphas_cumprod: np.ndarray, spec: SamplerSpec):
        """The traced sampler values on the checkpoint's ``alphas_cumprod`` (:func:`process_alphas_cumprod`)."""
        options = dict(s_churn=self.s_churn, s_tmin=self.s_tmin, s_tmax=self.s_tmax, s_noise=self.s_noise,
                       eta=self.eta, guidance_scale=self.guidance_scale, guidance_t_start=self.guidance_t_start,
                       guidance_t_stop=self.guidance_t_stop)
        return sampler_values(alphas_cumprod, spec, cfg_scale=self.cfg_scale,
                              rescale_cfg=self.rescale_cfg, strength=self.strength, t_start=self.t_start, **options)


def process_alphas_cumprod(process) -> np.ndarray:
    """ᾱ of a checkpoint's :class:`~jaxir.models.cldm.DiffusionProcess`: SD's linear β between its ends, rescaled to
    zero terminal SNR when the checkpoint was trained so (DiffBIR ``diffbir.model.Diffusion``)."""
    betas = S.sd_linear_betas(process.timesteps, process.linear_start, process.linear_end)
    return S.alphas_cumprod(S.rescale_zero_terminal_snr(betas) if process.zero_snr else betas)


def short_edge_size(height: int, width: int, size: int) -> tuple[int, int]:
    """DiffBIR's ``resize_short_edge_to``: the short side becomes ``size``, the long one ``int(long·size/short)``."""
    if height == width:
        return size, size
    if height < width:
        return size, int(width * (size / height))
    return int(height * (size / width)), size


def pad_multiple(config) -> int:
    """The side every condition image is padded to a multiple of: VAE factor × 2^(UNet downsamplings) (at least
    DiffBIR's 64 for SD-sized models, whose UNet would accept 8·8 = 64)."""
    return config.vae.downsample_factor * 2 ** (len(config.unet.channel_mult) - 1)


class DiffBIR:
    """A converted DiffBIR ControlLDM (``jaxir.load`` of a ``diffbir_cldm`` checkpoint) run as the restoration
    pipeline of the module docstring. ``stage1``: the stage-1 restorer, a callable ``(lq, degradation, key,
    sample_ids) → image at the clean size`` (the restorer interface; the registered ``diffbir_*`` restorers pass
    the restorers that ``settings.stage1`` names). ``mesh``: a
    :func:`jaxir.parallel.data_mesh` to shard batches over (parameters are replicated on it)."""

    def __init__(self, model, params, settings: DiffBIRSettings, stage1: Callable, mesh=None):
        self.model, self.settings, self.mesh = model, settings, mesh
        self.params = params if mesh is None else parallel.replicate(params, mesh)
        self.stage1 = stage1
        self._prompts = {}
        self.factor = model.config.vae.downsample_factor
        self.pad_multiple = pad_multiple(model.config)
        settings.check_tiles(self.pad_multiple)
        # the settings are frozen: schedule tables and sampler values once, not per call
        process = model.config.process   # the checkpoint's schedule and parameterisation
        self._alphas_cumprod = process_alphas_cumprod(process)
        self._spec = settings.sampler_spec(process.parameterization, self.factor)
        self._values = settings.values(self._alphas_cumprod, self._spec)

    def _text(self, prompt: str) -> jax.Array:
        if prompt not in self._prompts:
            self._prompts[prompt] = self.model.encode_text(self.params, [prompt])
        return self._prompts[prompt]

    def condition_image(self, lq, degradation: Degradation, key: jax.Array, sample_ids) -> jax.Array:
        """Stage 1 (eq. 3) at the clean size, then DiffBIR's short-edge rule (steps 1–2)."""
        restored = self.stage1(lq, degradation, key, sample_ids)
        restored = jnp.clip(jnp.asarray(restored, jnp.float32), 0.0, 1.0)
        h, w = restored.shape[1:3]
        if self.settings.min_short_edge and min(h, w) < self.settings.min_short_edge:
            restored = resize_torch(restored, size=short_edge_size(h, w, self.settings.min_short_edge),
                                    mode="bicubic_aa")
        return restored

    def encode(self, image: jax.Array) -> jax.Array:
        """``c_f = scale · mode(E(2x − 1))`` (eq. 7) of a padded image, tiled when ``vae_tile`` is set."""
        s = self.settings
        fn = lambda x: self.model.encode_condition(self.params, x)  # noqa: E731
        if s.vae_tile:
            return tiled_apply(fn, image, s.vae_tile, s.vae_tile_overlap, scale=1 / self.factor)
        return fn(image)

    def decode(self, z: jax.Array) -> jax.Array:
        """``D(z / scale)`` (eq. 11) mapped to [0, 1] (unclipped), tiled when ``vae_tile`` is set."""
        s = self.settings
        fn = lambda z: (self.model.decode(self.params, z) + 1.0) / 2.0  # noqa: E731
        if s.vae_tile:
            tile = s.vae_tile // self.factor
            return tiled_apply(fn, z, tile, s.vae_tile_overlap // self.factor, scale=self.factor)
        return fn(z)

    def restore_condition(self, cond_img: jax.Array, key: jax.Array, sample_ids=None, trajectory: bool = False,
                          per_sample: Sequence[DiffBIRSettings] | None = None):
        """Steps 3–5 on a condition image (NHWC in [0, 1]): the colour-fixed restoration at the condition's size
        (and with ``trajectory`` the decoded x0 prediction of every step, (steps, B, H, W, 3)). ``per_sample``:
        settings for each sample that differ from the pipeline's only in traced values (:meth:`per_sample`)."""
        s = self.settings
        n, h, w = cond_img.shape[:3]
        sample_ids = np.arange(n) if sample_ids is None else np.asarray(sample_ids)
        if len(sample_ids) != n:
            raise JaxirInputError(f"{len(sample_ids)} sample ids for a batch of {n}")
        if per_sample is not None and (len(per_sample) != n or trajectory):
            raise JaxirInputError(f"per-sample settings: one per sample ({len(per_sample)} for {n}), no trajectory")
        if self.mesh is not None:
            cond_img, sample_ids = parallel.shard_samples(cond_img, sample_ids, self.mesh)
        padded = pad_to_multiple(cond_img, self.pad_multiple)
        c_img = self.encode(padded)
        b = c_img.shape[0]
        spec, values = self._spec, self._values
        prompt = self._text(s.pos_prompt)
        c_txt = jnp.broadcast_to(prompt, (b, *prompt.shape[1:]))
        c_neg = jnp.broadcast_to(self._text(s.neg_prompt), c_txt.shape)
        x_T, noise = sampler_noise(key, c_img.shape, spec.steps, sample_ids)
        target = padded * 2.0 - 1.0 if spec.guidance_space == "rgb" else None
        cond = Conditions(c_img, c_txt, c_neg, target)
        if per_sample is None:
            x_T = start_latent(self._alphas_cumprod, spec, values, c_img, x_T, s.start_from_condition, s.t_start)
            out = sample_latent(self.model, self.params, spec, cond, x_T, noise, values, trajectory=trajectory)
        else:
            settings = list(per_sample) + [per_sample[-1]] * (b - n)   # the mesh's padding samples
            sample_values = [p.values(self._alphas_cumprod, spec) for p in settings]
            x_T = start_latents(self._alphas_cumprod, spec, sample_values, c_img, x_T, s.start_from_condition,
                                [p.t_start for p in settings])
            out = sample_latent_per_sample(self.model, self.params, spec, cond, x_T, noise,
                                           stack_values(sample_values))
        z, x0s = out if trajectory else (out, None)
        lh, lw = -(-h // self.factor), -(-w // self.factor)
        image = COLOR_FIXES[s.color_fix](self.decode(z[:, :lh, :lw])[:, :h, :w], cond_img)[:n]
        if not trajectory:
            return image
        return image, jnp.stack([self.decode(x0[:, :lh, :lw])[:n, :h, :w] for x0 in x0s])

    def __call__(self, lq, degradation: Degradation, key: jax.Array,
                 sample_ids: Sequence[int] | None = None) -> jax.Array:
        """The restored batch at the clean size, in [0, 1]; sample b draws from ``fold_in(key, sample_ids[b])``
        (default ids ``0..B−1``)."""
        return self.per_sample(lq, degradation, key, sample_ids, None)

    def per_sample(self, lq, degradation: Degradation, key: jax.Array, sample_ids: Sequence[int] | None,
                   settings: Sequence[DiffBIRSettings] | None) -> jax.Array:
        """:meth:`__call__` with sample b sampled under ``settings[b]`` (None: the pipeline's own settings), which
        may differ from the pipeline's in traced values only (equal :meth:`DiffBIRSettings.static_part`): a sweep
        over start timesteps, scales or η runs as one batch through one compiled sampler. Sample b computes what a
        pipeline with ``settings[b]`` computes for it alone."""
        if settings is not None:
            static = self.settings.static_part()
            for other in settings:
                if other.static_part() != static:
                    changed = [f for (f, v), (_, w) in zip(static, other.static_part()) if v != w]
                    raise JaxirInputError(f"per-sample settings may differ only in {', '.join(TRACED_SETTINGS)}; "
                                          f"these differ: {', '.join(changed)}")
        lq = check_images(lq)
        sample_ids = np.arange(lq.shape[0]) if sample_ids is None else np.asarray(sample_ids)
        out_size = clean_size(lq.shape[1], lq.shape[2], degradation)
        cond_img = self.condition_image(lq, degradation, key, sample_ids)
        return self._at_clean_size(self.restore_condition(cond_img, key, sample_ids, per_sample=settings), out_size)

    def x0_trajectory(self, lq, degradation: Degradation, key: jax.Array,
                      sample_ids: Sequence[int] | None = None) -> tuple[jax.Array, list[jax.Array]]:
        """(the restored batch as :meth:`__call__` returns it, the x0 prediction of every sampling step decoded,
        colour-fixed towards the condition image and brought to the clean size the same way): the study's
        Fig. 9."""
        lq = check_images(lq)
        sample_ids = np.arange(lq.shape[0]) if sample_ids is None else np.asarray(sample_ids)
        out_size = clean_size(lq.shape[1], lq.shape[2], degradation)
        cond_img = self.condition_image(lq, degradation, key, sample_ids)
        final, x0s = self.restore_condition(cond_img, key, sample_ids, trajectory=True)
        fix = COLOR_FIXES[self.settings.color_fix]
        return (self._at_clean_size(final, out_size),
                [self._at_clean_size(fix(x0, cond_img), out_size) for x0 in x0s])

    @staticmethod
    def _at_clean_size(restored: jax.Array, out_size: tuple[int, int]) -> jax.Array:
        if restored.shape[1:3] != out_size:
            restored = resize_torch(restored, size=out_size, mode="bicubic_aa")
        return parallel.gather(jnp.clip(restored, 0.0, 1.0))
