"""DiffBIR's rescaled CFG schedule and v2.0 restoration guidance (``diffbir/utils/cond_fn.py``,
``SpacedSampler.apply_cond_fn``) against numbers derived by hand and torch autograd of the same losses."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import compiled_functions
from jaxir.diffusion import samplers as Smp
from jaxir.diffusion import schedule as S
from jaxir.diffusion.denoiser import denoiser
from jaxir.diffusion.guidance import diffbir_rescaled_cfg, edge_weight_map, guided, restoration_guidance
from jaxir.errors import JaxirInputError

TABLE = S.alphas_cumprod(S.sd_linear_betas())
SCHEDULE = S.spaced_schedule(TABLE, S.space_timesteps(1000, "10"))   # timesteps 999, 888, …, 0


def row(i: int) -> S.SpacedSchedule:
    """Step i of the 10-step schedule, as the sampler hands it to the denoiser and its guidance hook (float32, int32
    timestep)."""
    return S.SpacedSchedule(*(jnp.asarray(a[i], jnp.int32 if name == "timesteps" else jnp.float32)
                              for name, a in zip(SCHEDULE._fields, SCHEDULE)))


def test_rescaled_cfg_by_hand():
    """``1 + w·(1 − cos(π·((1000 − t)/1000)^5))/2`` for w > 1, else w. By hand for w = 4: t = 500 gives
    (1/2)^5 = 1/32, cos(π/32) = 0.9951847267, so 1 + 4·0.0024076367 = 1.0096305467; t = 250: 0.75^5 = 0.2373046875,
    cos(0.2373046875π) = 0.7347388781, 1 + 4·0.1326305610 = 1.5305222438; t = 0: cos π = −1, 1 + w = 5."""
    got = diffbir_rescaled_cfg(4.0, [999, 750, 500, 250, 1, 0])
    assert got.dtype == np.float32 and got.shape == (6,)
    np.testing.assert_allclose(got, [1.0, 1.0000094124, 1.0096305467, 1.5305222438, 4.9997542499, 5.0], rtol=1e-7)
    assert np.all(np.diff(got) >= 0)   # grows as sampling proceeds (t decreasing)
    np.testing.assert_array_equal(diffbir_rescaled_cfg(1.0, [999, 0]), [1.0, 1.0])   # w ≤ 1: constant w
    np.testing.assert_array_equal(diffbir_rescaled_cfg(0.5, [999, 500, 0]), [0.5, 0.5, 0.5])
    # the per-step table of a real schedule, in sampling order, as classifier_free_guidance takes it
    table = diffbir_rescaled_cfg(6.0, SCHEDULE.timesteps)
    want = [1 + 6.0 * (1 - math.cos(math.pi * ((1000 - int(t)) / 1000) ** 5)) / 2 for t in SCHEDULE.timesteps]
    np.testing.assert_allclose(table, want, rtol=1e-7)
    assert table[0] == pytest.approx(1.0) and table[-1] == pytest.approx(7.0)


def torch_edge_weight(image_nhwc: np.ndarray) -> torch.Tensor:
    """The weighted-MSE weight map re-derived: BT.601 gray, replicate padding, Sobel cross-correlation with
    G_x = [[1,0,−1],[2,0,−2],[1,0,−1]] and G_y = G_xᵀ, gradient magnitude, summed over 2×2 blocks, 1 − tanh,
    broadcast back to pixels. NCHW (B, 1, H, W)."""
    x = torch.from_numpy(image_nhwc).permute(0, 3, 1, 2).double()
    gray = (x * torch.tensor([0.2989, 0.5870, 0.1140], dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    gx = torch.tensor([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=x.dtype)
    kernels = torch.stack([gx, gx.T])[:, None]
    grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = grad.pow(2).sum(1, keepdim=True).sqrt()
    block_sum = F.avg_pool2d(magnitude, 2) * 4
    return 1 - torch.tanh(F.interpolate(block_sum, scale_factor=2, mode="nearest"))


def test_edge_weight_map_matches_torch():
    rng = np.random.default_rng(0)
    image = rng.random((2, 10, 14, 3)).astype(np.float32)
    image[0, :, :7] = 0.5   # a flat region: weight exactly 1 away from its edge
    got = np.asarray(edge_weight_map(jnp.asarray(image)))
    want = torch_edge_weight(image).permute(0, 2, 3, 1).numpy()
    assert got.shape == (2, 10, 14, 1)
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert got[0, :, :4].min() == 1.0 and got.min() < 0.05
    with pytest.raises(JaxirInputError, match="even image sides"):
        edge_weight_map(jnp.zeros((1, 9, 14, 3)))


def torch_guided(x0: np.ndarray, loss_fn, scale: float, coef1: float, repeat: int) -> np.ndarray:
    """DiffBIR v2.0's update, ``repeat`` times: g = −3000·s·∂L/∂pred (torch autograd), pred_x0 += g / c1 (for
    the rgb space the latent gradient is pred.backward(g), the decoder's vector–Jacobian product)."""
    x = torch.from_numpy(x0).double()
    for _ in range(repeat):
        leaf = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(leaf), leaf)
        x = x + (-grad * scale * 3000) / coef1
    return x.numpy()


