"""The classical restorers (bicubic, Wiener) and the restorer registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxir.data import bundled_photos
from jaxir.degradations import Degradation
from jaxir.errors import JaxirInputError
from jaxir.restorers import Restorer, get, registered
from jaxir.restorers.classical import WIENER_NSR_FLOOR, SIGNAL_POWER, _otf, _wiener, bicubic, wiener




@pytest.fixture(scope="module")
def cat():
    """A 128×160 crop of the bundled 'chelsea' photo (face and fur: edges and texture)."""
    return bundled_photos(["chelsea"])[0].image[40:168, 150:310]


def _psnr(x, gt):
    return 10 * np.log10(1.0 / np.mean((np.asarray(x, np.float64) - np.asarray(gt, np.float64)) ** 2))


def _smooth(shape, seed=0):
    x = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), (0, 3, 3, 0)[-len(shape):])
    return (0.2 + 0.6 * (x - x.min()) / (x.max() - x.min())).astype(np.float32)


# --------------------------------------------------------------------------------------------------- bicubic

@pytest.mark.parametrize("scale", [2, 4])
def test_bicubic_restores_gt_size(scale):
    gt = jnp.asarray(_smooth((2, 48, 64, 3)))
    d = Degradation(scale=scale)
    lq = d(gt)
    assert lq.shape == (2, 48 // scale, 64 // scale, 3)
    out = bicubic(lq, d)
    assert out.shape == gt.shape
    # on a smooth image, downscale + upscale is close to the original (and much better than a flat guess)
    assert _psnr(out, gt) > 30
    assert _psnr(out, gt) > _psnr(np.full(gt.shape, float(gt.mean())), gt) + 10


def test_bicubic_is_identity_at_scale_one():
    x = jnp.asarray(_smooth((1, 20, 24, 3)))
    assert bicubic(x, Degradation(blur_sigma=2)) is x
    assert bicubic(x, Degradation(noise=0.1)) is x


@pytest.mark.parametrize("scale", [2, 4])
def test_bicubic_equals_basicsr_upsampling_clipped(basicsr, scale):
    lq = np.random.default_rng(1).random((2, 13, 17, 3))  # random: bicubic overshoots [0, 1], clip matters
    out = np.asarray(bicubic(jnp.asarray(lq, jnp.float32), Degradation(scale=scale)))
    expected = np.clip(np.stack([basicsr.matlab_functions.imresize(im, scale) for im in lq]), 0, 1)
    assert out.shape == expected.shape == (2, 13 * scale, 17 * scale, 3)
    assert np.abs(out - expected).max() <= 1e-5  # measured ~4e-7
    assert out.min() == 0.0 and out.max() == 1.0  # the clip was exercised


# ---------------------------------------------------------------------------------------------------- Wiener

# Measured on the crop (noise-free, float input): +7.81 dB (σ=1), +3.73 dB (σ=2), +3.46 dB (σ=4).
@pytest.mark.parametrize("sigma,gain", [(1.0, 7.0), (2.0, 3.2), (4.0, 3.0)])
def test_wiener_beats_blurred_input(cat, sigma, gain):
    d = Degradation(blur_sigma=sigma)
    lq = d(jnp.asarray(cat))
    out = wiener(lq, d)
    assert out.shape == cat.shape and out.dtype == jnp.float32
    assert _psnr(out, cat) >= _psnr(lq, cat) + gain


def test_wiener_noise_term_helps_on_noisy_input(cat):
    """K = floor + β²/S: with noise, the β-dependent K beats the noise-free floor K (measured +6.3 dB at σ=2)."""
    d = Degradation(blur_sigma=2, noise=0.02)
    lq = d(jnp.asarray(cat), jax.random.key(0))
    default, floor_only = wiener(lq, d), wiener(lq, d, nsr=WIENER_NSR_FLOOR)
    assert _psnr(default, cat) >= _psnr(floor_only, cat) + 5
    explicit = wiener(lq, d, nsr=WIENER_NSR_FLOOR + 0.02**2 / SIGNAL_POWER)
    assert np.abs(np.asarray(default) - np.asarray(explicit)).max() <= 1e-6


def _numpy_wiener(lq, kernel, nsr, pad):
    """The same formula, independently: reflect-pad, full complex FFT, psf2otf by centring, crop, clip."""
    x = np.pad(np.asarray(lq, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    kh, kw = kernel.shape
    psf = np.zeros((h, w))
    for a in range(kh):  # tap (a, b) sits at offset (a - kh//2, b - kw//2) from the output pixel
        for b in range(kw):
            psf[(a - kh // 2) % h, (b - kw // 2) % w] += kernel[a, b]
    otf = np.fft.fft2(psf)
    gain = np.conj(otf) / (np.abs(otf) ** 2 + nsr)
    y = np.real(np.fft.ifft2(np.fft.fft2(x, axes=(1, 2)) * gain[None, :, :, None], axes=(1, 2)))
    return np.clip(y[:, pad:h - pad, pad:w - pad], 0, 1)


@pytest.mark.parametrize("sigma,shape,nsr", [(2.0, (2, 40, 52, 3), None), (1.0, (1, 33, 27, 1), 0.05),
                                             (4.0, (1, 20, 30, 3), 1e-2)])  # last: pad capped at 19 by H
def test_wiener_matches_numpy_reference(sigma, shape, nsr):
    d = Degradation(blur_sigma=sigma)
    lq = d(jnp.asarray(_smooth(shape, seed=2) + np.random.default_rng(3).normal(0, 0.05, shape).astype(np.float32)))
    out = np.asarray(wiener(lq, d, nsr=nsr))
    k = d.kernel()
    pad = min(k.shape[0], shape[1] - 1, shape[2] - 1)
    expected = _numpy_wiener(lq, k, WIENER_NSR_FLOOR if nsr is None else nsr, pad)
    assert np.abs(out - expected).max() <= 1e-5  # measured ~1e-6
    assert np.abs(out - np.asarray(lq)).max() > 1e-2  # it did something


def test_wiener_anisotropic_matches_numpy_reference():
    d = Degradation(blur_anisotropic=(2.0, 0.7, 0.5))
    lq = d(jnp.asarray(_smooth((1, 36, 44, 3), seed=4)))
    expected = _numpy_wiener(lq, d.kernel(), WIENER_NSR_FLOOR, d.kernel().shape[0])
    assert np.abs(np.asarray(wiener(lq, d)) - expected).max() <= 1e-5


def test_wiener_hwc_input():
    d = Degradation(blur_sigma=1)
    lq = d(jnp.asarray(_smooth((24, 30, 3), seed=5)))
    out = wiener(lq, d)
    assert out.shape == (24, 30, 3)
    assert np.array_equal(np.asarray(out), np.asarray(wiener(lq[None], d))[0])


def test_wiener_constant_image():
    """Only the DC term survives: gain H(0)/(H(0)² + K) = 1/(1 + K), as the kernel sums to 1."""
    d = Degradation(blur_sigma=2)
    x = jnp.full((1, 30, 30, 3), 0.6, jnp.float32)
    for nsr in (1e-4, None):  # measured ≤ 1.2e-7
        k = WIENER_NSR_FLOOR if nsr is None else nsr
        np.testing.assert_allclose(np.asarray(wiener(x, d, nsr=nsr)), 0.6 / (1 + k), rtol=0, atol=1e-6)


def test_wiener_inverts_circular_blur_exactly():
    """Without the reflection padding (pad = 0) and with a tiny K, the filter inverts a circular blur:
    the blurred image is made by direct circular correlation (scipy 'wrap'), independent of any FFT."""
    x = _smooth((1, 32, 48, 1), seed=6).astype(np.float64)
    d = Degradation(blur_sigma=1)
    k = d.kernel()
    y = ndimage.correlate(x[0, :, :, 0], k, mode="wrap")[None, :, :, None].astype(np.float32)
    otf = jnp.asarray(_otf(k, 32, 48).astype(np.complex64))
    out = np.asarray(_wiener(jnp.asarray(y), otf, jnp.float32(1e-10), 0))
    assert np.abs(out - x).max() <= 2e-4  # measured 6.9e-5 (also at K = 0): float32 error amplified by 1/|H|
    assert np.abs(y - x).max() > 1e-2


def test_wiener_without_kernel_is_identity():
    x = jnp.asarray(_smooth((1, 16, 16, 3)))
    assert wiener(x, Degradation(scale=2)) is x
    assert wiener(x, Degradation(noise=0.1)) is x


# -------------------------------------------------------------------------------------------------- registry

def test_registry_contents():
    reg = registered()
    assert {"bicubic", "wiener"} <= set(reg)
    assert all(isinstance(r, Restorer) for r in reg.values())
    d, lq = Degradation(blur_sigma=2.0, scale=2), jnp.asarray(_smooth((1, 20, 24, 3), seed=7))
    for name, fn in (("bicubic", bicubic), ("wiener", wiener)):   # the registered restorers are the functions
        restored = reg[name].restore(lq, d, jax.random.key(0))
        np.testing.assert_array_equal(np.asarray(restored), np.asarray(fn(lq, d)))
        assert reg[name].settings_json() == {} and reg[name].configure() is reg[name]
    assert get("wiener") is reg["wiener"]
    assert reg["wiener"].uses_known_degradation and not reg["bicubic"].uses_known_degradation
    assert reg["wiener"].family == reg["bicubic"].family == "classical"
    assert reg["wiener"].unavailable_reason() is None and reg["bicubic"].unavailable_reason() is None
    registered().clear()  # a copy: the registry itself is untouched
    assert "bicubic" in registered()


def test_registry_unknown_name():
    with pytest.raises(JaxirInputError, match="unknown restorer 'nope'.*bicubic"):
        get("nope")


@pytest.mark.parametrize("d,bicubic_handles,wiener_handles", [
    (Degradation(scale=4), True, False),
    (Degradation(blur_sigma=2), True, True),
    (Degradation(blur_anisotropic=(2, 1, 0)), True, True),
    (Degradation(noise=0.1), True, False),
    (Degradation(jpeg_quality=40), True, False),
    (Degradation(), False, False),
])
def test_handles_by_task(d, bicubic_handles, wiener_handles):
    assert get("bicubic").handles(d) is bicubic_handles
    assert get("wiener").handles(d) is wiener_handles
