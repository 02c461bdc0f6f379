"""Blur kernels, blurring, noise and the eq. (1) Degradation, against SciPy, torch and BasicSR references."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxir.degradations import (Degradation, blur_2d, blur_separable, gaussian_kernel_1d, gaussian_noise,
                                kernel_size_for_sigma, per_sample_keys, study_levels)
from jaxir.errors import JaxirInputError

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-5  # float32 against float64 references; measured ≤ 1.2e-6 for blur, ≤ 1e-6 for the composition




def _img(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _smooth(shape, seed=0, lo=0.2, hi=0.8):
    """A smooth random image spanning [lo, hi]."""
    x = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), (0, 2, 2, 0)[-len(shape):])
    return (lo + (hi - lo) * (x - x.min()) / (x.max() - x.min())).astype(np.float32)


# One batch and one degradation shared by the composition, per-sample and jit tests (eager JAX compiles each op
# per shape: sharing shapes keeps the file fast). The batch spans [0, 1] so that the final clip is exercised.
MAIN = Degradation(blur_sigma=1.5, scale=2, noise=0.1)
MAIN_SHAPE = (3, 40, 34, 3)


def _main_batch():
    return _smooth(MAIN_SHAPE, seed=6, lo=0.0, hi=1.0)


def _scipy_blur(x, kernel2d):
    """Per-channel correlation with mode 'mirror' (d c b | a b c d, i.e. numpy/torch 'reflect')."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for idx in np.ndindex(*x.shape[:-3]):
        for c in range(x.shape[-1]):
            out[idx + (Ellipsis, c)] = ndimage.correlate(x[idx + (Ellipsis, c)], kernel2d, mode="mirror")
    return out


# --------------------------------------------------------------------------------------------------- kernels

@pytest.mark.parametrize("sigma,size", [(1, 7), (2, 13), (20, 121), (0.5, 5), (1.5, 11), (0.1, 3)])
def test_kernel_size_for_sigma(sigma, size):
    assert kernel_size_for_sigma(sigma) == size


@pytest.mark.parametrize("sigma", [0, -1.0])
def test_kernel_size_for_sigma_rejects_nonpositive(sigma):
    with pytest.raises(JaxirInputError, match="positive"):
        kernel_size_for_sigma(sigma)


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.0, 4.0])
def test_gaussian_kernel_outer_product_matches_basicsr(basicsr, sigma):
    g = gaussian_kernel_1d(sigma)
    size = kernel_size_for_sigma(sigma)
    assert g.shape == (size,) and abs(g.sum() - 1) < 1e-12
    expected = basicsr.degradations.bivariate_Gaussian(size, sigma, sigma, 0.0, isotropic=True)
    np.testing.assert_allclose(np.outer(g, g), expected, rtol=0, atol=1e-12)


def test_gaussian_kernel_explicit_size():
    g = gaussian_kernel_1d(2.0, size=5)
    x = np.arange(-2, 3)
    expected = np.exp(-x**2 / 8.0)
    np.testing.assert_allclose(g, expected / expected.sum(), atol=1e-15)


@pytest.mark.parametrize("params", [(3.0, 1.0, 0.4), (1.0, 2.5, -1.1), (2.0, 2.0, 0.3)])
def test_anisotropic_kernel_matches_basicsr(basicsr, params):
    sx, sy, th = params
    d = Degradation(blur_anisotropic=params)
    k = d.kernel()
    expected = basicsr.degradations.bivariate_Gaussian(kernel_size_for_sigma(max(sx, sy)), sx, sy, th, isotropic=False)
    assert k.shape == expected.shape
    np.testing.assert_allclose(k, expected, rtol=0, atol=1e-7)  # built in float32


# ------------------------------------------------------------------------------------------------------ blur

@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0])
def test_blur_separable_matches_scipy_mirror(sigma):
    x = _img((2, 37, 30, 3), seed=1)
    g = gaussian_kernel_1d(sigma)
    out = np.asarray(blur_separable(jnp.asarray(x), g.astype(np.float32)))
    expected = _scipy_blur(x, np.outer(g, g))
    assert out.shape == x.shape
    assert np.abs(out - expected).max() <= TOL


def test_blur_separable_hwc_input():
    x = _img((25, 19, 2), seed=2)
    g = gaussian_kernel_1d(1.5)
    out = np.asarray(blur_separable(jnp.asarray(x), g.astype(np.float32)))
    assert out.shape == x.shape
    assert np.abs(out - _scipy_blur(x[None], np.outer(g, g))[0]).max() <= TOL


