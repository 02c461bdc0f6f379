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
result is the official computation at the drawn sizes, to float32 rounding; nothing is bucketed. The two
orders are one ``lax.scan`` step applied with each order's settings, so they are traced and compiled once.

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
from jaxir.degradations.noise import per_sample_keys
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


def _stage_params(c: RealESRGANConfig, h: int, w: int, max_sizes) -> dict[str, jax.Array]:
    """Both degradation orders' settings as arrays with a leading axis of 2 (first, second), to be scanned over.

    ``size`` is the base the drawn resize scale multiplies (H×W, then the LQ size H/scale × W/scale), and
    ``max_size`` the largest result, the static canvas it must fit (``max_sizes`` per order). ``by_factor``
    marks the first order's ``F.interpolate(scale_factor=s)``, whose source spacing is 1/s, where the second
    order's ``F.interpolate(size=...)`` uses input/output sizes. The first order always blurs and ends with
    JPEG; the second blurs with probability ``second_blur_prob`` and leaves JPEG to the final step.
    """
    def row(second: bool) -> dict:
        def get(name):
            return getattr(c, name + ("2" if second else ""))

        kernel_w = [sum(p for n, p in zip(get("kernel_list"), get("kernel_prob")) if n == t) for t in KERNEL_TYPES]
        return {"kernel_cdf": np.cumsum(kernel_w) / np.sum(kernel_w), "sinc_prob": get("sinc_prob"),
                "blur_prob": c.second_blur_prob if second else 1.0, "blur_sigma": get("blur_sigma"),
                "betag_range": get("betag_range"), "betap_range": get("betap_range"),
                "resize_cdf": np.cumsum(get("resize_prob")) / np.sum(get("resize_prob")),
                "resize_range": get("resize_range"), "size": (h // c.scale, w // c.scale) if second else (h, w),
                "max_size": max_sizes[second], "by_factor": not second,
                "gaussian_noise_prob": get("gaussian_noise_prob"),
                "noise_range": get("noise_range"), "poisson_scale_range": get("poisson_scale_range"),
                "gray_noise_prob": get("gray_noise_prob"), "jpeg": not second, "jpeg_range": get("jpeg_range")}

    rows = (row(False), row(True))
    return {k: jnp.asarray(np.stack([np.asarray(r[k], np.float32) for r in rows])) for k in rows[0]}


# ----------------------------------------------------------------------------------------------- kernels


def _within(kernel: jax.Array, size) -> jax.Array:
    """Zero a 21×21 kernel outside its centred ``size``×``size`` support and renormalise: the same as building
    the kernel on a ``size`` grid and zero-padding it, as ``RealESRGANDataset`` does (``np.pad``)."""
    r = np.abs(np.arange(_K) - _K // 2)
    inside = (2 * r[:, None] < size) & (2 * r[None, :] < size)  # |offset| <= size // 2, size odd
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
    family = kernel_type // 2
    kernel = jnp.where(family == 0, anisotropic_gaussian_kernel(_K, sigma_x, sigma_y, theta),
                       jnp.where(family == 1, generalized_gaussian_kernel(_K, sigma_x, sigma_y, theta, beta),
                                 plateau_kernel(_K, sigma_x, sigma_y, theta, beta)))
    return _within(kernel, size)


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


def _between(u, lo, hi):
    """Map U(0, 1) to U(lo, hi)."""
    return lo + u * (hi - lo)


def _index(u, n: int) -> jax.Array:
    """Map U(0, 1) to a uniform index in 0..n-1 (``random.choice`` over n items)."""
    return jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)


def _categorical(u, cdf: jax.Array) -> jax.Array:
    """Map U(0, 1) to an index drawn with the cumulative probabilities ``cdf`` (``random.choices``)."""
    return jnp.sum(jnp.asarray(u)[..., None] >= cdf[:-1], axis=-1).astype(jnp.int32)


def _two_sided(u_side, u, lo, hi):
    """BasicSR's beta draw: U(lo, 1) or U(1, hi), each with probability ½."""
    return jnp.where(u_side < 0.5, _between(u, lo, 1.0), _between(u, 1.0, hi))


_KERNEL_DRAWS = 9


def _random_kernel(u: jax.Array, p: dict) -> jax.Array:
    """One blur kernel as ``RealESRGANDataset`` draws it, from ``_KERNEL_DRAWS`` U(0, 1) values: size uniform in
    7..21, then a sinc with probability ``sinc_prob`` (cutoff U(π/3, π) below size 13, U(π/5, π) from 13), else
    ``random_mixed_kernels`` (σx, σy in ``blur_sigma``, θ in [−π, π], β two-sided)."""
    size = 7 + 2 * _index(u[0], len(KERNEL_SIZES))
    cutoff = _between(u[1], jnp.where(size < 13, np.pi / 3, np.pi / 5), np.pi)
    ktype = _categorical(u[2], p["kernel_cdf"])
    sx, sy = _between(u[3], *p["blur_sigma"]), _between(u[4], *p["blur_sigma"])
    theta = _between(u[5], -np.pi, np.pi)
    beta = jnp.where(ktype // 2 == 1, _two_sided(u[6], u[7], *p["betag_range"]),
                     _two_sided(u[6], u[7], *p["betap_range"]))
    return jnp.where(u[8] < p["sinc_prob"], circular_lowpass_kernel(cutoff, size),
                     mixed_kernel(ktype, size, sx, sy, theta, beta))


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
    start = jax.lax.div(i * in_len, out_len)  # non-negative: truncation is floor
    end = jax.lax.div((i + 1) * in_len + out_len - 1, out_len)
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
    weights = jnp.where(mode == 0, area, jnp.where(mode == 1, linear, cubic))
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


def gaussian_noise(z: jax.Array, sigma, gray) -> jax.Array:
    """BasicSR ``generate_gaussian_noise_pt`` for one HWC image: N(0, (σ/255)²) per value, or (``gray``) one
    field shared by the three channels. ``z`` holds standard normal draws, (H, W, 4): three colour fields and a
    gray one."""
    return jnp.where(gray, z[..., 3:], z[..., :3]) * (sigma / 255.0)


def _poisson_vals(levels: jax.Array, valid: jax.Array) -> jax.Array:
    """``2^ceil(log2(#distinct levels))`` over the valid region of an array of 8-bit levels: BasicSR's
    ``len(torch.unique(img))`` rounded up to a power of two (skimage ``random_noise(mode='poisson')``)."""
    present = jnp.zeros(256, jnp.int32).at[levels.astype(jnp.int32).ravel()].max(
        jnp.broadcast_to(valid, levels.shape).astype(jnp.int32).ravel())
    powers = 2 ** jnp.arange(9)
    return jnp.min(jnp.where(powers >= present.sum(), powers, 512)).astype(jnp.float32)


def poisson_noise(key, img: jax.Array, scale, gray, valid=True) -> jax.Array:
    """BasicSR ``generate_poisson_noise_pt`` for one HWC image: ``(Poisson(q·vals)/vals − q)·scale`` where ``q``
    is the image (or, if ``gray``, its luma with torchvision's ``rgb_to_grayscale`` weights, repeated over the
    channels) rounded to 8 bits. ``valid`` (broadcastable to (H, W, 1)) limits the grey-level count to part of
    a canvas."""
    luma = 0.2989 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]
    levels = jnp.clip(jnp.round(jnp.concatenate([img, luma[..., None]], axis=-1) * 255.0), 0, 255)
    valid = jnp.asarray(valid)
    vals = jnp.stack([_poisson_vals(levels[..., :3], valid)] * 3 + [_poisson_vals(levels[..., 3:], valid)])
    q = levels / 255.0
    noise = jax.random.poisson(key, q * vals).astype(jnp.float32) / vals - q  # colour and gray, in one draw
    return jnp.where(gray, noise[..., 3:], noise[..., :3]) * scale


