"""SUPIR restoration (Yu et al., CVPR 2024; Fanghua-Yu/SUPIR at commit bda91af, ``test.py`` with
``SUPIR/util.py`` ``PIL2Tensor``/``Tensor2PIL`` and ``SUPIRModel.batchify_sample``):

1. resizing: the low-quality image is upscaled by the degradation's scale (``--upscale``), then, if its short side
   is below ``min_size`` (1024), further up to it; each side is rounded to the nearest multiple of
   ``size_multiple`` (64; ``np.round``, so the aspect ratio may change slightly) and the image is resized there in
   one step. SUPIR uses PIL ``BICUBIC`` on the 8-bit image: the filter of ``F.interpolate(..., "bicubic",
   antialias=True)`` (Keys a = −0.5, support widened when shrinking, pixel-centre alignment;
   :func:`jaxir.degradations.resize.resize_torch` ``bicubic_aa``) applied in two passes, horizontal then
   vertical, each rounded to 8 bits. :func:`pil_bicubic` does the same in float (``pil_resize``; equal to PIL 13
   within one grey level, on 0.3 % of the pixels of a random image: PIL's fixed-point weights); without
   ``pil_resize``, one float pass of the filter without rounding;
2. stage 1, :meth:`jaxir.models.supir.SUPIR.stage1`: ``z_lq`` = the degradation-robust encoder's posterior mode,
   ``x_stage1 = D(z_lq)``, ``x_center = E(x_stage1)`` (a posterior sample);
3. conditions (``prepare_condition``): the prompt ``prompt + a_prompt`` (SUPIR joins LLaVA's caption and the
   additive prompt without a separator; no captioner here, ``prompt`` defaults to ""), the negative prompt
   ``n_prompt``, SDXL's fixed 1024² size conditions, ``control = z_lq`` for both;
4. the restore-EDM sampler (:func:`sample_restore_edm`, :mod:`jaxir.diffusion.restore_edm`): ``steps`` LegacyDDPM
   σ's, churn, linear CFG and control scale, restoration guidance towards ``x_center`` (``restoration_scale`` ≤ 0
   turns it off);
5. decoding, the wavelet / AdaIN colour fix against ``x_stage1`` (both in [−1, 1], as SUPIR applies them);
6. resizing back to the clean size with PyTorch bicubic without antialias (``Tensor2PIL``'s ``F.interpolate``)
   and clipping to [0, 1] (SUPIR then truncates to 8 bits; this returns floats).

Randomness: sample b draws ``x_center``'s posterior noise, the starting latent and every step's churn noise, in
that order, from one standard-normal stream of key ``fold_in(key, sample_ids[b])`` (SUPIR draws them in that
order from one seeded global generator), so a result never depends on batch size or device count. Seeds, noise,
σ's and every sampler setting are traced: a new key, guidance / control / restoration scale or churn reuses the
compiled programs (only shapes, the step count and tiling are static).

Tiled sampling (``tile_size``/``tile_stride`` in latent pixels; SUPIR's ``TiledRestoreEDMSampler``, 128/64 in
``options/SUPIR_v0_tiled.yaml``): every guided denoiser evaluation runs on the latent tiles SUPIR uses
(``_sliding_windows``: stride ``tile_stride``, the last row/column ending at the border) of the noisy latent and
``z_lq`` concatenated, one tile at a time (``lax.scan``), and the tiles' outputs are blended with SUPIR's Gaussian
weights (:func:`jaxir.tiling.tiled_blend`). SUPIR instead applies the whole Euler step (churn with the image-wide
noise, restoration guidance, update) per tile and blends the stepped latents; every part of that step outside the
network is the same per-pixel affine map in every tile, so blending the denoiser outputs gives the same result up
to float rounding (tested: one tile equals the untiled sampler). Tiles larger than the latent are clamped to it
(SUPIR requires latents of at least one tile); SUPIR's per-tile local prompts are not supported.

Tiled VAE (``vae_tile``, ``vae_tile_overlap`` in pixels): encoder, denoise encoder and decoder run on overlapping
tiles blended with :func:`jaxir.tiling.tiled_apply`'s Gaussian weights; SUPIR's ``tilevae`` (``init_tile_vae``:
512 px encoder tiles, 64-latent decoder tiles) pads tiles by 32 / 11 px, crops them without blending and shares
GroupNorm statistics across tiles, so its tiled output stays closer to the untiled one than independent tiles do.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxir import parallel
from jaxir.degradations.pipeline import Degradation
from jaxir.degradations.resize import resize_torch, torch_weights
from jaxir.diffusion import restore_edm
from jaxir.diffusion.denoiser import denoiser
from jaxir.diffusion.edm import sample_euler
from jaxir.diffusion.guidance import classifier_free_guidance, guided
from jaxir.diffusion.noise import normal_blocks
from jaxir.batches import check_images, clean_size
from jaxir.errors import JaxirInputError
from jaxir.pipelines.colorfix import COLOR_FIXES
from jaxir.tiling import tiled_apply, tiled_blend

# test.py's --a_prompt / --n_prompt
A_PROMPT = ("Cinematic, High Contrast, highly detailed, taken using a Canon EOS R camera, hyper detailed photo - "
            "realistic maximum detail, 32k, Color Grading, ultra HD, extreme meticulous detailing, skin pore "
            "detailing, hyper sharpness, perfect without deformations.")
N_PROMPT = ("painting, oil painting, illustration, drawing, art, sketch, oil painting, cartoon, CG Style, 3D render, "
            "unreal engine, blurring, dirty, messy, worst quality, low quality, frames, watermark, signature, jpeg "
            "artifacts, deformed, lowres, over-smooth")
MIN_SIZE = 1024
SIZE_MULTIPLE = 64
TEXT_TOWERS = ("clip_l", "clip_g")     # parameter subtrees of SUPIRNet that only encode prompts
_COLOR_FIX_NAMES = {"wavelet": "wavelet", "adain": "adain", "none": "none"}   # SUPIR spells Wavelet / AdaIn / None


@dataclasses.dataclass(frozen=True)
class SUPIRSettings:
    """Everything a SUPIR run depends on besides the model and the image (``test.py`` argument in brackets).

    ``steps`` [edm_steps]; ``restoration_scale`` [s_stage1] the exponent of restoration-guided sampling, off when
    ≤ 0 (test.py passes −1; ``batchify_sample``'s own default is 4); ``s_churn``, ``s_noise``; ``cfg_scale``
    [s_cfg] the guidance scale at σ = 0, ``cfg_scale_start`` [spt_linear_CFG] the one at σ_max when
    ``use_linear_cfg`` [linear_CFG]; ``control_scale`` [s_stage2], ``control_scale_start`` [spt_linear_s_stage2]
    when ``use_linear_control_scale`` [linear_s_stage2]; ``prompt`` (the caption SUPIR gets from LLaVA),
    ``a_prompt``, ``n_prompt``; ``color_fix`` [color_fix_type] wavelet / adain / none (SUPIR's spellings
    accepted); ``min_size`` [min_size]; ``size_multiple`` (64 in test.py); ``pil_resize`` (resize the input as
    PIL does on 8-bit images, :func:`pil_bicubic`; False: one float pass of the same filter);
    ``tile_size``/``tile_stride`` tiled sampling in latent pixels (0: untiled);
    ``vae_tile``/``vae_tile_overlap`` tiled VAE in pixels (0: untiled). SUPIR's ``seed`` is the key the pipeline
    is called with."""

    steps: int = 50
    restoration_scale: float = -1.0
    s_churn: float = 5.0
    s_noise: float = 1.003
    cfg_scale: float = 7.5
    use_linear_cfg: bool = True
    cfg_scale_start: float = 4.0
    control_scale: float = 1.0
    use_linear_control_scale: bool = False
    control_scale_start: float = 0.0
    prompt: str = ""
    a_prompt: str = A_PROMPT
    n_prompt: str = N_PROMPT
    color_fix: str = "wavelet"
    min_size: int = MIN_SIZE
    size_multiple: int = SIZE_MULTIPLE
    pil_resize: bool = True
    tile_size: int = 0
    tile_stride: int = 64
    vae_tile: int = 0
    vae_tile_overlap: int = 64

    @classmethod
    def preset(cls, version: str, **overrides) -> SUPIRSettings:
        """SUPIR's published settings, the same for both checkpoints except the guidance pair:

        * ``v0Q`` (SUPIR-v0Q, quality): s_cfg 7.5, spt_linear_CFG 4.0, s_noise 1.003 — ``test.py``'s defaults
          until May 2025 and the gradio demo's "Quality" setting (``options/SUPIR_v0.yaml`` ``default_setting``);
        * ``v0F`` (SUPIR-v0F, fidelity): s_cfg 4.0, spt_linear_CFG 1.0, s_noise 1.01 — ``test.py``'s defaults at
          bda91af and the README's "Fidelity-oriented settings".

        Both: 50 steps, s_churn 5, s_stage1 −1 (no restoration guidance), s_stage2 1.0, linear CFG on, linear
        control scale off (start 0), the default a_prompt / n_prompt, wavelet colour fix, min_size 1024."""
        presets = {"v0Q": {}, "v0F": dict(cfg_scale=4.0, cfg_scale_start=1.0, s_noise=1.01)}
        if version not in presets:
            raise JaxirInputError(f"unknown SUPIR version {version!r}; choose from {', '.join(presets)}")
        return cls(**{**presets[version], **overrides})

    def __post_init__(self):
        fix = _COLOR_FIX_NAMES.get(str(self.color_fix).lower())
        if fix is None:
            raise JaxirInputError(f"color_fix must be wavelet, adain or none, got {self.color_fix!r}")
        object.__setattr__(self, "color_fix", fix)
        if self.steps < 1:
            raise JaxirInputError(f"steps must be >= 1, got {self.steps}")
        if self.min_size < 0 or self.size_multiple < 1:
            raise JaxirInputError("min_size must be >= 0 and size_multiple >= 1")
        if self.tile_size < 0 or (self.tile_size and not 0 < self.tile_stride <= self.tile_size):
            raise JaxirInputError(f"tile_size must be >= 0 and tile_stride in (0, tile_size], got {self.tile_size}, "
                                  f"{self.tile_stride}")
        if self.vae_tile < 0 or (self.vae_tile and not 0 <= self.vae_tile_overlap < self.vae_tile):
            raise JaxirInputError(f"vae_tile must be >= 0 and vae_tile_overlap in [0, vae_tile), got {self.vae_tile}, "
                                  f"{self.vae_tile_overlap}")

    @property
    def positive_prompt(self) -> str:
        return self.prompt + self.a_prompt

    def values(self) -> restore_edm.RestoreEDMSettings:
        """The traced sampler settings, as ``batchify_sample`` builds them."""
        return restore_edm.RestoreEDMSettings.from_batchify_sample(
            restoration_scale=self.restoration_scale, s_churn=self.s_churn, s_noise=self.s_noise,
            cfg_scale=self.cfg_scale, control_scale=self.control_scale, use_linear_CFG=self.use_linear_cfg,
            use_linear_control_scale=self.use_linear_control_scale, cfg_scale_start=self.cfg_scale_start,
            control_scale_start=self.control_scale_start)


def sampling_size(height: int, width: int, upscale: float, min_size: int = MIN_SIZE,
                  multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """``PIL2Tensor``'s size: ``upscale`` × the input, the short side brought up to ``min_size``, each side rounded
    to the nearest multiple of ``multiple`` (``np.round``: halves to even; at least one multiple)."""
    h, w = height * upscale, width * upscale
    if min(h, w) < min_size:
        h, w = h * (min_size / min(h, w)), w * (min_size / min(h, w))
    return (max(int(np.round(h / multiple)), 1) * multiple, max(int(np.round(w / multiple)), 1) * multiple)


def pil_bicubic(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """PIL ``Image.resize(size, BICUBIC)`` of NHWC images in [0, 1] as 8-bit images: the input rounded to 8 bits,
    the horizontal pass (if the width changes), rounding and clipping to 8 bits, the vertical pass, rounding and
    clipping again; the filter is ``resize_torch``'s ``bicubic_aa`` (PIL's). Returns multiples of 1/255."""
    hi = jax.lax.Precision.HIGHEST
    quantize = lambda v: jnp.clip(jnp.round(v), 0.0, 255.0)  # noqa: E731
    h, w = x.shape[1:3]
    out_h, out_w = size
    y = quantize(x * 255.0)
    if out_w != w:
        y = quantize(jnp.einsum("pw,bhwc->bhpc", jnp.asarray(torch_weights(w, out_w, "bicubic_aa", w / out_w),
                                                             y.dtype), y, precision=hi))
    if out_h != h:
        y = quantize(jnp.einsum("oh,bhwc->bowc", jnp.asarray(torch_weights(h, out_h, "bicubic_aa", h / out_h),
                                                             y.dtype), y, precision=hi))
    return y / 255.0


def sigma_table(model) -> np.ndarray:
    """The ascending σ table of ``model``'s denoiser (sgm ``DiscreteDenoiser.sigmas``, LegacyDDPM)."""
    d = model.config.diffusion
    return restore_edm.legacy_ddpm_sigmas(d.num_timesteps, d.linear_start, d.linear_end)


