"""PSNR and SSIM against BasicSR's calculate_psnr / calculate_ssim (NumPy/OpenCV, float64)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from helpers import photo
from jaxir.errors import JaxirInputError
from jaxir.metrics import psnr, ssim


def _pair(seed: int, name: str = "chelsea", size: int = 96):
    """A clean 8-bit photo crop and a distorted 8-bit version (noise + blur-like shift), both float [0, 1]."""
    rng = np.random.default_rng(seed)
    gt = photo(name, size)
    noisy = np.clip(gt + rng.normal(0, 0.04, gt.shape), 0, 1)
    noisy = np.round(0.5 * noisy + 0.5 * np.roll(noisy, 1, axis=1), 6)
    return gt.astype(np.float32), np.round(noisy * 255).astype(np.float32) / 255


def _bgr255(x):
    return np.asarray(x, np.float64)[..., ::-1] * 255.0


@pytest.mark.parametrize("metric, reference, tolerance", [(psnr, "calculate_psnr", 1e-4),
                                                       (ssim, "calculate_ssim", 1e-5)])
@pytest.mark.parametrize("crop_border", [0, 4])
@pytest.mark.parametrize("y_channel", [False, True])
def test_matches_basicsr(basicsr, metric, reference, tolerance, crop_border, y_channel):
    """PSNR (dB) to 1e-4 and SSIM to 1e-5 of BasicSR's functions on the same 8-bit images."""
    for seed, name in [(0, "chelsea"), (1, "astronaut"), (2, "coffee")]:
        gt, dist = _pair(seed, name)
        ref = getattr(basicsr.psnr_ssim, reference)(_bgr255(dist), _bgr255(gt), crop_border, test_y_channel=y_channel)
        ours = float(metric(dist, gt, crop_border=crop_border, y_channel=y_channel))
        assert abs(ours - ref) < tolerance, (name, ours, ref)


def test_ssim_matches_skimage_gaussian_matlab_mode():
    from skimage.metrics import structural_similarity

    gt, dist = _pair(3)
    ref = np.mean([structural_similarity(gt[..., c].astype(np.float64) * 255, dist[..., c].astype(np.float64) * 255,
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=255) for c in range(3)])
    # skimage filters with reflection, then averages the map without its 5-pixel border: the valid region
    ours = float(ssim(dist, gt))
    assert abs(ours - ref) < 1e-10
    assert ours < 0.9


def test_batch_equals_single_and_identical_images():
    pairs = [_pair(s) for s in range(3)]
    gts = np.stack([p[0] for p in pairs])
    dists = np.stack([p[1] for p in pairs])
    batch_psnr, batch_ssim = psnr(dists, gts), ssim(dists, gts)
    assert batch_psnr.shape == (3,) and batch_ssim.shape == (3,)
    for i in range(3):
        assert float(batch_psnr[i]) == pytest.approx(float(psnr(dists[i], gts[i])), abs=1e-10)
        assert float(batch_ssim[i]) == pytest.approx(float(ssim(dists[i], gts[i])), abs=1e-10)
    assert np.isinf(float(psnr(gts[0], gts[0])))
    assert float(ssim(gts[0], gts[0])) == pytest.approx(1.0, abs=1e-12)


def test_psnr_known_value():
    a = np.zeros((8, 8, 3), np.float32)
    b = np.full((8, 8, 3), 10 / 255, np.float32)
    assert float(psnr(a, b)) == pytest.approx(20 * np.log10(255 / 10), abs=1e-5)


def test_metrics_work_inside_jit():
    gt, dist = _pair(4)
    assert float(jax.jit(lambda a, b: psnr(a, b))(dist, gt)) == pytest.approx(float(psnr(dist, gt)), abs=1e-4)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((32, 32), np.float32), "grayscale"),
    (np.zeros((32, 32, 4), np.float32), "RGBA"),
    (np.zeros((32, 32, 3), np.uint16), "float"),
    (np.full((32, 32, 3), np.nan, np.float32), "NaN"),
    (np.full((32, 32, 3), 200.0, np.float32), "255"),
])
def test_bad_inputs_are_named(bad, message):
    good = np.zeros(bad.shape[:2] + (3,), np.float32)
    with pytest.raises(JaxirInputError, match=message):
        psnr(bad, good)
    with pytest.raises(JaxirInputError, match=message):
        ssim(good, bad)


def test_too_small_for_ssim_window_and_shape_mismatch():
    small = np.zeros((10, 40, 3), np.float32)
    with pytest.raises(JaxirInputError, match="at least 11x11"):
        ssim(small, small)
    with pytest.raises(JaxirInputError, match="at least 11x11"):
        ssim(np.zeros((20, 20, 3), np.float32), np.zeros((20, 20, 3), np.float32), crop_border=5)
    with pytest.raises(JaxirInputError, match="differ in shape"):
        psnr(np.zeros((20, 20, 3), np.float32), np.zeros((20, 21, 3), np.float32))
