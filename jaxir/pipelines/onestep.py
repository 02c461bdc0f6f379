"""One-step diffusion restoration (HYPIR, OSEDiff, PiSA-SR) on a converted ``onestep`` checkpoint
(:mod:`jaxir.models.onestep`):

1. the input at the clean size, by each repository's rule (``resize``):
   * ``"hypir"`` (HYPIR ``BaseEnhancer.enhance``): ``F.interpolate(bicubic)`` by the scale (the colour reference),
     then, when the short side is at most ``patch_size``, resized (bicubic, antialiased) so that it equals it;
   * ``"process_size"`` (OSEDiff ``test_osediff.py``, PiSA-SR ``test_pisasr.py``): bicubic with antialias (PIL's
     filter) to the clean size, the short side brought up to ``process_size`` when below it; the repositories do
     this on PIL images in two steps and crop to multiples of 8 with Lanczos; here one resize from the LQ image and
     zero padding to the model's multiple (the UNet needs latents divisible by its downsamplings), cropped after;
2. ``z = scale·(μ + σ·n)``: a sample of the VAE posterior of ``2x − 1`` (all three call ``latent_dist.sample()``),
   ``n`` drawn from ``fold_in(key, sample_id)``; HYPIR encodes in ``patch_size`` tiles (one noise draw per tile, as
   its tiled encoder);
3. one UNet evaluation at ``model_t`` with the prompt embedding (``prompt``: empty by default; DAPE/LLaVA captioners
   are not part of jaxir), the LoRA deltas times ``lora_scale`` (traced); PiSA-SR's dial (``dial``):
   ``pred = λ_pix·pred_pix + λ_sem·(pred_pix+sem − pred_pix)`` (``PiSASR_eval._predict_no_tiling``), λ traced;
   latent tiles: HYPIR's ``make_tiled_fn`` (``patch_size/8``, stride ``stride/8``) or OSEDiff's / PiSA-SR's latent
   tiler (``latent_tile``, ``latent_tile_overlap``; square tiles of ``min(tile, h, w)``, only when ``h·w > tile²``),
   Gaussian weights (:func:`jaxir.tiling.supir_tile_weights`, PiSA-SR's centred variant);
4. the clean latent: ``x0 = (z − √(1−ᾱ_c)·ε)/√ᾱ_c`` (diffusers ``DDPMScheduler.step``, HYPIR at c = 200, OSEDiff at
   999) or ``z − pred`` (PiSA-SR);
5. decode (HYPIR: in tiles); HYPIR: back to the bicubic input's size (bicubic, antialiased), wavelet colour fix
   towards it; OSEDiff/PiSA-SR: clamp to [−1, 1], AdaIN colour fix towards the input, then back to the clean size
   when the process size enlarged it; clip to [0, 1].

Not reproduced: OSEDiff's and PiSA-SR's tiled-VAE hooks (``VAEHook``: GroupNorm statistics shared across tiles,
active above their ``--vae_encoder_tiled_size`` 1024 / ``--vae_decoder_tiled_size`` 224; jaxir encodes and
decodes whole images), and fp16/bf16 inference (jaxir runs float32).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.batches import clean_size, pad_to_multiple
from jaxir.degradations.resize import resize_torch
from jaxir.errors import JaxirInputError
from jaxir.pipelines.colorfix import COLOR_FIXES
from jaxir.pipelines.diffbir import process_alphas_cumprod, short_edge_size
from jaxir.tiling import blend_tiles, supir_tile_weights, tile_starts, tile_windows

RESIZE_RULES = ("hypir", "process_size")


@dataclasses.dataclass(frozen=True)
class OneStepSettings:
    """What a one-step restoration depends on besides the checkpoint (see the module docstring). ``lora_scale``,
    ``lambda_pix`` and ``lambda_sem`` are traced: sweeping them reuses one compiled program."""

    prompt: str = ""
    lora_scale: float = 1.0
    dial: bool = False            # PiSA-SR's adjustable mode (two UNet passes); False: its default single pass
    lambda_pix: float = 1.0
    lambda_sem: float = 1.0
    color_fix: str = dataclasses.field(default="wavelet", metadata={"choices": tuple(COLOR_FIXES)})
    resize: str = dataclasses.field(default="hypir", metadata={"choices": RESIZE_RULES})
    process_size: int = 512
    patch_size: int = 0           # HYPIR's tiles in pixels (encoder, UNet /8, decoder); 0: none
    patch_stride: int = 256
    latent_tile: int = 0          # OSEDiff's / PiSA-SR's latent tiles in latent pixels; 0: none
    latent_tile_overlap: int = 32

    def __post_init__(self):
        if self.patch_size and (self.patch_size % 8 or self.patch_stride % 8 or
                                not 0 < self.patch_stride <= self.patch_size):
            raise JaxirInputError(f"patch_size {self.patch_size} and patch_stride {self.patch_stride} must be "
                                  "multiples of 8 with 0 < stride <= size")
        if self.latent_tile and not 0 <= self.latent_tile_overlap < self.latent_tile:
            raise JaxirInputError(f"latent_tile_overlap must be in [0, {self.latent_tile})")
        if self.patch_size and self.latent_tile:
            raise JaxirInputError("set patch_size (HYPIR's tiling) or latent_tile (OSEDiff's), not both")
        if not self.dial and (self.lambda_pix, self.lambda_sem) != (1.0, 1.0):
            raise JaxirInputError("lambda_pix and lambda_sem act only with dial=True (PiSA-SR's adjustable mode)")

    @classmethod
    def preset(cls, method: str, **overrides) -> OneStepSettings:
        """The inference scripts' settings: HYPIR ``test.py`` (patch 512, stride 256, wavelet fix), OSEDiff
        ``test_osediff.py`` and PiSA-SR ``test_pisasr.py`` (process size 512, latent tiles 96 overlapping by 32,
        AdaIN fix; PiSA-SR ``--default``, its ``test_adjustable.sh`` is ``dial=True`` with the λs)."""
        presets = {"hypir": dict(patch_size=512, patch_stride=256),
                   "osediff": dict(color_fix="adain", resize="process_size", latent_tile=96),
                   "pisa_sr": dict(color_fix="adain", resize="process_size", latent_tile=96)}
        if method not in presets:
            raise JaxirInputError(f"unknown one-step method {method!r}; choose from {', '.join(presets)}")
        return dataclasses.replace(cls(**presets[method]), **overrides)


def posterior_sample(mean: jax.Array, logvar: jax.Array, noise: jax.Array, scale: float) -> jax.Array:
    """``scale·(μ + exp(logvar/2)·n)`` (``DiagonalGaussianDistribution.sample`` times the latent scale)."""
    return scale * (mean + jnp.exp(0.5 * logvar) * noise)


TRACED = ("prompt", "lora_scale", "lambda_pix", "lambda_sem")   # values the compiled program takes as arguments


class OneStepProgram:
    """The restoration of the module docstring for one model and the settings that shape the program (the traced
    ones at their defaults): pure functions of arrays and one jit (:meth:`run`). Shared by every pipeline that
    differs only in traced settings (:func:`program`)."""

    def __init__(self, model, settings: OneStepSettings):
        self.model, self.settings = model, settings
        config = model.config
        self.factor = config.vae.downsample_factor
        self.multiple = self.factor * 2 ** (len(config.unet.channel_mult) - 1)
        if settings.patch_size % self.multiple:
            raise JaxirInputError(f"patch_size must be a multiple of {self.multiple} (the UNet's latent multiple)")
        if settings.dial and config.adapter_names("unet") != ("pix", "sem"):
            raise JaxirInputError(f"dial needs PiSA-SR's pix and sem adapters; this {config.method} checkpoint has "
                                  f"{', '.join(config.adapter_names('unet'))}")
        alpha = float(process_alphas_cumprod(config.process)[config.coeff_t])
        self._x0_coeffs = (np.sqrt(1.0 - alpha), np.sqrt(alpha))
        self.run = jax.jit(self._restore_prepared, static_argnames=("out_size",))

    # ---- pieces (pure functions of arrays; the tests compare them with the originals) ---------------------------

    def prepare(self, lq: jax.Array, size: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
        """``(network input in [0, 1], colour reference)`` at the sizes of step 1."""
        s = self.settings
        if s.resize == "hypir":
            ref = resize_torch(lq, size=size, mode="bicubic")
            target = short_edge_size(*size, s.patch_size) if min(size) <= s.patch_size else size
            return (ref if target == size else resize_torch(ref, size=target, mode="bicubic_aa")), ref
        target = short_edge_size(*size, s.process_size) if min(size) < s.process_size else size
        x = resize_torch(lq, size=target, mode="bicubic_aa")
        return x, x

    def noise_shape(self, height: int, width: int) -> tuple[int, ...]:
        """The per-sample posterior noise for a prepared image: (tiles, h/8, w/8, C) (one tile when untiled)."""
        h, w = -(-height // self.multiple) * self.multiple, -(-width // self.multiple) * self.multiple
        c = self.model.config.vae.embed_dim
        if not self.settings.patch_size:
            return 1, h // self.factor, w // self.factor, c
        (th, tw), rows, cols = tile_windows(h, w, self.settings.patch_size, self.settings.patch_stride)
        return len(rows) * len(cols), th // self.factor, tw // self.factor, c

    def encode(self, vae_params, x: jax.Array, noise: jax.Array) -> jax.Array:
        """Step 2 on a padded image in [−1, 1]; ``noise`` (tiles, B, h, w, C)."""
        scale = self.model.config.vae.scale_factor

        def sample(window, n):
            mean, logvar = self.model.posterior(vae_params, window)
            return posterior_sample(mean, logvar, n, scale)

        if not self.settings.patch_size:
            return sample(x, noise[0])
        (th, tw), rows, cols = tile_windows(x.shape[1], x.shape[2], self.settings.patch_size,
                                            self.settings.patch_stride)
        return blend_tiles(sample, x, rows, cols, (th, tw), supir_tile_weights(th // self.factor, tw // self.factor),
                           scale=1 / self.factor, scan=True, per_tile=noise)

    def predict(self, params, z: jax.Array, context: jax.Array, lora_scale, lambdas) -> jax.Array:
        """Step 3: the UNet output on latent ``z`` (tiled as set)."""
        config, s = self.model.config, self.settings
        t = jnp.full((z.shape[0],), config.model_t, jnp.float32)
        if s.dial:
            unet_pix, _ = self.model.networks(params, {"sem": 0.0}, lora_scale)
            unet_all, _ = self.model.networks(params, {}, lora_scale)

            def unet(window):
                pix = self.model.predict(unet_pix, window, t, context)
                return lambdas[0] * pix + lambdas[1] * (self.model.predict(unet_all, window, t, context) - pix)
        else:
            unet_params, _ = self.model.networks(params, {}, lora_scale)

            def unet(window):
                return self.model.predict(unet_params, window, t, context)

        h, w = z.shape[1:3]
        if s.patch_size:
            (th, tw), rows, cols = tile_windows(h, w, s.patch_size // self.factor, s.patch_stride // self.factor)
            return blend_tiles(unet, z, rows, cols, (th, tw), supir_tile_weights(th, tw), scan=True)
        if s.latent_tile and h * w > s.latent_tile ** 2:
            tile = min(s.latent_tile, h, w)
            rows, cols = tile_starts(h, tile, s.latent_tile_overlap), tile_starts(w, tile, s.latent_tile_overlap)
            weights = supir_tile_weights(tile, tile, centred_rows=config.method == "pisa_sr")
            return blend_tiles(unet, z, rows, cols, (tile, tile), weights, scan=True)
        return unet(z)

    def clean_latent(self, z: jax.Array, pred: jax.Array) -> jax.Array:
        """Step 4."""
        if self.model.config.x0_rule == "residual":
            return z - pred
        sigma, alpha = self._x0_coeffs
        return (z - sigma * pred) / alpha

    def decode(self, vae_params, z: jax.Array) -> jax.Array:
        """``D(z / scale)`` in [−1, 1] (HYPIR: in tiles), unclamped."""
        s = self.settings
        fn = lambda window: self.model.decode(vae_params, window)  # noqa: E731
        if not s.patch_size:
            return fn(z)
        (th, tw), rows, cols = tile_windows(z.shape[1], z.shape[2], s.patch_size // self.factor,
                                            s.patch_stride // self.factor)
        return blend_tiles(fn, z, rows, cols, (th, tw), supir_tile_weights(th * self.factor, tw * self.factor),
                           scale=self.factor, scan=True)

    # ---- the whole restoration -----------------------------------------------------------------------------------

    def _restore_prepared(self, params, x, ref, context, noise, lora_scale, lambdas, out_size):
        """Steps 2–5 on a prepared batch (one jit: only shapes are static)."""
        s = self.settings
        h, w = x.shape[1:3]
        _, vae_params = self.model.networks(params, {}, lora_scale)
        z = self.encode(vae_params, pad_to_multiple(2.0 * x - 1.0, self.multiple), noise)
        context = jnp.broadcast_to(context, (z.shape[0], *context.shape[1:]))
        z0 = self.clean_latent(z, self.predict(params, z, context, lora_scale, lambdas))
        decoded = self.decode(vae_params, z0)[:, :h, :w]
        if s.resize == "process_size":
            decoded = jnp.clip(decoded, -1.0, 1.0)
        image = (decoded + 1.0) / 2.0
        if s.resize == "hypir" and (h, w) != ref.shape[1:3]:
            image = resize_torch(image, size=ref.shape[1:3], mode="bicubic_aa")
        image = COLOR_FIXES[s.color_fix](image, ref)
        if image.shape[1:3] != out_size:
            image = resize_torch(image, size=out_size, mode="bicubic_aa")
        return jnp.clip(image, 0.0, 1.0)



@functools.lru_cache(maxsize=4)
def _program(model, settings: OneStepSettings) -> OneStepProgram:
    return OneStepProgram(model, settings)


def program(model, settings: OneStepSettings) -> OneStepProgram:
    """The program of ``settings`` with the :data:`TRACED` ones at their defaults (one per model and shape)."""
    defaults = {f.name: f.default for f in dataclasses.fields(OneStepSettings) if f.name in TRACED}
    return _program(model, dataclasses.replace(settings, **defaults))


class OneStep:
    """A converted one-step restorer (``jaxir.load`` of an ``onestep`` checkpoint) run as the module docstring's
    pipeline; ``lora_scale``, the λs and the prompt embedding enter its compiled program as arrays."""

    def __init__(self, model, params, settings: OneStepSettings):
        # device arrays once (a converted NumPy tree would otherwise be copied again at every call)
        self.model, self.params, self.settings = model, jax.tree.map(jnp.asarray, params), settings
        self.program = program(model, settings)
        self._context = None

    def restore_prepared(self, x, ref, context, noise, out_size=None):
        """Steps 2–5 on :meth:`OneStepProgram.prepare`'s output with explicit prompt embedding ``context``
        (1 or B, 77, C) and posterior ``noise`` (tiles, B, h, w, C) — the form the parity tests use."""
        s = self.settings
        out_size = tuple(ref.shape[1:3]) if out_size is None else tuple(out_size)
        return self.program.run(self.params, x, ref, jnp.asarray(context), jnp.asarray(noise),
                                jnp.float32(s.lora_scale), jnp.asarray([s.lambda_pix, s.lambda_sem], jnp.float32),
                                out_size)

    def context(self) -> jax.Array:
        """The prompt embedding of ``settings.prompt`` (computed once)."""
        if self._context is None:
            self._context = self.model.encode_text(self.params, self.settings.prompt)
        return self._context

    def restore(self, lq, degradation, key: jax.Array, sample_ids=None) -> jax.Array:
        """The restorer interface: restored batch at the clean size; sample b's posterior noise is drawn from
        ``fold_in(key, sample_ids[b])``."""
        n, h, w = lq.shape[:3]
        sample_ids = np.arange(n) if sample_ids is None else np.asarray(sample_ids)
        out_size = clean_size(h, w, degradation)
        x, ref = self.program.prepare(jnp.asarray(lq, jnp.float32), out_size)
        shape = self.program.noise_shape(*x.shape[1:3])
        noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape))(jnp.asarray(sample_ids))
        return self.restore_prepared(x, ref, self.context(), jnp.moveaxis(noise, 0, 1), out_size)