def supir_denoiser(model, params, cond, control_scale):
    """``DiscreteDenoiserWithControl`` with ``EpsScaling``: ``denoise(x, σ, step) = x − σₛ·ε(x/√(σₛ²+1), tₛ)``, σₛ the
    entry of the model's σ table nearest σ (a scalar or one per sample) and tₛ its index;
    ``control_scale(step)`` gives the control scale of a step."""
    table = sigma_table(model)
    network = lambda x_in, t, step: model.network(params, x_in, t, cond, control_scale(step))  # noqa: E731
    return denoiser(network, "eps", table, np.arange(len(table)), quantize=True)


def _guided_denoiser(model, params, cond, uncond, settings: restore_edm.RestoreEDMSettings, sigmas):
    """sgm's ``LinearCFG`` over :func:`supir_denoiser` on one batch ``[uncond; cond]``, the control scale linear in
    the step's σ (``batchify_sample``)."""
    control = functools.partial(restore_edm.control_scale, settings, sigmas)
    return classifier_free_guidance(lambda x, sigma, c, step: supir_denoiser(model, params, c, control)(x, sigma, step),
                                    cond, uncond, restore_edm.cfg_scale(settings), batched=True)


@functools.partial(jax.jit, static_argnums=(0, 1, 2), static_argnames="trajectory")
def _sample(model, tile, stride, params, x_init, sigmas, noise, x_center, cond, uncond, settings, trajectory=False):
    channels = x_init.shape[-1]

    def denoise(x, sigma, step):
        if not tile:
            return _guided_denoiser(model, params, cond, uncond, settings, sigmas)(x, sigma, step)

        def on_tile(tile_in):
            control = tile_in[..., channels:]
            c, u = ({**conds, "control": control} for conds in (cond, uncond))
            return _guided_denoiser(model, params, c, u, settings, sigmas)(tile_in[..., :channels], sigma, step)

        return tiled_blend(on_tile, jnp.concatenate([x, cond["control"]], axis=-1), tile, stride)

    x = x_init * jnp.sqrt(1.0 + sigmas[0] ** 2)   # sgm ``prepare_sampling_loop``
    return sample_euler(guided(denoise, restore_edm.center_guidance(x_center, sigmas, settings)), x, sigmas, noise,
                        trajectory=trajectory, s_churn=settings.s_churn, s_noise=settings.s_noise)