def test_blur_2d_asymmetric_kernel_matches_scipy_and_torch():
    """An asymmetric kernel pins down the convention: correlation (F.conv2d), not convolution."""
    x = _img((2, 26, 33, 3), seed=3)
    k = np.random.default_rng(4).random((5, 7)).astype(np.float32)
    k /= k.sum()
    out = np.asarray(blur_2d(jnp.asarray(x), k))
    assert np.abs(out - _scipy_blur(x, k)).max() <= TOL
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    padded = F.pad(xt, (3, 3, 2, 2), mode="reflect")
    expected = F.conv2d(padded, torch.from_numpy(k)[None, None].repeat(3, 1, 1, 1), groups=3)
    assert np.abs(out - expected.numpy().transpose(0, 2, 3, 1)).max() <= TOL
    # a flipped kernel (true convolution) would give a clearly different answer
    assert np.abs(out - _scipy_blur(x, k[::-1, ::-1])).max() > 1e-2


def test_anisotropic_degradation_blur_matches_torch_filter2d():
    d = Degradation(blur_anisotropic=(2.5, 0.8, 0.6))
    x = _img((2, 40, 35, 3), seed=5)
    out = np.asarray(d(jnp.asarray(x)))
    k = torch.from_numpy(d.kernel().astype(np.float32))
    r = k.shape[0] // 2
    xt = F.pad(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), (r, r, r, r), mode="reflect")
    expected = F.conv2d(xt, k[None, None].repeat(3, 1, 1, 1), groups=3).clamp(0, 1).numpy().transpose(0, 2, 3, 1)
    assert np.abs(out - expected).max() <= TOL


def test_blur_rejects_image_smaller_than_kernel_radius():
    g = gaussian_kernel_1d(4.0)  # 25 taps, radius 12
    with pytest.raises(JaxirInputError, match="larger than"):
        blur_separable(jnp.zeros((1, 12, 40, 3)), g)
    with pytest.raises(JaxirInputError, match="larger than"):
        blur_2d(jnp.zeros((40, 10, 3)), np.ones((3, 21)) / 63)
    with pytest.raises(JaxirInputError):
        Degradation(blur_sigma=20)(jnp.zeros((1, 50, 50, 3)))  # radius 60
    assert blur_separable(jnp.zeros((1, 13, 13, 3)), g).shape == (1, 13, 13, 3)  # radius 12 < 13: fine


# ----------------------------------------------------------------------------------------------- Degradation

@pytest.mark.parametrize("resize", ["matlab", "torch"])
def test_degradation_equals_manual_composition(basicsr, resize):
    """eq. (1): blur (scipy) → ↓α (BasicSR imresize / torch interpolate) → + β·N(fold_in(key, i)) → clip."""
    d = dataclasses.replace(MAIN, resize=resize)
    x = _main_batch()
    key = jax.random.key(7)
    out = np.asarray(d(jnp.asarray(x), key))

    g = gaussian_kernel_1d(1.5)
    blurred = _scipy_blur(x, np.outer(g, g))
    if resize == "matlab":
        down = np.stack([basicsr.matlab_functions.imresize(im, 0.5) for im in blurred])
    else:
        t = torch.from_numpy(blurred.transpose(0, 3, 1, 2).astype(np.float32))
        down = F.interpolate(t, scale_factor=0.5, mode="bicubic", align_corners=False).numpy().transpose(0, 2, 3, 1)
    noise = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, i), down.shape[1:], jnp.float32))
                      for i in range(3)])
    expected = np.clip(down + 0.1 * noise, 0, 1)
    assert out.shape == expected.shape == (3, 20, 17, 3)
    assert np.abs(out - expected).max() <= TOL
    assert (expected == 0).any() or (expected == 1).any()  # the clip was exercised


def test_degradation_without_noise_needs_no_key_and_noise_needs_one():
    x = jnp.asarray(_smooth((1, 32, 32, 3)))
    assert Degradation(scale=4)(x).shape == (1, 8, 8, 3)
    with pytest.raises(JaxirInputError, match="key"):
        Degradation(noise=0.1)(x)


@pytest.mark.parametrize("noise,scale,gamma", [(0.0, 1, 1.0), (0.0, 2, 0.5), (0.0, 4, 0.25), (0.2, 1, 0.8),
                                               (0.1, 4, 0.225), (0.5, 3, 1 / 6)])
def test_retention(noise, scale, gamma):
    assert Degradation(scale=scale, noise=noise).retention == pytest.approx(gamma, abs=1e-15)


