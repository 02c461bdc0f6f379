"""jaxir.degradations.jpeg against BasicSR's DiffJPEG (torch) and against PIL's libjpeg."""

import importlib.util
import io
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import data

from helpers import compilations
from jaxir.degradations.jpeg import jpeg
from jaxir.errors import JaxirInputError

torch = pytest.importorskip("torch")

_JPEG = jax.jit(jpeg)



def _load_diffjpeg():
    """BasicSR's diffjpeg.py loaded by path: ``import basicsr`` would need torchvision."""
    spec = importlib.util.find_spec("basicsr")
    if spec is None:
        pytest.skip("basicsr is not installed")
    path = pathlib.Path(spec.submodule_search_locations[0]) / "utils" / "diffjpeg.py"
    module_spec = importlib.util.spec_from_file_location("_basicsr_diffjpeg", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def diffjpeg():
    return _load_diffjpeg()


def _photos() -> np.ndarray:
    """Two 200×184 crops (neither side a multiple of 16, so the padding path runs)."""
    astro = data.astronaut()
    return np.stack([astro[100:300, 150:334], astro[280:480, 40:224]]).astype(np.float32) / 255.0


def _torch_nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _near_tie_mask(diffjpeg, x, quality, margin=1e-4):
    """Pixels of 8×8 luma / 16×16 chroma blocks where a quantised DCT coefficient of the reference lies within
    ``margin`` of a rounding tie (k + ½): there float32 summation order alone decides the rounded value."""
    n, h, w, _ = x.shape
    hp, wp = h + (-h % 16), w + (-w % 16)
    padded = torch.nn.functional.pad(_torch_nchw(x), (0, wp - w, 0, hp - h))
    factor = torch.tensor([diffjpeg.quality_to_factor(float(q)) for q in quality])
    with torch.no_grad():
        planes = diffjpeg.CompressJpeg(rounding=lambda t: t)(padded, factor=factor)
    mask = np.zeros((n, hp, wp), bool)
    for coef, size in zip(planes, (8, 16, 16)):
        c = coef.numpy()
        tie = (np.abs(np.abs(c - np.floor(c)) - 0.5) < margin).any(axis=(2, 3))  # (n, blocks)
        tie = tie.reshape(n, hp // size, wp // size)
        mask |= np.kron(tie, np.ones((size, size), bool)).astype(bool)
    return mask[:, :h, :w]


@pytest.mark.parametrize("quality", [(10.0, 95.0), (30.0, 47.5), (75.0, 61.3)])
def test_matches_basicsr_diffjpeg(diffjpeg, quality):
    x = _photos()
    with torch.no_grad():
        ref = diffjpeg.DiffJPEG(differentiable=False)(_torch_nchw(x), quality=torch.tensor(quality))
    ref = ref.numpy().transpose(0, 2, 3, 1)
    out = np.asarray(_JPEG(x, jnp.asarray(quality, jnp.float32)))
    err = np.abs(out - ref).max(axis=-1)
    ties = _near_tie_mask(diffjpeg, x, quality)
    assert ties.mean() < 0.03
    # Measured: ≤ 3e-7 away from near-ties; a flipped tie costs ~1e-3 within its block.
    assert err[~ties].max() <= 1e-4


def _pil_jpeg(u8: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=quality, subsampling=2)  # 4:2:0
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.float32) / 255.0


def test_close_to_libjpeg():
    """Same artefact strength as PIL's libjpeg, not the same bits.

    DiffJPEG quantises with transposed IJG tables, does not round the scaled tables, and upsamples chroma by
    pixel replication instead of libjpeg's triangular filter, so the outputs differ by 1.3–3.6/255 in mean
    (measured on astronaut, coffee and chelsea, q 10–95), mostly in luma. The bounds: closer to PIL's output
    than the uncompressed image is, mean error < 4/255, PSNR to the original within 1.25 dB of PIL's (measured
    0.1–0.9 dB, always slightly stronger compression).
    """
    u8 = data.chelsea()  # 300×451: not a multiple of 16
    x = u8.astype(np.float32) / 255.0
    qualities = [10, 30, 50, 75, 95]
    outs = np.asarray(_JPEG(np.stack([x] * len(qualities)), jnp.asarray(qualities)))  # int qualities

    def psnr(a, b):
        return -10 * np.log10(np.mean((a - b) ** 2))

    for q, out in zip(qualities, outs):
        ref = _pil_jpeg(u8, q)
        mae = np.abs(out - ref).mean()
        assert mae < np.abs(ref - x).mean(), q
        assert mae < 4 / 255, q
        assert abs(psnr(out, x) - psnr(ref, x)) < 1.25, q


def test_quality_is_traced_without_recompiling():
    traces = []

    def fn(x, q):
        traces.append(1)
        return jpeg(x, q)

    compiled = jax.jit(fn)
    x = _photos()
    qualities = [jnp.asarray(q) for q in ([30.0, 90.0], [31.5, 50.0], [100.0, 1.0])]
    a = compiled(x, qualities[0])
    with compilations() as cost:
        b = compiled(x, qualities[1])
        c = compiled(x, qualities[2])
    assert len(traces) == 1 and cost().compilations == 0
    assert not np.allclose(a, b)
    assert np.all(np.isfinite(c)) and 0.0 <= float(c.min()) and float(c.max()) <= 1.0


def test_deterministic_and_batch_independent():
    x = _photos()
    q = jnp.asarray([40.0, 80.0])
    a, b = np.asarray(_JPEG(x, q)), np.asarray(_JPEG(x, q))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.asarray(_JPEG(x[1], 80.0)), a[1], atol=1e-6)


def test_differentiable():
    x = jnp.asarray(_photos()[:1, :32, :32])
    gx, gq = jax.jit(jax.grad(lambda x, q: jnp.sum(jpeg(x, q) ** 2), argnums=(0, 1)))(x, 60.0)
    assert gx.shape == x.shape and np.all(np.isfinite(gx)) and float(jnp.abs(gx).sum()) > 0
    assert np.isfinite(gq)


def test_rejects_non_rgb():
    with pytest.raises(JaxirInputError):
        jpeg(jnp.zeros((1, 16, 16, 1)), 50)