def sample_restore_edm(model, params, x_init, sigmas, noise, x_center, cond, uncond,
                       settings: restore_edm.RestoreEDMSettings, *, tile: int = 0, tile_stride: int = 64,
                       trajectory: bool = False):
    """``RestoreEDMSampler`` as ``batchify_sample`` calls it: :func:`jaxir.diffusion.edm.sample_euler` from
    standard-normal ``x_init`` scaled by √(1 + σ₀²), over the CFG-guided :func:`supir_denoiser` with the hook
    :func:`jaxir.diffusion.restore_edm.center_guidance`; every guided denoiser evaluation on SUPIR's latent tiles
    with ``tile`` > 0 (module docstring). ``sigmas``: (N + 1,) descending, ending at 0
    (:func:`~jaxir.diffusion.restore_edm.legacy_ddpm_sigmas`); ``noise``: (N, *x_init.shape), the churn noise.
    Arrays and settings are cast to float32 and traced, so new noise, σ schedules (of the same length) or settings
    reuse the compiled program (an int setting such as ``s_churn=5`` would otherwise trace with another dtype).
    Returns the final latent, and with ``trajectory`` also the :class:`~jaxir.diffusion.samplers.Trajectory`."""
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return _sample(model, tile, tile_stride if tile else 0, params, f32(x_init), f32(sigmas), f32(noise),
                   f32(x_center), jax.tree.map(f32, dict(cond)), jax.tree.map(f32, dict(uncond)),
                   restore_edm.RestoreEDMSettings(*map(f32, settings)), trajectory=trajectory)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _draw_noise(key, sample_ids, shape, steps):
    """Per sample one standard-normal stream from ``fold_in(key, id)`` (:func:`jaxir.diffusion.noise.normal_blocks`)
    of ``steps + 2`` latent-sized blocks: x_center's posterior noise, the starting latent, then the step noise →
    (center (B, *shape), init (B, *shape), steps (steps, B, *shape))."""
    blocks = normal_blocks(key, sample_ids, shape, steps + 2)
    return blocks[0], blocks[1], blocks[2:]