@pytest.mark.parametrize("d,task,label", [
    (Degradation(), "identity", "identity"),
    (Degradation(scale=4), "sr", "SR x4"),
    (Degradation(scale=2, blur_sigma=1), "sr", "SR x2 + blur σ=1"),
    (Degradation(blur_sigma=2), "deblur", "blur σ=2"),
    (Degradation(blur_sigma=2, noise=0.05), "deblur", "blur σ=2 + noise 0.05"),
    (Degradation(blur_anisotropic=(2, 1, 0.5)), "deblur", "blur σ=(2,1) θ=0.50"),
    (Degradation(noise=0.1), "denoise", "noise 0.1"),
    (Degradation(jpeg_quality=30), "dejpeg", "JPEG q30"),
    (Degradation(scale=1.5, noise=0.02, jpeg_quality=90), "sr", "SR x1.5 + noise 0.02 + JPEG q90"),
])
def test_task_and_label(d, task, label):
    assert d.task == task
    assert d.label == label


@pytest.mark.parametrize("kwargs", [
    {"blur_sigma": -1}, {"blur_sigma": 1, "blur_anisotropic": (1, 1, 0)}, {"blur_anisotropic": (1, 0, 0)},
    {"blur_anisotropic": (1, 2)}, {"scale": 0.5}, {"resize": "nearest"}, {"noise": -0.1}, {"noise": 1.0},
    {"jpeg_quality": 0}, {"jpeg_quality": 101},
])
def test_invalid_arguments(kwargs):
    with pytest.raises(JaxirInputError):
        Degradation(**kwargs)


def test_degradation_is_hashable_and_kernel():
    assert hash(Degradation(blur_sigma=2)) == hash(Degradation(blur_sigma=2.0))
    assert len({Degradation(scale=2), Degradation(scale=2), Degradation(scale=4)}) == 2
    assert Degradation(scale=2).kernel() is None
    k = Degradation(blur_sigma=2).kernel()
    assert k.shape == (13, 13) and abs(k.sum() - 1) < 1e-12


# ----------------------------------------------------------------------------------------------------- noise

def test_noise_determinism_and_key_dependence():
    d = Degradation(noise=0.1)
    x = jnp.asarray(_smooth((2, 24, 24, 3)))
    a, b = np.asarray(d(x, jax.random.key(1))), np.asarray(d(x, jax.random.key(1)))
    c = np.asarray(d(x, jax.random.key(2)))
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 0.05  # two independent N(0, 0.1²) draws: mean |diff| ≈ 0.113
    assert not np.array_equal(a[0], a[1])  # the two samples get different noise


def test_noise_per_sample_independent_of_batch():
    """What is guaranteed: a sample's noise is bit-identical whatever batch it is drawn in (it comes from its own
    key, ``fold_in(key, sample_id)``); the deterministic arithmetic around it (blur, resize) is equal to float
    rounding only — XLA may vectorise a batch of 3 differently from a batch of 1 (one ulp, 6e-8, seen on an AMD
    EPYC with the CLI's XLA flag)."""
    d, x, key = MAIN, jnp.asarray(_main_batch()), jax.random.key(3)
    noise = np.asarray(gaussian_noise(key, jnp.zeros_like(x), 1.0))
    for i in range(3):
        alone = np.asarray(gaussian_noise(key, jnp.zeros_like(x[i:i + 1]), 1.0, sample_ids=[i]))
        assert np.array_equal(alone[0], noise[i])
    batch = np.asarray(d(x, key))
    for i in range(3):
        alone = np.asarray(d(x[i:i + 1], key, sample_ids=[i]))
        np.testing.assert_allclose(alone[0], batch[i], rtol=0, atol=1e-6)
    # HWC input with a sample id equals the batched sample too
    np.testing.assert_allclose(np.asarray(d(x[2], key, sample_ids=[2])), batch[2], rtol=0, atol=1e-6)
    # and sample_ids really select the stream: sample 0 degraded as id 1 equals neither
    shifted = np.asarray(d(x[:1], key, sample_ids=[1]))[0]
    assert not np.array_equal(shifted, batch[0])


def test_per_sample_keys_are_fold_in():
    key = jax.random.key(11)
    keys = per_sample_keys(key, 3, sample_ids=[4, 0, 9])
    for k, i in zip(keys, [4, 0, 9]):
        assert np.array_equal(jax.random.key_data(k), jax.random.key_data(jax.random.fold_in(key, i)))


