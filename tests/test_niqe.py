"""NIQE against MATLAB's published scores on the official release, and against BasicSR's NumPy transcription
of the MATLAB release, made float64 end to end.

BasicSR's ``niqe()`` follows computequality.m but resizes in float32 (torch) and sees flat regions through
float round-off. The reference here is that same function with (a) BasicSR's own ``imresize`` run in float64
and (b) MATLAB's rule for flat and symmetric neighbourhoods: where ``im − μ`` is below 1e-9 grey levels (0 in
exact arithmetic), μ is the double next to ``im`` towards 0, as MATLAB's window weights, summing to slightly
less than 1, make it (see jaxir/metrics/niqe.py). Inputs are MATLAB ``rgb2gray`` of the 8-bit image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from helpers import photo
from jaxir.errors import JaxirInputError
from jaxir.metrics import niqe
from jaxir.metrics.niqe import gaussian_window_1d, pristine_model

TOL = 1e-8
RELEASE = os.environ.get("JAXIR_NIQE_RELEASE")
# MATLAB's output of example.m of the official release (niqe_release.zip, LIVE; github.com/utlive/niqe) for
# image1.bmp..image4.bmp, as quoted in scikit-video issue #116
# (https://github.com/scikit-video/scikit-video/issues/116).
MATLAB_RELEASE_SCORES = (5.0290, 17.8659, 8.0362, 2.6571)


def _gray(x: np.ndarray) -> np.ndarray:
    """MATLAB rgb2gray of the uint8 image, coefficients from the inverse of the NTSC (YIQ) matrix."""
    yiq = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])
    coef = np.linalg.inv(yiq)[0]
    q = np.floor(np.clip(x.astype(np.float64), 0, 1) * 255 + 0.5)
    return np.floor(q @ coef + 0.5)


class _Float64Torch:
    """``torch`` for BasicSR's imresize with its hard-coded float32 buffers (``torch.FloatTensor``) in float64."""

    FloatTensor = staticmethod(lambda *shape: torch.empty(*shape, dtype=torch.float64))

    def __getattr__(self, name):
        return getattr(torch, name)


def _reference(basicsr, image: np.ndarray, flat: str = "matlab") -> float:
    """BasicSR's ``niqe`` in float64; ``flat`` sets μ where ``im − μ`` is round-off of an exact zero:
    ``"matlab"`` the double next to ``im`` towards 0, ``"zero"`` ``im`` itself, ``"float"`` left as computed."""
    module = basicsr.niqe
    window = np.outer(gaussian_window_1d(), gaussian_window_1d())
    mu, cov = pristine_model()
    calls = {"n": 0}

    def convolve(img, weights, mode):
        out = ndimage.convolve(img, weights, mode=mode)
        calls["n"] += 1
        if flat != "float" and calls["n"] % 2 == 1:  # the first of each pair of calls filters the image: μ
            exact = img if flat == "zero" else np.nextafter(img, 0.0)
            out = np.where(np.abs(img - out) < 1e-9, exact, out)
        return out

    def imresize64(img, scale, antialiasing=True):
        functions = basicsr.matlab_functions
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        functions.torch = _Float64Torch()
        try:
            out = functions.imresize(torch.from_numpy(img[None].copy()), scale, antialiasing)
        finally:
            torch.set_default_dtype(previous)
            functions.torch = torch
        return out[0].numpy()

    saved = module.convolve, module.imresize
    module.convolve, module.imresize = convolve, imresize64
    try:
        return module.niqe(_gray(image), mu[None], cov, window)
    finally:
        module.convolve, module.imresize = saved


@pytest.mark.parametrize("name", ["astronaut", "camera", "ihc", "retina", "rocket", "hubble"])
def test_matches_float64_reference_on_bundled_photos(basicsr, name):
    image = photo(name)
    assert float(niqe(image)) == pytest.approx(_reference(basicsr, image), abs=TOL)


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_flat_rule_changes_nothing_without_flat_regions(basicsr, name):
    image = photo(name)
    assert float(niqe(image)) == pytest.approx(_reference(basicsr, image, flat="float"), abs=TOL)


def test_flat_regions_as_matlab_and_where_float32_drifts(basicsr):
    image = photo("chelsea")[:288, :384].copy()
    image[20:150, 30:200] = 0.0      # black, flat: im − μ is exactly 0 in any arithmetic
    image[160:280, 220:380] = 1.0    # saturated, flat: MATLAB's μ lies just below 255
    ours = float(niqe(image))
    assert ours == pytest.approx(_reference(basicsr, image), abs=TOL)
    # the rule decides the score (5.57; exact zeros on the saturated region give 5.30)
    assert ours - _reference(basicsr, image, flat="zero") > 0.1
    # BasicSR as shipped (Y channel, float32) drifts on these regions; jaxir must not silently equal it.
    shipped = basicsr.niqe.calculate_niqe(image[..., ::-1] * 255.0, 0, input_order="HWC", convert_to="y")
    assert abs(shipped - ours) > 1e-3


@pytest.mark.skipif(not RELEASE, reason="set JAXIR_NIQE_RELEASE to a folder with image1.bmp..image4.bmp of the "
                    "official NIQE release (niqe_release.zip; github.com/utlive/niqe); they cannot ship here")
def test_official_release_images_match_matlab():
    scores = []
    for i in range(1, 5):
        with Image.open(Path(RELEASE) / f"image{i}.bmp") as f:
            scores.append(float(niqe(np.asarray(f.convert("RGB"), np.float32) / 255.0)))
    # image3.bmp has large flat (posterised) regions: 7.63 with exact zeros there, 8.0364 with MATLAB's rule
    np.testing.assert_allclose(scores, MATLAB_RELEASE_SCORES, rtol=0, atol=1e-3)


def test_window_and_pristine_model():
    w = np.outer(gaussian_window_1d(), gaussian_window_1d())
    x = np.arange(-3, 4)
    fspecial = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))
    np.testing.assert_allclose(w, fspecial / fspecial.sum(), atol=1e-16)
    mu, cov = pristine_model()
    assert mu.shape == (36,) and cov.shape == (36, 36)
    np.testing.assert_allclose(cov, cov.T, atol=1e-12)
    assert mu[0] == pytest.approx(2.60131368, abs=1e-8)


def test_batch_crop_and_hwc():
    a, b = photo("chelsea")[:200, :300], photo("coffee")[:200, :300]
    batch = np.asarray(niqe(np.stack([a, b])))
    assert batch.shape == (2,)
    assert batch[0] == pytest.approx(float(niqe(a)), abs=1e-12)
    assert batch[1] == pytest.approx(float(niqe(b)), abs=1e-12)
    # only whole 96-pixel blocks count: the bottom/right remainder is ignored
    assert float(niqe(a)) == pytest.approx(float(niqe(a[:192, :288])), abs=1e-12)
    assert batch[0] != pytest.approx(batch[1], abs=1e-3)


def test_flat_image_is_nan_not_crash():
    assert np.isnan(float(niqe(np.full((96, 96, 3), 0.5, np.float32))))


def test_bad_inputs():
    with pytest.raises(JaxirInputError, match="96x96"):
        niqe(np.zeros((95, 200, 3), np.float32))
    with pytest.raises(JaxirInputError, match="NaN"):
        niqe(np.full((96, 96, 3), np.nan, np.float32))
    with pytest.raises(JaxirInputError, match="grayscale"):
        niqe(np.zeros((96, 96), np.float32))
