"""The Alignment metric (eqs. 13–15) with a tiny random DINOv2 against the same quantity computed with torchvision's
transforms and timm's VisionTransformer; the high-degradation path against D(Î_x) built by hand; missing weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checkpoints_conversion.dinov2_keys import convert_dinov2
from jaxir import checkpoints
from jaxir.degradations.pipeline import Degradation
from jaxir.errors import JaxirInputError
from jaxir.metrics import alignment as A
from jaxir.models.dinov2 import DINOv2Config

timm = pytest.importorskip("timm")
transforms = pytest.importorskip("torchvision.transforms.v2")
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

TINY = dict(embed_dim=48, depth=2, num_heads=3)
# the stored 4×4 positional grid resampled by size with antialiasing: what timm's dynamic_img_size does, so timm's
# forward is the reference at any resolution (the 0.1-offset rule of the plain releases is tested in test_dinov2)
CONFIG = DINOv2Config(**TINY, img_size=56, interpolate_offset=0.0, interpolate_antialias=True)
RESOLUTION = 112   # an 8×8 patch grid
S_TOLERANCE = 1e-5   # absolute, on S ∈ [0, 2]; measured ≤ 2e-7


def timm_model(seed: int = 0) -> VisionTransformer:
    """timm's ViT with every tensor random (LayerNorm scales and LayerScale gammas around 1)."""
    model = VisionTransformer(img_size=56, patch_size=14, num_classes=0, dynamic_img_size=True, init_values=1.0,
                              **TINY)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            around_one = name.endswith("gamma") or (p.ndim == 1 and "norm" in name and name.endswith("weight"))
            p.copy_(1 + 0.2 * noise if around_one else 0.2 * noise)
    return model.eval()


@pytest.fixture(scope="module")
def reference_model():
    return timm_model()


@pytest.fixture(scope="module")
def metric_model(reference_model, tmp_path_factory):
    """The same network converted, saved as a jaxir checkpoint and loaded the way the metric loads it."""
    state = {k: v.numpy() for k, v in reference_model.state_dict().items()}
    path = checkpoints.save(tmp_path_factory.mktemp("dinov2") / "tiny", "dinov2", CONFIG,
                            convert_dinov2(state, CONFIG, "timm"))
    return A.load_alignment_model(path=path)


@torch.no_grad()
def torch_tokens(model: VisionTransformer, images: np.ndarray, resolution: int = RESOLUTION):
    """torchvision's Resize(shorter side, bicubic, antialias) → CenterCrop → ImageNet Normalize, then timm's
    final-norm tokens: (cls (B, D), patches (B, N, D))."""
    x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2)
    x = transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BICUBIC, antialias=True)(x)
    x = transforms.CenterCrop(resolution)(x)
    x = transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))(x)
    tokens = model.forward_features(x)
    return tokens[:, 0], tokens[:, 1:]


def torch_alignment(model, a, b, tokens: str = "cls") -> np.ndarray:
    """Eq. (13) by hand: 1 − cos of the CLS tokens, or the patch-wise 1 − cos averaged over the grid."""
    (cls_a, patch_a), (cls_b, patch_b) = torch_tokens(model, a), torch_tokens(model, b)
    if tokens == "cls":
        return (1 - F.cosine_similarity(cls_a, cls_b, dim=-1)).numpy()
    return (1 - F.cosine_similarity(patch_a, patch_b, dim=-1)).mean(dim=1).numpy()