@functools.partial(jax.jit, static_argnums=0)
def stage1_color_fix(kind, decoded, x_stage1):
    """The colour fix against x_stage1 in [−1, 1], mapped to [0, 1]."""
    return (COLOR_FIXES[kind](decoded, x_stage1) + 1.0) / 2.0


_pil_bicubic = jax.jit(lambda x, size: pil_bicubic(x, size), static_argnums=1)
_resize_back = jax.jit(lambda x, size: jnp.clip(resize_torch(x, size=size, mode="bicubic"), 0.0, 1.0),
                       static_argnums=1)


class SUPIRPipeline:
    """A converted SUPIR (``jaxir.load`` of a ``supir`` checkpoint: :class:`jaxir.models.supir.SUPIR`) run as the
    restoration pipeline of the module docstring; ``pipeline(lq, degradation, key=None, sample_ids=None)`` returns
    the restored batch at the clean size in [0, 1]. ``mesh``: a :func:`jaxir.parallel.data_mesh` to shard batches
    over (parameters are replicated on it). The settings' prompts are encoded once, here; ``params`` then keeps no
    text tower (``TEXT_TOWERS``)."""

    def __init__(self, model, params, settings: SUPIRSettings | None = None, mesh=None):
        from jaxir.models.supir import SUPIR

        if not isinstance(model, SUPIR):
            raise JaxirInputError(f"SUPIRPipeline needs a SUPIR model (a converted 'supir' checkpoint), got "
                                  f"{type(model).__name__}")
        settings = SUPIRSettings() if settings is None else settings
        self.model, self.settings, self.mesh = model, settings, mesh
        self.vae_factor = model.config.vae.downsample_factor
        self.unet_factor = 2 ** (len(model.config.diffusion.unet.channel_mult) - 1)
        self.latent_channels = model.config.diffusion.unet.in_channels
        image_factor = self.vae_factor * self.unet_factor
        problems = []
        if settings.size_multiple % image_factor:
            problems.append(f"size_multiple {settings.size_multiple} is not a multiple of {image_factor}")
        if settings.tile_size % self.unet_factor:
            problems.append(f"tile_size {settings.tile_size} is not a multiple of {self.unet_factor} latent pixels")
        if settings.vae_tile % image_factor or settings.vae_tile_overlap % self.vae_factor:
            problems.append(f"vae_tile must be a multiple of {image_factor} and vae_tile_overlap of "
                            f"{self.vae_factor} pixels")
        if problems:
            raise JaxirInputError(f"SUPIR settings do not fit the model: {'; '.join(problems)}")
        # The settings' two prompts are all the text a pipeline encodes: encode them now and keep no text tower
        # (CLIP-L + bigG: 0.82 B parameters, 3 GiB in float32, a margin a 24 GiB machine needs at 1024²).
        placeholder = jnp.zeros((1, 1, 1, self.latent_channels), jnp.float32)
        self._text = [model.condition(params, [prompt], placeholder)
                      for prompt in (settings.positive_prompt, settings.n_prompt)]   # [cond, uncond]
        params = {name: tree for name, tree in params.items() if name not in TEXT_TOWERS}
        self.params = params if mesh is None else parallel.replicate(params, mesh)

    # ---- steps --------------------------------------------------------------------------------------------------

    def sampling_image(self, lq: jax.Array, upscale: float) -> jax.Array:
        """Step 1: the input at :func:`sampling_size`, in [0, 1] (8-bit values with ``pil_resize``)."""
        s = self.settings
        size = sampling_size(lq.shape[1], lq.shape[2], upscale, s.min_size, s.size_multiple)
        if s.pil_resize:
            return _pil_bicubic(lq, size)
        image = lq if size == tuple(lq.shape[1:3]) else resize_torch(lq, size=size, mode="bicubic_aa")
        return jnp.clip(image, 0.0, 1.0)

    def conditions(self, z_lq: jax.Array) -> tuple[dict, dict]:
        """Step 3: ``(cond, uncond)`` for a batch of low-quality latents (prompts encoded when the pipeline was
        built)."""
        b = z_lq.shape[0]
        cond, uncond = ({"crossattn": jnp.broadcast_to(text["crossattn"], (b, *text["crossattn"].shape[1:])),
                         "vector": jnp.broadcast_to(text["vector"], (b, *text["vector"].shape[1:])), "control": z_lq}
                        for text in self._text)
        return cond, uncond

    def noise(self, key: jax.Array, batch_shape: tuple[int, int, int], sample_ids) -> tuple[jax.Array, ...]:
        """``(center, init, steps)`` noise for images of ``batch_shape`` (B, H, W) (module docstring)."""
        b, h, w = batch_shape
        shape = (h // self.vae_factor, w // self.vae_factor, self.latent_channels)
        return _draw_noise(key, jnp.asarray(sample_ids, jnp.int32), shape, self.settings.steps)

    def stage1(self, image: jax.Array, center_noise: jax.Array):
        """Step 2: ``(z_lq, x_stage1, x_center)`` of images in [0, 1] (x_stage1 in [−1, 1]); tiled with
        ``vae_tile``."""
        s, f, params, model = self.settings, self.vae_factor, self.params, self.model
        if not s.vae_tile:
            return model.stage1(params, image, center_noise)
        z_lq = tiled_apply(lambda x: model.encode_lq(params, x), image, s.vae_tile, s.vae_tile_overlap, scale=1 / f)
        x_stage1 = self.decode(z_lq)
        # the posterior noise travels with the image, nearest-upsampled, so every tile samples with its own part
        noise_up = jnp.repeat(jnp.repeat(center_noise, f, axis=1), f, axis=2)
        c = x_stage1.shape[-1]
        x_center = tiled_apply(lambda t: model.encode(params, t[..., :c], t[:, ::f, ::f, c:]),
                               jnp.concatenate([x_stage1, noise_up], axis=-1), s.vae_tile, s.vae_tile_overlap,
                               scale=1 / f)
        return z_lq, x_stage1, x_center

    def decode(self, z: jax.Array) -> jax.Array:
        """``D(z / scale)`` in [−1, 1] (unclamped); tiled with ``vae_tile``."""
        s, f = self.settings, self.vae_factor
        fn = lambda z: self.model.decode(self.params, z)  # noqa: E731
        if not s.vae_tile:
            return fn(z)
        return tiled_apply(fn, z, s.vae_tile // f, s.vae_tile_overlap // f, scale=f)

    def sigmas(self) -> np.ndarray:
        d = self.model.config.diffusion
        return restore_edm.legacy_ddpm_sigmas(d.num_timesteps, d.linear_start, d.linear_end,
                                              num_steps=self.settings.steps)

    def sample(self, x_init, noise, x_center, cond: dict, uncond: dict, trajectory: bool = False):
        """Step 4: the restore-EDM sampler, tiled with ``tile_size`` (with ``trajectory`` also its
        :class:`~jaxir.diffusion.samplers.Trajectory`)."""
        s = self.settings
        return sample_restore_edm(self.model, self.params, x_init, self.sigmas(), noise, x_center, cond, uncond,
                                  s.values(), tile=s.tile_size, tile_stride=s.tile_stride, trajectory=trajectory)

    def restore_image(self, image: jax.Array, key: jax.Array, sample_ids=None, trajectory: bool = False):
        """Steps 2–5 on images already at the sampling size (NHWC in [0, 1]): the colour-fixed restoration at that
        size, in [0, 1] (unclipped); with ``trajectory`` also the x0 prediction of every step, decoded and
        colour-fixed as the output is (a list of ``steps`` batches)."""
        n = image.shape[0]
        sample_ids = np.arange(n) if sample_ids is None else np.asarray(sample_ids)
        if len(sample_ids) != n:
            raise JaxirInputError(f"{len(sample_ids)} sample ids for a batch of {n}")
        if self.mesh is not None:
            image, sample_ids = parallel.shard_samples(image, sample_ids, self.mesh)
        center, init, steps = self.noise(key, image.shape[:3], sample_ids)
        z_lq, x_stage1, x_center = self.stage1(image, center)
        cond, uncond = self.conditions(z_lq)
        out = self.sample(init, steps, x_center, cond, uncond, trajectory)
        finish = lambda z: stage1_color_fix(self.settings.color_fix, self.decode(z), x_stage1)[:n]  # noqa: E731
        if not trajectory:
            return finish(out)
        z, path = out
        return finish(z), [finish(x0) for x0 in path.denoised]

    def __call__(self, lq, degradation: Degradation, key: jax.Array,
                 sample_ids: Sequence[int] | None = None) -> jax.Array:
        """The restored batch at the clean size (``lq`` size × ``degradation.scale``), in [0, 1]; sample b uses
        ``fold_in(key, sample_ids[b])`` (default ``arange(B)``)."""
        lq = check_images(lq)
        out_size = clean_size(lq.shape[1], lq.shape[2], degradation)
        return self._at_clean_size(self.restore_image(self.sampling_image(lq, degradation.scale), key, sample_ids),
                                   out_size)

    def x0_trajectory(self, lq, degradation: Degradation, key: jax.Array,
                      sample_ids: Sequence[int] | None = None) -> tuple[jax.Array, list[jax.Array]]:
        """(the restored batch as :meth:`__call__` returns it, the x0 prediction of every sampling step decoded,
        colour-fixed and brought to the clean size the same way): the study's Fig. 9 for SUPIR."""
        lq = check_images(lq)
        out_size = clean_size(lq.shape[1], lq.shape[2], degradation)
        final, x0s = self.restore_image(self.sampling_image(lq, degradation.scale), key, sample_ids, trajectory=True)
        return self._at_clean_size(final, out_size), [self._at_clean_size(x0, out_size) for x0 in x0s]

    @staticmethod
    def _at_clean_size(restored: jax.Array, out_size: tuple[int, int]) -> jax.Array:
        if restored.shape[1:3] == out_size:
            return jnp.clip(restored, 0.0, 1.0)
        return _resize_back(restored, out_size)
