"""NIQE, the Natural Image Quality Evaluator, as in the official MATLAB release.

Mittal, Soundararajan & Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE SPL 2013;
``computequality.m`` of niqe_release.zip, step by step:

1. ``rgb2gray`` of the uint8 image (:func:`jaxir.metrics.color.rgb_to_gray_uint8`), then ``double``;
   crop to whole 96×96 blocks (bottom/right).
2. At two scales (full, then ``imresize(im, 0.5)``, MATLAB bicubic with antialiasing):
   MSCN coefficients ``(im − μ) / (σ + 1)`` with μ, σ from a 7×7 Gaussian (σ = 7/6), replicate border (eq. 1).
3. Per block (96 px at scale 1, 48 px at scale 2): AGGD fit of the coefficients (α, (βl + βr)/2) and of the
   products with the four neighbours (circular shift within the block) (α, η, βl, βr) — 18 features,
   moment matching over the grid α ∈ 0.2:0.001:10 (eqs. 7–8).
4. μ = ``nanmean`` over blocks, Σ = ``nancov`` (rows with any NaN dropped); the score is
   ``sqrt((μp − μ)ᵀ pinv((Σp + Σ)/2) (μp − μ))`` (eq. 10) with the released pristine model.

Flat regions, as MATLAB treats them: a block without negative (or positive) values has an undefined
one-sided deviation (``mean([])`` = NaN); MATLAB's ``min`` over an all-NaN array returns its first index, so
α = 0.2, and the NaN entries are dropped by ``nanmean``/``nancov``.

Flat and symmetric neighbourhoods, as MATLAB computes them (:func:`_mscn`): where the window's weighted mean
equals the centre pixel c in exact arithmetic (all 49 values equal, or values balancing around the centre),
MATLAB's ``im − μ`` is not 0 but a residue of ~1e-14 with the sign of c, and that sign alone moves the pixel
between the two sides of the AGGD fit. The cause is documented behaviour: ``fspecial`` and
``window/sum(sum(window))`` normalise in floating point, and ``imfilter`` applies the window through its own
float weights (for double input and this rank-one 7×7 kernel, ``imfilter.m`` of 2013, whose separable path
starts at 49 elements for double, filters with the SVD factors ``u(:,1)·sqrt(s(1))`` and
``v(:,1)'·sqrt(s(1))``; later versions, whose threshold is 150 (``getSeparableFilterThreshold``), call ``conv2``
with the 2-D window). Those weights sum to 1 only up
to round-off, and here slightly below it (in float64 with NumPy: the window's entries exactly to 1 − 2.0e-17,
the SVD factors to 1 − 8.8e-17), so μ = c·Σw lies just below |c| and ``im − μ`` keeps the sign of c (0 for
c = 0, where every product is 0). MATLAB's accumulation order and SVD round-off are not documented to the last
bit, and a literal float re-enactment depends on both (7.81 to 8.00 on the release's ``image3.bmp`` for
plausible orders), so jaxir applies the rule instead: a residual below :data:`ZERO_TOLERANCE` (its own filter's
round-off is ~1e-13) becomes ``im − nextafter(im, 0)``, μ rounded just towards 0. On ``image3.bmp``, whose
posterised regions are flat, this gives 8.0364 against MATLAB's published 8.0362 (exact zeros: 7.6303); the
other three release images have no such regions and agree to 1e-4 either way (tests/test_niqe.py).
Everything runs in float64; float32 implementations (pyiqa, BasicSR's resize), or ones on the 16..235
Y channel (where black becomes 16), drift on such images. ``pinv`` uses MATLAB's tolerance
``max(size)·eps·‖A‖₂``.
"""

from __future__ import annotations

import functools
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import gamma as gamma_fn

from jaxir.degradations.resize import matlab_contributions
from jaxir.metrics.color import rgb_to_gray_uint8
from jaxir.validation import as_rgb_batch, require_min_size

BLOCK = 96
FEATURES_PER_SCALE = 18
SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # circshift offsets of computefeature.m
ZERO_TOLERANCE = 1e-9  # grey levels (0..255): |im − μ| below this is an exact zero plus round-off


@functools.cache
def pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """(μp (36,), Σp (36, 36)) of the official release (see NIQE_MODEL_NOTICE.md)."""
    with resources.files("jaxir.metrics").joinpath("niqe_pristine_model.npz").open("rb") as f:
        data = np.load(f)
        return data["mu"].astype(np.float64), data["cov"].astype(np.float64)


