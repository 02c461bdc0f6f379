"""The DiffBIR restoration pipeline: its sampler against DiffBIR's recorded run, colour fixes and the antialiased
resize against PyTorch re-implementations of the originals, determinism, batch and device independence, and
traced settings (no recompilation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxir
from helpers import DIFFBIR_FIXTURES, compiled_functions, needs_fixtures
from jaxir.degradations.pipeline import Degradation
from jaxir.degradations.resize import resize_torch
from jaxir.diffusion import schedule as S
from jaxir.errors import JaxirInputError
from jaxir.pipelines import sampling
from jaxir.pipelines.colorfix import adain_color_fix, wavelet_color_fix
from jaxir.models.cldm import DiffusionProcess
from jaxir.pipelines.diffbir import DiffBIR, DiffBIRSettings, process_alphas_cumprod, short_edge_size

pytestmark = pytest.mark.slow   # compiles whole models or runs pipelines


def _nchw(x):
    return torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2)


def _nhwc(x):
    return x.permute(0, 2, 3, 1).numpy()


def _torch_wavelet_decomposition(image, levels=5):
    """DiffBIR ``wavelet_decomposition``: dilated binomial blurs on a replicate-padded image."""
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])[None, None].repeat(3, 1, 1, 1) / 16
    high = torch.zeros_like(image)
    for i in range(levels):
        r = 2 ** i
        low = F.conv2d(F.pad(image, (r, r, r, r), mode="replicate"), kernel, groups=3, dilation=r)
        high, image = high + image - low, low
    return high, image


def test_wavelet_color_fix_matches_reference():
    rng = np.random.default_rng(0)
    out, cond = (rng.random((2, 40, 56, 3)).astype(np.float32) for _ in range(2))
    expected = _nhwc(_torch_wavelet_decomposition(_nchw(out))[0] + _torch_wavelet_decomposition(_nchw(cond))[1])
    np.testing.assert_allclose(np.asarray(wavelet_color_fix(jnp.asarray(out), jnp.asarray(cond))), expected,
                               atol=1e-6)


def test_adain_color_fix_matches_reference():
    """SUPIR ``adaptive_instance_normalization``: unbiased variance + 1e-5."""
    rng = np.random.default_rng(1)
    out, cond = rng.random((2, 16, 24, 3)).astype(np.float32), 0.3 * rng.random((2, 16, 24, 3)).astype(np.float32)
    o, c = _nchw(out).reshape(2, 3, -1), _nchw(cond).reshape(2, 3, -1)
    norm = (o - o.mean(2, keepdim=True)) / (o.var(2, keepdim=True) + 1e-5).sqrt()
    expected = norm * (c.var(2, keepdim=True) + 1e-5).sqrt() + c.mean(2, keepdim=True)
    np.testing.assert_allclose(np.asarray(adain_color_fix(jnp.asarray(out), jnp.asarray(cond))),
                               _nhwc(expected.reshape(2, 3, 16, 24)), atol=2e-6)


@pytest.mark.parametrize("size_in, size_out", [((37, 50), (512, 692)), ((100, 80), (31, 45)), ((64, 64), (64, 128)),
                                               ((130, 90), (61, 200))])
def test_antialiased_bicubic_matches_torch(size_in, size_out):
    """``F.interpolate(bicubic, antialias=True)``, used by DiffBIR around its diffusion stage: ≤ 1e-5 (ATen
    accumulates in float32)."""
    x = np.random.default_rng(2).random((1, *size_in, 3)).astype(np.float32)
    expected = _nhwc(F.interpolate(_nchw(x), size=size_out, mode="bicubic", antialias=True))
    np.testing.assert_allclose(np.asarray(resize_torch(jnp.asarray(x), size=size_out, mode="bicubic_aa")), expected,
                               atol=1e-5)


def test_short_edge_rule():
    assert short_edge_size(100, 100, 512) == (512, 512)
    assert short_edge_size(100, 150, 512) == (512, 768)
    assert short_edge_size(300, 97, 512) == (int(300 * 512 / 97), 512)


def test_schedule_timesteps_follow_diffbir_and_start_level():
    spaced = sampling.schedule_timesteps(1000, 10, None, "spaced")
    np.testing.assert_array_equal(spaced, np.sort(S.space_timesteps(1000, "10"))[::-1])
    np.testing.assert_array_equal(sampling.schedule_timesteps(1000, 4, None, "edm_euler"), [999, 749, 499, 249])
    np.testing.assert_array_equal(sampling.schedule_timesteps(1000, 4, 399, "edm_euler"), [399, 299, 199, 99])
    assert sampling.schedule_timesteps(1000, 5, 499, "ddim")[0] <= 499
    with pytest.raises(JaxirInputError, match="do not fit"):
        sampling.schedule_timesteps(1000, 20, 9, "spaced")
    with pytest.raises(JaxirInputError, match="unknown sampler"):
        sampling.SamplerSpec("plms")


@pytest.fixture(scope="module")
def tiny(tiny_diffbir_dir):
    return jaxir.load(tiny_diffbir_dir)


@needs_fixtures("diffbir")
@pytest.mark.parametrize("name, parameterization, zero_snr", [("eps", "eps", False), ("v_zsnr", "v", True)])
def test_pipeline_sampler_matches_diffbir(tiny, name, parameterization, zero_snr):
    """The pipeline's :func:`sample_latent` (spaced, 10 steps, CFG 4 with ``c_txt[0]`` as negative prompt) on the
    recorded start latent and noise: ≤ 1e-5 of max |z0| (as the sampler test; DiffBIR also makes two calls)."""
    model, params = tiny
    ref = dict(np.load(DIFFBIR_FIXTURES / "fixtures.npz"))
    process = DiffusionProcess(zero_snr=zero_snr, parameterization=parameterization)
    settings = DiffBIRSettings(steps=10, cfg_scale=4.0)
    alphas_cumprod = process_alphas_cumprod(process)
    spec = settings.sampler_spec(process.parameterization)
    values = settings.values(alphas_cumprod, spec)
    np.testing.assert_array_equal(values.schedule.timesteps, np.sort(ref[f"spaced_timesteps_{name}"])[::-1])
    np.testing.assert_allclose(S.alphas_cumprod(ref[f"betas_{name}"]), alphas_cumprod, rtol=1e-6)
    with jax.default_matmul_precision("highest"):
        c_txt = model.encode_text(params, ["", "a photo of an astronaut, high quality"])
        cond = sampling.Conditions(jnp.asarray(ref["c_img"]), c_txt[1:2], c_txt[0:1])
        z0 = sampling.sample_latent(model, params, spec, cond, jnp.asarray(ref[f"sampler_xT_{name}"]),
                                    jnp.asarray(ref[f"sampler_noise_{name}"]), values)
    expected = ref[f"sampler_z0_{name}"]
    assert float(np.abs(np.asarray(z0) - expected).max() / np.abs(expected).max()) < 1e-5


def _pipeline(tiny, **overrides):
    model, params = tiny
    settings = DiffBIRSettings.preset("v2", steps=2, min_short_edge=0, **overrides)
    return DiffBIR(model, params, settings, stage1=lambda lq, *_: lq)


def _photos(n=3, size=(40, 48)):
    return jnp.asarray(np.random.default_rng(3).random((n, *size, 3)), jnp.float32)


@needs_fixtures("diffbir")
def test_restore_is_deterministic_and_batch_independent(tiny):
    pipe = _pipeline(tiny)
    lq, degradation = _photos(), Degradation(blur_sigma=1.0)
    first = np.asarray(pipe(lq, degradation, jax.random.key(5)))
    assert first.shape == lq.shape and 0.0 <= first.min() and first.max() <= 1.0
    np.testing.assert_array_equal(np.asarray(pipe(lq, degradation, jax.random.key(5))), first)
    alone = np.asarray(pipe(lq[2:3], degradation, jax.random.key(5), sample_ids=[2]))
    np.testing.assert_allclose(alone[0], first[2], atol=1e-5)
    other_seed = np.asarray(pipe(lq, degradation, jax.random.key(6)))
    assert np.abs(other_seed - first).max() > 1e-3


@needs_fixtures("diffbir")
def test_seeds_start_levels_and_scales_are_traced(tiny):
    """New keys, starting noise levels, guidance and control scales reuse one compiled sampler."""
    lq, degradation = _photos(1), Degradation(blur_sigma=1.0)
    outputs = [np.asarray(_pipeline(tiny)(lq, degradation, jax.random.key(0)))]
    for key, overrides in [(1, dict(cfg_scale=2.5)), (1, dict(strength=0.5)),
                           (1, dict(start_from_condition=True, t_start=400)),
                           (1, dict(start_from_condition=True, t_start=200, rescale_cfg=True))]:
        with compiled_functions() as compiled:
            outputs.append(np.asarray(_pipeline(tiny, **overrides)(lq, degradation, jax.random.key(key))))
        assert "sample_latent" not in compiled, overrides
    assert all(np.abs(a - b).max() > 1e-4 for a, b in zip(outputs, outputs[1:]))


@needs_fixtures("diffbir")
def test_latent_tiling_covers_the_image(tiny):
    """A 64×120 image (latent 8×16 after padding), without CFG: a 128 px tile covers everything and equals the
    untiled run; 64 px tiles with stride 32 (three 8×8 latent tiles) blend to the same shape, finite and close."""
    lq, degradation = _photos(1, (64, 120)), Degradation(blur_sigma=1.0)
    untiled = np.asarray(_pipeline(tiny, cfg_scale=1.0)(lq, degradation, jax.random.key(0)))
    whole = np.asarray(_pipeline(tiny, cfg_scale=1.0, latent_tile=128, latent_tile_stride=64)(
        lq, degradation, jax.random.key(0)))
    np.testing.assert_allclose(whole, untiled, atol=1e-5)
    tiled = np.asarray(_pipeline(tiny, cfg_scale=1.0, latent_tile=64, latent_tile_stride=32)(
        lq, degradation, jax.random.key(0)))
    assert tiled.shape == untiled.shape and np.isfinite(tiled).all()
    assert 0 < np.abs(tiled - untiled).mean() < 0.1
    with pytest.raises(JaxirInputError, match="multiple of 64"):
        DiffBIRSettings(latent_tile=100)


def test_bad_settings_and_inputs():
    with pytest.raises(JaxirInputError, match="unknown DiffBIR version"):
        DiffBIRSettings.preset("v3")
    with pytest.raises(JaxirInputError, match="no DiffBIR stage-1 restorer"):
        DiffBIRSettings.preset("v2").stage1_for("dejpeg")
    with pytest.raises(JaxirInputError, match="spaced sampler"):
        DiffBIRSettings.preset("v2.1", guidance_space="latent").sampler_spec("v")


_MULTI_DEVICE = """
import json, sys
import jax, numpy as np
import jaxir
from jaxir import parallel
from jaxir.degradations.pipeline import Degradation
from jaxir.pipelines.diffbir import DiffBIR, DiffBIRSettings
assert jax.device_count() == 8, jax.devices()
model, params = jaxir.load(sys.argv[1])
settings = DiffBIRSettings.preset("v2", steps=2, min_short_edge=0)
lq = np.random.default_rng(3).random((3, 40, 48, 3)).astype(np.float32)
single = DiffBIR(model, params, settings, stage1=lambda x, *_: x, mesh=parallel.data_mesh(jax.devices()[:1]))
sharded = DiffBIR(model, params, settings, stage1=lambda x, *_: x, mesh=parallel.data_mesh())
a = np.asarray(single(lq, Degradation(blur_sigma=1.0), jax.random.key(5)))
b = np.asarray(sharded(lq, Degradation(blur_sigma=1.0), jax.random.key(5)))
print(json.dumps({"max_abs": float(np.abs(a - b).max()), "shape": list(b.shape)}))
"""


@needs_fixtures("diffbir")
def test_sharded_over_8_devices_equals_one_device(tiny_diffbir_dir):
    """A batch of 3 padded to 8 and sharded over 8 forced host devices gives the single-device result."""
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"))
    result = subprocess.run([sys.executable, "-c", _MULTI_DEVICE, str(tiny_diffbir_dir)], env=env,
                            capture_output=True, text=True, timeout=900, cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [3, 40, 48, 3]
    assert report["max_abs"] < 1e-5
