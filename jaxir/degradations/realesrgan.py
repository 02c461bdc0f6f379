"""Real-ESRGAN's second-order degradation (Wang et al., "Real-ESRGAN: Training Real-World Blind
Super-Resolution with Pure Synthetic Data", ICCVW 2021, Sec. 3 and Fig. 2), jit-able in one compilation.

The reference is the official pipeline: kernel sampling in BasicSR's ``RealESRGANDataset.__getitem__``
(``basicsr/data/realesrgan_dataset.py``, ``basicsr/data/degradations.py``) and the degradation in
``RealESRNetModel.feed_data`` (``realesrgan/models/realesrnet_model.py``), with the defaults of
``options/train_realesrnet_x4plus.yml``. Per image:

1. blur with a random 7..21 kernel (Gaussian / generalised Gaussian / plateau, iso- or anisotropic, or a sinc);
   random up/down/keep resize (area, bilinear or bicubic ``F.interpolate``); Gaussian or Poisson noise, colour
   or gray; DiffJPEG at a random quality;
2. the same with the second-stage settings (the blur itself applied with probability ``second_blur_prob``),
   the resize going to ``size = int(H / scale · s)``;
3. in random order, [resize to H/scale + optional sinc filter] and JPEG; clamp and round to 1/255.

Static shapes. The intermediate sizes ``floor(H·s₁)`` and ``int(H/scale·s₂)`` are drawn per image, so each
intermediate image lives in the top-left corner of a fixed canvas sized for the largest draw, and every
operation reads only the drawn (traced) valid region: resize weight matrices are built from the traced sizes,
reflection padding indexes the valid region, JPEG sees zeros outside it (exactly DiffJPEG's zero padding to a
multiple of 16, the blocks being aligned at the origin), Poisson noise counts grey levels inside it. The
result is the official computation at the drawn sizes, to float32 rounding; nothing is bucketed.

Deviations from the official code:

* the official models degrade the USM-sharpened ground truth (``gt_usm: True``); this function degrades
  ``hq`` as given, so pass a sharpened image to reproduce that;
* every random choice is drawn per image from ``jax.random.fold_in(key, index)``, whereas the official code
  draws the resize scale/mode, the noise type, the second-blur coin and the final order once per batch, and
  BasicSR's gray Gaussian noise uses one noise field for the whole batch;
* the random-crop / training-pair pool steps of ``feed_data`` are training-loop concerns, left out.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.degradations.blur import blur_2d
from jaxir.degradations.jpeg import jpeg
from jaxir.degradations.kernels import anisotropic_gaussian_kernel, generalized_gaussian_kernel, plateau_kernel
from jaxir.degradations.resize import apply_separable
from jaxir.errors import JaxirInputError

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
KERNEL_SIZES = tuple(range(7, 22, 2))  # RealESRGANDataset.kernel_range
_K = KERNEL_SIZES[-1]  # every kernel is zero-padded to 21 × 21
RESIZE_MODES = ("area", "bilinear", "bicubic")  # the official random.choice order
_HI = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class RealESRGANConfig:
    """Degradation settings, named and valued as in Real-ESRGAN's ``train_realesrnet_x4plus.yml``.

    Ranges are ``(low, high)`` for uniform draws; ``resize_prob`` weighs (up, down, keep); ``kernel_prob``
    weighs ``kernel_list`` (names from :data:`KERNEL_TYPES`).
    """

    scale: int = 4
    # first degradation
    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    # second degradation
    second_blur_prob: float = 0.8
    kernel_list2: tuple[str, ...] = KERNEL_TYPES
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    # final stage
    final_sinc_prob: float = 0.8

    def __post_init__(self):
        for names, probs in ((self.kernel_list, self.kernel_prob), (self.kernel_list2, self.kernel_prob2)):
            unknown = set(names) - set(KERNEL_TYPES)
            if unknown or len(names) != len(probs) or min(probs) < 0 or sum(probs) <= 0:
                raise JaxirInputError(f"kernel_list {names} / kernel_prob {probs}: need names from {KERNEL_TYPES} "
                                      "with as many non-negative weights, not all zero")
        for probs in (self.resize_prob, self.resize_prob2):
            if len(probs) != 3 or min(probs) < 0 or sum(probs) <= 0:
                raise JaxirInputError(f"resize_prob {probs}: need three non-negative (up, down, keep) weights")
        for lo, hi in (self.resize_range, self.resize_range2):
            if not 0 < lo <= 1 <= hi:
                raise JaxirInputError(f"resize range ({lo}, {hi}) must satisfy 0 < low <= 1 <= high")
        if self.scale < 1:
            raise JaxirInputError(f"scale must be a positive integer, got {self.scale}")


@dataclasses.dataclass(frozen=True)
class _Stage:
    """One degradation order's settings, gathered from :class:`RealESRGANConfig`."""

    kernel_prob: tuple[float, ...]  # over KERNEL_TYPES
    sinc_prob: float
    blur_sigma: tuple[float, float]
    betag_range: tuple[float, float]
    betap_range: tuple[float, float]
    resize_prob: tuple[float, float, float]
    resize_range: tuple[float, float]
    gaussian_noise_prob: float
    noise_range: tuple[float, float]
    poisson_scale_range: tuple[float, float]
    gray_noise_prob: float
    jpeg_range: tuple[float, float]