@functools.cache
def _aggd_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The α grid 0.2:0.001:10, ρ(α) = Γ(2/α)² / (Γ(1/α) Γ(3/α)), and the per-α constants of eqs. 7–8."""
    alpha = np.round(0.2 + 0.001 * np.arange(9801), 10)
    rho = gamma_fn(2 / alpha) ** 2 / (gamma_fn(1 / alpha) * gamma_fn(3 / alpha))
    beta_scale = np.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    mean_scale = gamma_fn(2 / alpha) / gamma_fn(1 / alpha)
    return alpha, rho, beta_scale, mean_scale


@functools.cache
def gaussian_window_1d() -> np.ndarray:
    """1-D factor of ``fspecial('gaussian', 7, 7/6)`` normalised (the 2-D window is its outer product)."""
    x = np.arange(-3, 4, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * (7 / 6) ** 2))
    return g / g.sum()


def _filter_replicate(im):
    """``imfilter(im, window, 'replicate')`` with the separable NIQE window, for (N, H, W)."""
    g = gaussian_window_1d()
    p = jnp.pad(im, ((0, 0), (3, 3), (3, 3)), mode="edge")
    h, w = im.shape[1], im.shape[2]
    rows = sum(g[i] * p[:, i:i + h, :] for i in range(7))
    return sum(g[j] * rows[:, :, j:j + w] for j in range(7))


def _mscn(im):
    """Mean-subtracted contrast-normalised coefficients ``(im − μ)/(σ + 1)`` (eq. 1 of the paper).

    Where ``im − μ`` is below :data:`ZERO_TOLERANCE` grey levels (a flat or symmetric neighbourhood: exactly 0
    in exact arithmetic) it is replaced by ``im − nextafter(im, 0)``, one unit in the last place with the sign
    of ``im``: MATLAB's window weights sum to slightly less than 1, so its μ lies just below |im| (module
    docstring). The value is negligible in every sum of the AGGD fit; its sign decides the pixel's side.
    """
    mu = _filter_replicate(im)
    sigma = jnp.sqrt(jnp.abs(_filter_replicate(im * im) - mu * mu))
    centred = im - mu
    residue = im - jnp.nextafter(im, jnp.zeros_like(im))
    return jnp.where(jnp.abs(centred) < ZERO_TOLERANCE, residue, centred) / (sigma + 1.0)


def _halve(im):
    """``imresize(im, 0.5)`` (MATLAB bicubic, antialiased) of (N, H, W) with even sides. At scale ½ every output
    pixel has the same taps (``matlab_contributions``) at stride 2, and MATLAB's mirrored border is a
    symmetric pad, so each axis is a sum of strided slices."""
    for axis in (1, 2):
        n = im.shape[axis]
        src, w = matlab_contributions(n, n // 2, 0.5)
        taps = w[n // 4]                      # an interior row; its first source index is 2·(n//4) − 4
        offset = 2 * (n // 4) - int(src[n // 4, 0])
        pad = [(0, 0)] * im.ndim
        pad[axis] = (offset, len(taps))
        p = jnp.pad(im, pad, mode="symmetric")
        im = sum(float(t) * jax.lax.slice_in_dim(p, k, k + n - 1, stride=2, axis=axis)
                 for k, t in enumerate(taps) if t != 0.0)
    return im


def _aggd(v):
    """``estimateaggdparam.m`` over the last axis: (α index, βl, βr); NaN where a side is empty, as in MATLAB.

    Sums of v², min(v, 0)², max(v, 0)², |v|, sign v and |sign v| (the counts of negative and positive values
    follow exactly; this mix of reductions compiles to one fast loop on CPU, unlike boolean counts)."""
    _, rho, beta_scale, _ = (jnp.asarray(t) for t in _aggd_tables())
    total_sq, left_sq = jnp.sum(v * v, -1), jnp.sum(jnp.minimum(v, 0.0) ** 2, -1)
    sign_sum, nonzero = jnp.sum(jnp.sign(v), -1), jnp.sum(jnp.abs(jnp.sign(v)), -1)
    right_sq = jnp.sum(jnp.maximum(v, 0.0) ** 2, -1)
    left = jnp.sqrt(left_sq / ((nonzero - sign_sum) / 2))     # 0/0 → NaN like MATLAB's mean([])
    right = jnp.sqrt(right_sq / ((nonzero + sign_sum) / 2))
    n = v.shape[-1]
    gammahat = left / right
    rhat = (jnp.sum(jnp.abs(v), -1) / n) ** 2 / (total_sq / n)
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    # MATLAB's min((ρ − r̂)²) over the grid: ρ increases with α, so the minimum is at one of the two grid points
    # around r̂ (the lower one on a tie, MATLAB's first index); an all-NaN error (r̂ NaN) gives index 0.
    hi = jnp.clip(jnp.searchsorted(rho, rhatnorm), 1, rho.shape[0] - 1)
    lo = hi - 1
    idx = jnp.where((rhatnorm - rho[lo]) ** 2 <= (rho[hi] - rhatnorm) ** 2, lo, hi)
    idx = jnp.where(jnp.isnan(rhatnorm), 0, idx)
    return idx, left * beta_scale[idx], right * beta_scale[idx]


def _block_features(blocks):
    """``computefeature.m`` for blocks (..., b, b): 18 features per block."""
    alpha_grid, _, _, mean_scale = (jnp.asarray(t) for t in _aggd_tables())
    flat = blocks.reshape(blocks.shape[:-2] + (-1,))
    idx, bl, br = _aggd(flat)
    feats = [alpha_grid[idx], (bl + br) / 2]
    for shift in SHIFTS:
        pair = flat * jnp.roll(blocks, shift, axis=(-2, -1)).reshape(flat.shape)
        idx, bl, br = _aggd(pair)
        feats += [alpha_grid[idx], (br - bl) * mean_scale[idx], bl, br]
    return jnp.stack(feats, axis=-1)


def _features(gray):
    """(N, blocks, 36) features of cropped grayscale images (N, H, W), H and W multiples of 96."""
    n, h, w = gray.shape
    nbh, nbw = h // BLOCK, w // BLOCK
    per_scale = []
    im = gray
    for scale in (1, 2):
        s = BLOCK // scale
        structdis = _mscn(im)
        blocks = structdis.reshape(n, nbh, s, nbw, s).transpose(0, 1, 3, 2, 4).reshape(n, nbh * nbw, s, s)
        per_scale.append(_block_features(blocks))
        if scale == 1:
            im = _halve(im)
    return jnp.concatenate(per_scale, axis=-1)


def _mvg_distance(feats):
    """Eq. 10 for one image's (blocks, 36) features, with MATLAB's nanmean/nancov/pinv semantics."""
    mu_p, cov_p = (jnp.asarray(t) for t in pristine_model())
    mu = jnp.nanmean(feats, axis=0)
    complete = jnp.all(jnp.isfinite(feats), axis=1)
    n_complete = jnp.sum(complete)
    mu_c = jnp.sum(jnp.where(complete[:, None], feats, 0.0), 0) / n_complete
    centred = jnp.where(complete[:, None], feats - mu_c, 0.0)
    # MATLAB cov normalises by n − 1, and by n (→ zeros) for a single observation.
    cov = centred.T @ centred / jnp.maximum(n_complete - 1, 1)
    cov = jnp.where(n_complete > 0, cov, jnp.nan)
    a = (cov_p + cov) / 2
    inv = jnp.linalg.pinv(a, rtol=a.shape[0] * jnp.finfo(jnp.float64).eps)
    d = mu_p - mu
    return jnp.sqrt(d @ inv @ d)


@jax.jit
def _niqe(x):
    gray = rgb_to_gray_uint8(x.astype(jnp.float64))
    h, w = gray.shape[1], gray.shape[2]
    gray = gray[:, : h - h % BLOCK, : w - w % BLOCK]
    return jax.vmap(_mvg_distance)(_features(gray))


def niqe(x):
    """NIQE score (lower is better) of an RGB image HWC (→ scalar) or batch NHWC (→ one per image), in [0, 1].

    Needs at least one 96×96 block. The score is NaN only when no block has any texture (a flat image).
    """
    with jax.enable_x64(True):
        xb, batched = as_rgb_batch(x, "niqe")
        require_min_size(xb, BLOCK, BLOCK, "NIQE (one 96x96 block)")
        out = _niqe(xb)
    return out if batched else out[0]