def torch_mse(target, weight=None):
    target = torch.from_numpy(target).double()
    w = 1.0 if weight is None else weight

    def loss(pred):
        return ((pred - target).pow(2) * w).mean(dim=tuple(range(1, pred.ndim))).sum()

    return loss


@pytest.mark.parametrize("repeat", [1, 3])
def test_latent_mse_step_matches_autograd(repeat):
    """Latent-space MSE: each of ``repeat`` steps moves x0 by −(3000·s/c1)·2(x0 − target)/N per sample, i.e. the
    residual shrinks by the factor 1 − 6000·s/(c1·N) every time."""
    rng = np.random.default_rng(1)
    x0, target = rng.normal(size=(2, 2, 4, 8, 4)).astype(np.float32)
    scale, i = 0.004, 5
    guide = restoration_guidance(jnp.asarray(target), scale=scale, t_start=1001, t_stop=-1, repeat=repeat)
    got = np.asarray(guide(jnp.asarray(x0), row(i)))
    c1 = float(row(i).posterior_mean_coef1)
    want = torch_guided(x0, torch_mse(target), scale, c1, repeat)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    factor = 1 - 6000 * scale / (c1 * 4 * 8 * 4)
    assert 0.3 < factor < 0.7   # a real, stable step
    np.testing.assert_allclose(got - target, (x0 - target) * factor ** repeat, rtol=1e-4, atol=1e-5)


def test_rgb_weighted_mse_step_matches_autograd():
    """rgb space through a small differentiable decoder (latent 4 ch → nearest ×2 → 1×1 mix → tanh, in
    [−1, 1]), weighted by the edge map of the target (in [−1, 1], mapped to [0, 1]), two repeats; also plain rgb
    MSE."""
    rng = np.random.default_rng(2)
    x0 = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    mix = (rng.normal(size=(4, 3)) / 2).astype(np.float32)
    target = np.tanh(rng.normal(size=(2, 6, 10, 3))).astype(np.float32)

    def decode(z):
        return jnp.tanh(jnp.repeat(jnp.repeat(z, 2, axis=1), 2, axis=2) @ mix)

    def torch_decode(z):
        return torch.tanh(z.repeat_interleave(2, 1).repeat_interleave(2, 2) @ torch.from_numpy(mix).double())

    weight = torch_edge_weight((target + 1) / 2).permute(0, 2, 3, 1)
    assert weight.min() < 0.5   # the weighting matters
    scale, i = 0.02, 3
    c1 = float(row(i).posterior_mean_coef1)
    for loss, w in (("w_mse", weight), ("mse", None)):
        guide = restoration_guidance(jnp.asarray(target), scale=scale, t_start=1001, t_stop=-1, space="rgb",
                                     loss=loss, repeat=2, decode=decode)
        got = np.asarray(guide(jnp.asarray(x0), row(i)))
        mse = torch_mse(target, w)
        want = torch_guided(x0, lambda z: mse(torch_decode(z)), scale, c1, 2)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert np.abs(got - x0).max() > 0.05