def images(seed: int, size: tuple[int, int], batch: int = 2) -> np.ndarray:
    """Smooth random images in [0, 1] (a few cosines), closer to photographs than white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, size[0]), np.linspace(0, 1, size[1]), indexing="ij")
    out = np.zeros((batch, *size, 3))
    for _ in range(4):
        f = rng.uniform(1, 6, (batch, 1, 1, 3))
        phase = rng.uniform(0, 2 * np.pi, (batch, 1, 1, 3))
        out += np.cos(2 * np.pi * f * (yy[None, ..., None] * rng.uniform(-1, 1) + xx[None, ..., None]) + phase)
    return ((out - out.min()) / (out.max() - out.min())).astype(np.float32)


@pytest.mark.parametrize("tokens", ["cls", "patch"])
def test_matches_torch_reference(metric_model, reference_model, tokens):
    """Two batches of different sizes (one shrunk with antialiasing, one enlarged, both centre-cropped)."""
    a, b = images(0, (150, 120)), images(1, (60, 100))
    want = torch_alignment(reference_model, a, b, tokens)
    got = np.asarray(A.alignment(metric_model, jnp.asarray(a), jnp.asarray(b), tokens=tokens, resolution=RESOLUTION))
    assert got.shape == (2,)
    assert np.all(want > 1e-2)   # far from 0: the comparison is not trivially satisfied
    np.testing.assert_allclose(got, want, rtol=0, atol=S_TOLERANCE)
    # symmetric; a single HWC pair gives a scalar
    np.testing.assert_allclose(np.asarray(A.alignment(metric_model, b, a, tokens=tokens, resolution=RESOLUTION)),
                               got, atol=1e-6)
    single = A.alignment(metric_model, a[1], b[1], tokens=tokens, resolution=RESOLUTION)
    assert np.shape(single) == () and abs(float(single) - want[1]) < S_TOLERANCE


def test_embeddings_match_timm_tokens(metric_model, reference_model):
    a = images(2, (98, 130), batch=1)
    cls, patches = A.embeddings(metric_model, a, resolution=RESOLUTION)
    ref_cls, ref_patches = torch_tokens(reference_model, a)
    assert patches.shape == (1, 8, 8, 48)
    scale = float(np.abs(ref_patches.numpy()).max())
    assert np.abs(np.asarray(cls) - ref_cls.numpy()).max() / scale < 1e-5
    assert np.abs(np.asarray(patches).reshape(1, 64, 48) - ref_patches.numpy()).max() / scale < 1e-5


def test_identical_images_score_zero(metric_model):
    x = images(3, (70, 90))
    for tokens in ("cls", "patch"):
        s = np.asarray(A.alignment_low_degradation(metric_model, x, x, tokens=tokens, resolution=RESOLUTION))
        np.testing.assert_allclose(s, 0.0, atol=1e-6)


def test_high_degradation_redegrades_with_the_same_noise(metric_model, reference_model):
    """Eq. (15): S(D(Î_x), I_y) with D's noise drawn from the same key and sample ids; the clean image itself
    explains the observation exactly (S = 0), a restoration scores what S of its re-degradation says."""
    d = Degradation(blur_sigma=1.5, scale=2, noise=0.05)
    key = jax.random.key(7)
    clean = jnp.asarray(images(4, (96, 112)))
    restored = jnp.asarray(images(5, (96, 112)))
    degraded = d(clean, key, jnp.array([3, 8]))
    assert degraded.shape == (2, 48, 56, 3)

    np.testing.assert_allclose(np.asarray(A.alignment_high_degradation(
        metric_model, clean, degraded, d, key, jnp.array([3, 8]), resolution=RESOLUTION)), 0.0, atol=1e-6)

    by_hand = np.asarray(d(restored, key, jnp.array([3, 8])))
    for tokens in ("cls", "patch"):
        got = np.asarray(A.alignment_high_degradation(metric_model, restored, degraded, d, key, jnp.array([3, 8]),
                                                      tokens=tokens, resolution=RESOLUTION))
        want = torch_alignment(reference_model, by_hand, np.asarray(degraded), tokens)
        np.testing.assert_allclose(got, want, atol=S_TOLERANCE)
        assert np.all(want > 1e-3)
    # other noise (other sample ids): the clean image no longer scores 0
    other = A.alignment_high_degradation(metric_model, clean, degraded, d, key, jnp.array([0, 1]),
                                         resolution=RESOLUTION)
    assert np.all(np.asarray(other) > 1e-5)
    with pytest.raises(JaxirInputError, match="must have the clean image's size"):
        A.alignment_high_degradation(metric_model, restored[:, :80], degraded, d, key, resolution=RESOLUTION)


def test_missing_weights_name_the_conversion_command(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path))
    path = tmp_path / "dinov2_vits14"
    command = (f"download https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth and run: "
               f"python -m checkpoints_conversion dinov2 dinov2_vits14_pretrain.pth --preset vits14 --out {path}")
    reason = A.check("vits14")
    assert reason == f"Alignment (DINOv2 vits14): no checkpoint at {path}; {command}"
    with pytest.raises(JaxirInputError) as err:
        A.load_alignment_model("vits14")
    assert command in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(JaxirInputError, match="unknown DINOv2 preset"):
        A.check("vitb16")


def test_default_location_and_input_checks(reference_model, tmp_path, monkeypatch):
    """Weights saved at ``$JAXIR_CHECKPOINTS/dinov2_<preset>`` are found by preset; bad arguments are refused."""
    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path))
    state = {k: v.numpy() for k, v in reference_model.state_dict().items()}
    checkpoints.save(tmp_path / "dinov2_vitb14", "dinov2", CONFIG, convert_dinov2(state, CONFIG, "timm"))
    assert A.check() is None
    model = A.load_alignment_model()
    assert model.config == CONFIG
    x = images(6, (56, 56))
    with pytest.raises(JaxirInputError, match="tokens must be one of"):
        A.alignment(model, x, x, tokens="mean")
    with pytest.raises(JaxirInputError, match="batches differ in size"):
        A.alignment(model, x, x[:1])
    with pytest.raises(JaxirInputError, match="multiple of the patch size"):
        A.alignment(model, x, x, resolution=100)