def test_noise_statistics():
    beta = 0.05
    x = jnp.full((1, 512, 512, 3), 0.5, jnp.float32)  # 10σ from both clip bounds
    noise = np.asarray(Degradation(noise=beta)(x, jax.random.key(0))) - 0.5
    assert abs(noise.std() / beta - 1) < 0.02  # measured 0.03 % off
    assert abs(noise.mean()) < 3 * beta / math.sqrt(noise.size)
    assert abs((np.abs(noise) < beta).mean() - 0.6827) < 0.005  # Gaussian: 68.27 % within 1σ
    # the channels are independent
    flat = noise.reshape(-1, 3)
    assert abs(np.corrcoef(flat.T)[0, 1]) < 0.01
    # gaussian_noise itself does not clip
    raw = np.asarray(gaussian_noise(jax.random.key(0), jnp.zeros((1, 64, 64, 1)), 0.5))
    assert raw.min() < -1 and raw.max() > 1


# ------------------------------------------------------------------------------------------------ sizes, jit

@pytest.mark.parametrize("resize", ["matlab", "torch"])
@pytest.mark.parametrize("scale", [2, 3, 4, 1.1, 1.5, 2.2])
@pytest.mark.parametrize("hw", [(33, 47), (55, 30), (64, 64)])
def test_lq_size_matches_output(resize, scale, hw):
    d = Degradation(scale=scale, resize=resize)
    out = jax.eval_shape(d, jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32))  # the traced shape, no compile
    assert out.shape[1:3] == d.lq_size(*hw)
    rounding = math.ceil if resize == "matlab" else math.floor
    assert abs(out.shape[1] - rounding(hw[0] / scale)) <= 1  # the size is ~ h/α (up to float rounding)


def test_lq_size_float_rounding_case():
    """33 / 1.1 = 29.999… but torch computes 33 × (1/1.1) = 30.0: lq_size must follow the resize."""
    d = Degradation(scale=1.1, resize="torch")
    t = F.interpolate(torch.zeros(1, 1, 33, 33), scale_factor=1 / 1.1, mode="bicubic", align_corners=False)
    assert d.lq_size(33, 33) == tuple(t.shape[2:]) == (30, 30)
    assert d(jnp.zeros((1, 33, 33, 3))).shape[1:3] == (30, 30)


@pytest.mark.parametrize("resize", ["matlab", "torch"])
def test_lq_size_matches_computed_output(resize):
    d = Degradation(blur_sigma=1, scale=3, resize=resize)
    assert d(jnp.zeros((1, 37, 29, 3))).shape == (1, *d.lq_size(37, 29), 3)


def test_lq_size_identity_and_matlab_vs_torch():
    assert Degradation(blur_sigma=2).lq_size(37, 41) == (37, 41)
    assert Degradation(scale=4, resize="matlab").lq_size(37, 41) == (10, 11)
    assert Degradation(scale=4, resize="torch").lq_size(37, 41) == (9, 10)


def test_study_levels():
    levels = study_levels()
    assert levels == (Degradation(scale=2), Degradation(scale=4), *(Degradation(blur_sigma=s)
                                                                    for s in (1, 2, 4, 8, 20)))
    assert [d.task for d in levels] == ["sr"] * 2 + ["deblur"] * 5
    assert [d.label for d in levels] == ["SR x2", "SR x4"] + [f"blur σ={s}" for s in (1, 2, 4, 8, 20)]
    assert all(d.noise == 0 and d.resize == "matlab" for d in levels)


@pytest.mark.parametrize("d", [MAIN, Degradation(blur_anisotropic=(2, 1, 0.3), scale=3, resize="torch", noise=0.1)])
def test_degradation_jits(d):
    x = jnp.asarray(_main_batch())
    key = jax.random.key(5)
    jitted = jax.jit(lambda im, k: d(im, k))
    eager, compiled = np.asarray(d(x, key)), np.asarray(jitted(x, key))
    assert compiled.shape == (3, *d.lq_size(*MAIN_SHAPE[1:3]), 3)
    assert np.abs(eager - compiled).max() <= 1e-6


def test_degradation_as_static_jit_argument():
    """The dataclass is frozen and hashable: it can be a static argument (the anisotropic kernel is built on
    the host even while tracing)."""
    d = Degradation(blur_anisotropic=(2, 1, 0.3), scale=3, resize="torch", noise=0.1)
    x = jnp.asarray(_main_batch())
    static = jax.jit(lambda deg, im, k: deg(im, k), static_argnums=0)
    out = np.asarray(static(d, x, jax.random.key(5)))
    assert np.abs(out - np.asarray(d(x, jax.random.key(5)))).max() <= 1e-6