def _stage(c: RealESRGANConfig, second: bool) -> _Stage:
    sfx = "2" if second else ""
    names, probs = getattr(c, "kernel_list" + sfx), getattr(c, "kernel_prob" + sfx)
    prob = tuple(sum(p for n, p in zip(names, probs) if n == t) / sum(probs) for t in KERNEL_TYPES)
    fields = [f.name for f in dataclasses.fields(_Stage)][1:]
    return _Stage(prob, *(getattr(c, name + sfx) for name in fields))


# ----------------------------------------------------------------------------------------------- kernels


def _within(kernel: jax.Array, size) -> jax.Array:
    """Zero a 21×21 kernel outside its centred ``size``×``size`` support and renormalise: the same as building
    the kernel on a ``size`` grid and zero-padding it, as ``RealESRGANDataset`` does (``np.pad``)."""
    r = np.abs(np.arange(_K) - _K // 2)
    inside = (r[:, None] <= size // 2) & (r[None, :] <= size // 2)
    kernel = jnp.where(inside, kernel, 0.0)
    return kernel / kernel.sum()


def mixed_kernel(kernel_type, size, sigma_x, sigma_y, theta, beta) -> jax.Array:
    """The (21, 21) kernel of ``KERNEL_TYPES[kernel_type]`` with a ``size``×``size`` support (all traceable).

    BasicSR ``bivariate_Gaussian`` / ``bivariate_generalized_Gaussian`` / ``bivariate_plateau``; the isotropic
    types use ``sigma_x`` only (``sigma_y``, ``theta`` ignored), ``beta`` is ignored by the Gaussians.
    """
    aniso = kernel_type % 2 == 1
    sigma_y = jnp.where(aniso, sigma_y, sigma_x)
    theta = jnp.where(aniso, theta, 0.0)
    family = jnp.stack([anisotropic_gaussian_kernel(_K, sigma_x, sigma_y, theta),
                        generalized_gaussian_kernel(_K, sigma_x, sigma_y, theta, beta),
                        plateau_kernel(_K, sigma_x, sigma_y, theta, beta)])
    return _within(family[kernel_type // 2], size)


_BESSEL_NODES = 96


def _bessel_j1(x: jax.Array) -> jax.Array:
    """J₁ by Bessel's integral ``J₁(x) = (1/2π)∫ cos(τ − x sin τ) dτ`` over one period, trapezoidal rule.

    The rule is exact up to aliasing terms J₁₊ₖₙ(x), below 1e-14 for 96 nodes and x ≤ 45 (the largest
    argument here is π·10√2 ≈ 44.4). ``jax.scipy.special`` has no ``j1`` and its ``bessel_jn`` is
    inaccurate (NaN near 0) in this range.
    """
    tau = jnp.asarray(2 * np.pi * np.arange(_BESSEL_NODES) / _BESSEL_NODES, jnp.float32)
    return jnp.mean(jnp.cos(tau - x[..., None] * jnp.sin(tau)), axis=-1)


def circular_lowpass_kernel(cutoff, size) -> jax.Array:
    """2-D sinc (ideal circular low-pass) kernel, (21, 21) with a ``size``×``size`` support (BasicSR
    ``circular_lowpass_kernel``): ``ω_c J₁(ω_c r) / (2π r)``, centre ``ω_c² / 4π``, normalised to sum 1."""
    ax = np.arange(_K) - _K // 2
    r = jnp.asarray(np.hypot(ax[:, None], ax[None, :]), jnp.float32)
    safe_r = jnp.where(r == 0, 1.0, r)
    k = cutoff * _bessel_j1(cutoff * safe_r) / (2 * np.pi * safe_r)
    k = jnp.where(r == 0, cutoff**2 / (4 * np.pi), k)
    return _within(k, size)


def _pulse() -> jax.Array:
    return jnp.zeros((_K, _K), jnp.float32).at[_K // 2, _K // 2].set(1.0)


def _two_sided(u, lo, hi):
    """BasicSR's beta draw: U(lo, 1) or U(1, hi), each with probability ½ (``u`` a pair of U(0, 1))."""
    return jnp.where(u[0] < 0.5, lo + u[1] * (1.0 - lo), 1.0 + u[1] * (hi - 1.0))


def _random_kernel(key, stage: _Stage) -> jax.Array:
    """One blur kernel as ``RealESRGANDataset`` draws it: size uniform in 7..21, then a sinc with probability
    ``sinc_prob`` (cutoff U(π/3, π) below size 13, U(π/5, π) from 13), else ``random_mixed_kernels``."""
    k = jax.random.split(key, 7)
    size = 7 + 2 * jax.random.randint(k[0], (), 0, len(KERNEL_SIZES))
    cutoff = jax.random.uniform(k[1], minval=jnp.where(size < 13, np.pi / 3, np.pi / 5), maxval=np.pi)
    ktype = jax.random.choice(k[2], len(KERNEL_TYPES), p=jnp.asarray(stage.kernel_prob))
    sx, sy = jax.random.uniform(k[3], (2,), minval=stage.blur_sigma[0], maxval=stage.blur_sigma[1])
    theta = jax.random.uniform(k[4], minval=-np.pi, maxval=np.pi)
    u = jax.random.uniform(k[5], (2,))
    beta = jnp.where(ktype // 2 == 1, _two_sided(u, *stage.betag_range), _two_sided(u, *stage.betap_range))
    sinc = jax.random.uniform(k[6]) < stage.sinc_prob
    return jnp.where(sinc, circular_lowpass_kernel(cutoff, size), mixed_kernel(ktype, size, sx, sy, theta, beta))


# ----------------------------------------------------------------------------- traced-size resize / blur


def _cubic(t: jax.Array) -> tuple[jax.Array, ...]:
    """Keys cubic weights (a = −0.75, PyTorch's ``get_cubic_upsample_coefficients``) for taps −1..2 at offset t."""
    a = -0.75

    def near(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


def _axis_weights(mode, in_len, out_len, ratio, n_out: int, n_in: int) -> jax.Array:
    """(n_out, n_in) weights of ``F.interpolate(mode=RESIZE_MODES[mode], align_corners=False)`` along one axis
    from ``in_len`` to ``out_len`` samples (traced, ≤ n_in, n_out) with source spacing ``ratio`` (ATen's
    ``area_pixel_compute_scale``); rows ≥ ``out_len`` are zero, columns ≥ ``in_len`` never used."""
    i = jnp.arange(n_out)[:, None]
    j = jnp.arange(n_in)[None, :]
    last = in_len - 1
    # area: adaptive average pooling over [floor(i·in/out), ceil((i+1)·in/out))
    start, end = (i * in_len) // out_len, ((i + 1) * in_len + out_len - 1) // out_len
    area = jnp.where((j >= start) & (j < end), 1.0 / (end - start), 0.0)
    # bilinear: source clamped at 0, right neighbour clamped at the last sample
    src = jnp.maximum((i + 0.5) * ratio - 0.5, 0.0)
    i0 = jnp.floor(src)
    frac = src - i0
    i0 = i0.astype(jnp.int32)
    linear = (jnp.where(j == jnp.minimum(i0, last), 1 - frac, 0.0)
              + jnp.where(j == jnp.minimum(i0 + 1, last), frac, 0.0))
    # bicubic: four taps, indices clamped to the image
    src = (i + 0.5) * ratio - 0.5
    i0 = jnp.floor(src)
    taps = _cubic(src - i0)
    i0 = i0.astype(jnp.int32)
    cubic = sum(jnp.where(j == jnp.clip(i0 + k - 1, 0, last), w, 0.0) for k, w in enumerate(taps))
    weights = jnp.stack([area, linear, cubic])[mode]
    return jnp.where(i < out_len, weights, 0.0).astype(jnp.float32)


def resize_valid(x: jax.Array, in_hw, out_hw, ratio_hw, mode, out_canvas: tuple[int, int]) -> jax.Array:
    """Resize the top-left ``in_hw`` region of the HWC canvas ``x`` to ``out_hw``, written into the top-left of
    a zero ``out_canvas``; sizes, ``ratio_hw`` (input/output spacing per axis) and ``mode`` may be traced."""
    mh = _axis_weights(mode, in_hw[0], out_hw[0], ratio_hw[0], out_canvas[0], x.shape[0])
    mw = _axis_weights(mode, in_hw[1], out_hw[1], ratio_hw[1], out_canvas[1], x.shape[1])
    return apply_separable(x, mh, mw)


def _reflect_indices(n: int, pad: int, length) -> jax.Array:
    """Indices into [0, length) of the n + 2·pad samples of a reflect-padded axis (``F.pad(mode='reflect')``,
    extended periodically where pad ≥ length, where PyTorch would refuse)."""
    period = jnp.maximum(2 * (length - 1), 1)
    m = jnp.mod(jnp.arange(n + 2 * pad) - pad, period)
    return jnp.where(m < length, m, period - m)


def blur_valid(x: jax.Array, kernel: jax.Array, hw) -> jax.Array:
    """BasicSR ``filter2D`` (reflect padding, correlation) of the top-left ``hw`` region (traced) of the HWC
    canvas ``x`` with an odd square ``kernel``; the result has the canvas shape."""
    pad = kernel.shape[0] // 2
    rows = _reflect_indices(x.shape[0], pad, hw[0])
    cols = _reflect_indices(x.shape[1], pad, hw[1])
    padded = x[rows][:, cols]
    c = x.shape[-1]
    rhs = jnp.broadcast_to(kernel[:, :, None, None], (*kernel.shape, 1, c)).astype(x.dtype)
    y = jax.lax.conv_general_dilated(padded[None], rhs, (1, 1), "VALID", feature_group_count=c,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HI)
    return y[0]


def _valid_mask(shape, hw) -> jax.Array:
    return (jnp.arange(shape[0])[:, None, None] < hw[0]) & (jnp.arange(shape[1])[None, :, None] < hw[1])


# ------------------------------------------------------------------------------------------------- noise


def gaussian_noise(key, img: jax.Array, sigma, gray) -> jax.Array:
    """BasicSR ``generate_gaussian_noise_pt`` for one HWC image: N(0, (σ/255)²) per value, or (``gray``) one
    field shared by the three channels."""
    kc, kg = jax.random.split(key)
    color = jax.random.normal(kc, img.shape)
    mono = jax.random.normal(kg, img.shape[:2] + (1,))
    return jnp.where(gray, mono, color) * (sigma / 255.0)


def _shot_noise(key, img: jax.Array, valid: jax.Array) -> jax.Array:
    """Poisson noise of ``img`` quantised to 8 bits, with ``vals`` = the number of grey levels present in the
    valid region rounded up to a power of two: ``Poisson(img·vals)/vals − img`` (skimage's ``random_noise``)."""
    levels = jnp.clip(jnp.round(img * 255.0), 0, 255)
    img = levels / 255.0
    present = jnp.zeros(256, jnp.int32).at[levels.astype(jnp.int32).ravel()].max(
        jnp.broadcast_to(valid, img.shape).astype(jnp.int32).ravel())
    count = present.sum()
    powers = 2 ** jnp.arange(9)
    vals = jnp.min(jnp.where(powers >= count, powers, 512)).astype(jnp.float32)
    return jax.random.poisson(key, img * vals).astype(jnp.float32) / vals - img


def poisson_noise(key, img: jax.Array, scale, gray, valid=True) -> jax.Array:
    """BasicSR ``generate_poisson_noise_pt`` for one HWC image: shot noise times ``scale``, computed on the
    image or (``gray``) on its luma (torchvision ``rgb_to_grayscale`` weights) and repeated over channels.
    ``valid`` (broadcastable to (H, W, 1)) limits the grey-level count to part of a canvas."""
    kc, kg = jax.random.split(key)
    luma = 0.2989 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]
    valid = jnp.asarray(valid)
    mono = _shot_noise(kg, luma[..., None], valid)
    color = _shot_noise(kc, img, valid)
    return jnp.where(gray, mono, color) * scale


def _random_noise(key, img, stage: _Stage, valid) -> jax.Array:
    """``random_add_gaussian_noise_pt`` or ``random_add_poisson_noise_pt`` (clip, no rounding)."""
    k = jax.random.split(key, 6)
    sigma = jax.random.uniform(k[0], minval=stage.noise_range[0], maxval=stage.noise_range[1])
    scale = jax.random.uniform(k[1], minval=stage.poisson_scale_range[0], maxval=stage.poisson_scale_range[1])
    gray = jax.random.uniform(k[2]) < stage.gray_noise_prob
    use_gaussian = jax.random.uniform(k[3]) < stage.gaussian_noise_prob
    noise = jnp.where(use_gaussian, gaussian_noise(k[4], img, sigma, gray), poisson_noise(k[5], img, scale, gray,
                                                                                          valid))
    return jnp.clip(img + noise, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------- pipeline


def _random_scale(key, stage: _Stage) -> jax.Array:
    """Up U(1, high), down U(low, 1) or keep 1, weighted by ``resize_prob``."""
    ku, kd = jax.random.split(key)
    updown = jax.random.choice(ku, 3, p=jnp.asarray(stage.resize_prob) / sum(stage.resize_prob))
    u = jax.random.uniform(kd)
    lo, hi = stage.resize_range
    return jnp.stack([1.0 + u * (hi - 1.0), lo + u * (1.0 - lo), jnp.float32(1.0)])[updown]


def _random_jpeg(key, img, quality_range, valid) -> jax.Array:
    """Clamp, zero outside the valid region, DiffJPEG at a quality drawn from ``quality_range``."""
    lo, hi = quality_range
    quality = jax.random.uniform(key, minval=lo, maxval=hi)
    return jpeg(jnp.where(valid, jnp.clip(img, 0.0, 1.0), 0.0), quality)


def _degrade_one(key, hq: jax.Array, config: RealESRGANConfig) -> jax.Array:
    s1, s2 = _stage(config, second=False), _stage(config, second=True)
    k = jax.random.split(key, 16)
    h, w = hq.shape[:2]
    lq_h, lq_w = h // config.scale, w // config.scale
    canvas1 = (math.floor(h * s1.resize_range[1]), math.floor(w * s1.resize_range[1]))
    canvas2 = (math.floor(lq_h * s2.resize_range[1]), math.floor(lq_w * s2.resize_range[1]))
    n_modes = len(RESIZE_MODES)

    # first degradation: blur, resize by scale_factor, noise, JPEG
    out = blur_2d(hq, _random_kernel(k[0], s1))
    scale = _random_scale(k[1], s1)
    hw1 = (jnp.clip(jnp.floor(h * scale).astype(jnp.int32), 1, canvas1[0]),
           jnp.clip(jnp.floor(w * scale).astype(jnp.int32), 1, canvas1[1]))
    out = resize_valid(out, (h, w), hw1, (1.0 / scale, 1.0 / scale), jax.random.randint(k[2], (), 0, n_modes),
                       canvas1)
    valid1 = _valid_mask(canvas1, hw1)
    out = _random_noise(k[3], out, s1, valid1)
    out = _random_jpeg(k[4], out, s1.jpeg_range, valid1)

    # second degradation: blur (with probability), resize to size int(H / scale · s), noise
    kernel2 = jnp.where(jax.random.uniform(k[5]) < config.second_blur_prob, _random_kernel(k[6], s2), _pulse())
    out = blur_valid(out, kernel2, hw1)
    scale = _random_scale(k[7], s2)
    hw2 = (jnp.clip(jnp.floor(lq_h * scale).astype(jnp.int32), 1, canvas2[0]),
           jnp.clip(jnp.floor(lq_w * scale).astype(jnp.int32), 1, canvas2[1]))
    ratio2 = tuple(a.astype(jnp.float32) / b for a, b in zip(hw1, hw2))
    out = resize_valid(out, hw1, hw2, ratio2, jax.random.randint(k[8], (), 0, n_modes), canvas2)
    valid2 = _valid_mask(canvas2, hw2)
    out = _random_noise(k[9], out, s2, valid2)

    # final: [resize to the LQ size + sinc] and JPEG, in random order
    size = 7 + 2 * jax.random.randint(k[10], (), 0, len(KERNEL_SIZES))
    cutoff = jax.random.uniform(k[11], minval=np.pi / 3, maxval=np.pi)
    sinc = jnp.where(jax.random.uniform(k[12]) < config.final_sinc_prob, circular_lowpass_kernel(cutoff, size),
                     _pulse())
    mode = jax.random.randint(k[13], (), 0, n_modes)
    ratio3 = (hw2[0].astype(jnp.float32) / lq_h, hw2[1].astype(jnp.float32) / lq_w)

    def resize_back(img):
        return blur_2d(resize_valid(img, hw2, (lq_h, lq_w), ratio3, mode, (lq_h, lq_w)), sinc)

    quality_key = k[14]
    resize_first = _random_jpeg(quality_key, resize_back(out), config.jpeg_range2, True)
    jpeg_first = resize_back(_random_jpeg(quality_key, out, config.jpeg_range2, valid2))
    out = jnp.where(jax.random.uniform(k[15]) < 0.5, resize_first, jpeg_first)
    return jnp.clip(jnp.round(out * 255.0), 0, 255) / 255.0


def realesrgan_degrade(key: jax.Array, hq: jax.Array, config: RealESRGANConfig = RealESRGANConfig()) -> jax.Array:
    """Degrade an NHWC batch in [0, 1] into its (N, H/scale, W/scale, 3) low-quality counterpart.

    Image ``i`` uses ``jax.random.fold_in(key, i)`` alone, so its result does not depend on the batch size or on
    the other images. Jit-able; for a fixed input shape and config one compilation serves every key.
    """
    hq = jnp.asarray(hq, jnp.float32)
    if hq.ndim != 4 or hq.shape[-1] != 3:
        raise JaxirInputError(f"realesrgan_degrade expects an RGB batch (N, H, W, 3), got shape {hq.shape}")
    h, w = hq.shape[1:3]
    if h % config.scale or w % config.scale or min(h, w) // config.scale <= _K // 2:
        raise JaxirInputError(f"realesrgan_degrade needs H and W divisible by scale={config.scale} and at least "
                              f"{config.scale * (_K // 2 + 1)} pixels (a 21x21 kernel at the output size), got {h}x{w}")
    keys = jax.vmap(partial(jax.random.fold_in, key))(jnp.arange(hq.shape[0]))
    return jax.vmap(partial(_degrade_one, config=config))(keys, hq)