def test_window_is_open_strictly_between_stop_and_start():
    """Guidance applies while t_stop < t + 1 < t_start (t the network timestep of the step), else x0 is returned
    unchanged."""
    rng = np.random.default_rng(3)
    x0, target = rng.normal(size=(2, 1, 4, 4, 4)).astype(np.float32)
    timesteps = [int(t) for t in SCHEDULE.timesteps]   # 999, 888, 777, 666, 555, 444, 333, 222, 111, 0
    guide = restoration_guidance(jnp.asarray(target), scale=0.01, t_start=778, t_stop=333)
    active = [not np.array_equal(np.asarray(guide(jnp.asarray(x0), row(i))), x0) for i in range(len(timesteps))]
    assert active == [333 < t + 1 < 778 for t in timesteps]
    # 777 + 1 = t_start: closed; 333 + 1 > t_stop: open
    assert active == [False, False, False, True, True, True, True, False, False, False]
    guide = restoration_guidance(jnp.asarray(target), scale=0.01, t_start=779, t_stop=334)
    assert [not np.array_equal(np.asarray(guide(jnp.asarray(x0), row(i))), x0) for i in range(10)] == \
        [False, False, True, True, True, True, False, False, False, False]


def test_guidance_inside_the_sampler_is_traced():
    """sample_ddpm with the guidance hook in its denoiser: the x0 predictions of the trajectory equal the unguided x0
    moved by the latent MSE step at the steps inside the window only; scale and window are traced (one compiled
    program)."""
    rng = np.random.default_rng(4)
    x_T = jnp.asarray(rng.normal(size=(1, 4, 4, 4)).astype(np.float32))
    noise = jnp.asarray(rng.normal(size=(10, 1, 4, 4, 4)).astype(np.float32))
    target = jnp.asarray(rng.normal(size=(1, 4, 4, 4)).astype(np.float32))

    def network(x, t, step):
        return 0.5 * x + 0.01 * t.astype(jnp.float32)

    @jax.jit
    def run(scale, t_start, t_stop):
        guide = restoration_guidance(target, scale=scale, t_start=t_start, t_stop=t_stop)
        return Smp.sample_ddpm(guided(denoiser(network, "eps"), guide), x_T, SCHEDULE, noise, trajectory=True)

    z0, steps = run(0.001, 778, 333)
    x0s = steps.denoised
    with compiled_functions() as compiled:
        run(0.002, 900, 100)
    assert "run" not in compiled
    # replay by hand: unguided x0 from ε, then the closed-form MSE step at active steps
    x = np.asarray(x_T, np.float64)
    moved = 0.0
    for i, t in enumerate(SCHEDULE.timesteps):
        a, s = SCHEDULE.sqrt_alphas_cumprod[i], SCHEDULE.sqrt_one_minus_alphas_cumprod[i]
        eps = 0.5 * x + 0.01 * t
        x0 = (x - s * eps) / a
        if 333 < t + 1 < 778:
            step = 3000 * 0.001 / SCHEDULE.posterior_mean_coef1[i] * 2 * (x0 - np.asarray(target)) / 64
            x0, moved = x0 - step, max(moved, np.abs(step).max())
        np.testing.assert_allclose(np.asarray(x0s[i]), x0, rtol=1e-4, atol=1e-4)
        std = 0.0 if i == 9 else np.exp(0.5 * SCHEDULE.posterior_log_variance_clipped[i])
        x = SCHEDULE.posterior_mean_coef1[i] * x0 + SCHEDULE.posterior_mean_coef2[i] * x + std * np.asarray(noise[i])
    np.testing.assert_allclose(np.asarray(z0), x, rtol=1e-4, atol=1e-4)
    assert moved > 0.1


def test_argument_checks():
    target = jnp.zeros((1, 4, 4, 4))
    with pytest.raises(JaxirInputError, match="'latent' or 'rgb'"):
        restoration_guidance(target, scale=1, t_start=1000, t_stop=0, space="pixel")
    with pytest.raises(JaxirInputError, match="'mse' or 'w_mse'"):
        restoration_guidance(target, scale=1, t_start=1000, t_stop=0, loss="l1")
    with pytest.raises(JaxirInputError, match="needs the VAE decoder"):
        restoration_guidance(target, scale=1, t_start=1000, t_stop=0, space="rgb")
    with pytest.raises(JaxirInputError, match="use space='rgb'"):
        restoration_guidance(target, scale=1, t_start=1000, t_stop=0, loss="w_mse")