_NOISE_DRAWS = 4


def _random_noise(key, u: jax.Array, z: jax.Array, img, p: dict, valid) -> jax.Array:
    """``random_add_gaussian_noise_pt`` or ``random_add_poisson_noise_pt`` (clip, no rounding); ``u`` holds
    ``_NOISE_DRAWS`` U(0, 1) values, ``z`` the standard normal fields of :func:`gaussian_noise`, ``key`` seeds
    the Poisson draw."""
    sigma = _between(u[0], *p["noise_range"])
    scale = _between(u[1], *p["poisson_scale_range"])
    gray = u[2] < p["gray_noise_prob"]
    noise = jnp.where(u[3] < p["gaussian_noise_prob"], gaussian_noise(z, sigma, gray),
                      poisson_noise(key, img, scale, gray, valid))
    return jnp.clip(img + noise, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------- pipeline


def _random_scale(u: jax.Array, p: dict) -> jax.Array:
    """Up U(1, high), down U(low, 1) or keep 1, weighted by ``resize_prob`` (``u``: two U(0, 1) values)."""
    lo, hi = p["resize_range"]
    updown = _categorical(u[0], p["resize_cdf"])
    return jnp.where(updown == 0, _between(u[1], 1.0, hi), jnp.where(updown == 1, _between(u[1], lo, 1.0), 1.0))


def _jpeg_valid(img, quality, valid) -> jax.Array:
    """Clamp to [0, 1] (as ``feed_data`` does before DiffJPEG), zero outside the valid region, compress."""
    return jpeg(jnp.where(valid, jnp.clip(img, 0.0, 1.0), 0.0), quality)


# U(0, 1) values per degradation order, by use.
_ORDER_DRAWS = {"blur": 1, "kernel": _KERNEL_DRAWS, "scale": 2, "mode": 1, "noise": _NOISE_DRAWS, "quality": 1}
_FINAL_DRAWS = {"sinc_size": 1, "sinc_cutoff": 1, "sinc": 1, "mode": 1, "quality": 1, "order": 1}


def _split_draws(u: jax.Array, sizes: dict) -> dict:
    return dict(zip(sizes, jnp.split(u, np.cumsum(list(sizes.values()))[:-1], axis=-1)))


def _degradation_order(carry, xs, canvas: tuple[int, int]):
    """One classical degradation (blur, resize, noise, JPEG for the first order) of the valid region ``hw`` of
    the canvas ``x``; ``xs`` holds this order's settings and random draws. A ``lax.scan`` body, so that both
    orders share one compiled program."""
    x, hw = carry
    p, u, z, key = xs
    u = _split_draws(u, _ORDER_DRAWS)
    kernel = jnp.where(u["blur"][0] < p["blur_prob"], _random_kernel(u["kernel"], p), _pulse())
    x = blur_valid(x, kernel, hw)
    scale = _random_scale(u["scale"], p)
    hw_out = jnp.clip(jnp.floor(p["size"] * scale).astype(jnp.int32), 1, p["max_size"].astype(jnp.int32))
    ratio = jnp.where(p["by_factor"] > 0, 1.0 / scale, hw.astype(jnp.float32) / hw_out)
    x = resize_valid(x, hw, hw_out, ratio, _index(u["mode"][0], len(RESIZE_MODES)), canvas)
    valid = _valid_mask(canvas, hw_out)
    x = _random_noise(key, u["noise"], z, x, p, valid)
    x = jnp.where(p["jpeg"] > 0, _jpeg_valid(x, _between(u["quality"][0], *p["jpeg_range"]), valid), x)  # 1st only
    return (x, hw_out), None


def _degrade_one(key, hq: jax.Array, config: RealESRGANConfig) -> jax.Array:
    h, w = hq.shape[:2]
    lq = (h // config.scale, w // config.scale)
    # One canvas holds every intermediate image: the largest first-order upscale (≥ the HQ size) and the
    # largest second-order one, whose valid region is then cropped to a smaller static canvas.
    canvas2 = (math.floor(lq[0] * config.resize_range2[1]), math.floor(lq[1] * config.resize_range2[1]))
    canvas = (max(math.floor(h * config.resize_range[1]), canvas2[0]),
              max(math.floor(w * config.resize_range[1]), canvas2[1]))
    # Each PRNG call site adds compilation time: one uniform draw covers every scalar choice, one normal draw
    # the Gaussian noise fields of both orders.
    k_uniform, k_normal, k_poisson = jax.random.split(key, 3)
    n_order = sum(_ORDER_DRAWS.values())
    u = jax.random.uniform(k_uniform, (2 * n_order + sum(_FINAL_DRAWS.values()),))
    xs = (_stage_params(config, h, w, (canvas, canvas2)), u[:2 * n_order].reshape(2, n_order),
          jax.random.normal(k_normal, (2, *canvas, 4)), jax.random.split(k_poisson))

    x = jnp.pad(hq, ((0, canvas[0] - h), (0, canvas[1] - w), (0, 0)))
    (x, hw), _ = jax.lax.scan(partial(_degradation_order, canvas=canvas), (x, jnp.asarray([h, w])), xs)
    x = x[:canvas2[0], :canvas2[1]]

    # final step: [resize to the LQ size + sinc filter with probability] and JPEG, in random order
    u = _split_draws(u[2 * n_order:], _FINAL_DRAWS)
    size = 7 + 2 * _index(u["sinc_size"][0], len(KERNEL_SIZES))
    cutoff = _between(u["sinc_cutoff"][0], np.pi / 3, np.pi)
    sinc = jnp.where(u["sinc"][0] < config.final_sinc_prob, circular_lowpass_kernel(cutoff, size), _pulse())
    mode = _index(u["mode"][0], len(RESIZE_MODES))
    quality = _between(u["quality"][0], *config.jpeg_range2)
    jpeg_first = u["order"][0] < 0.5
    x = jnp.where(jpeg_first, _jpeg_valid(x, quality, _valid_mask(canvas2, hw)), x)
    x = blur_2d(resize_valid(x, hw, lq, hw.astype(jnp.float32) / jnp.asarray(lq), mode, lq), sinc)
    x = jnp.where(jpeg_first, x, _jpeg_valid(x, quality, True))
    return jnp.clip(jnp.round(x * 255.0), 0, 255) / 255.0


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
    return jax.vmap(partial(_degrade_one, config=config))(per_sample_keys(key, hq.shape[0]), hq)
