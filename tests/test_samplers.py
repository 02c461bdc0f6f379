"""Samplers: DiffBIR's spaced DDPM sampler end to end against its recorded runs (tiny ControlLDM,
../shared/fixtures/diffbir), single DDPM/DDIM steps against diffusers, oracle reconstructions, and no recompilation
when seeds, noise, timesteps, guidance or η change."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

import jaxir
from helpers import DIFFBIR_FIXTURES, compiled_functions, needs_fixtures
from jaxir.diffusion import samplers as Smp
from jaxir.diffusion import schedule as S
from jaxir.diffusion.denoiser import denoiser
from jaxir.diffusion.guidance import classifier_free_guidance
from jaxir.diffusion.noise import sampler_noise
from jaxir.errors import JaxirInputError

FIXTURES = DIFFBIR_FIXTURES
TRACES = {"diffbir": 0, "toy": 0}


@functools.partial(jax.jit, static_argnames=("model", "parameterization"))
def _diffbir_sample(model, params, x_T, noise, schedule, c_txt, c_img, cfg_scale, parameterization):
    """DiffBIR's ``SpacedSampler.sample`` on a ControlLDM: cond (c_txt[1], c_img), uncond (c_txt[0], c_img), control
    scales 1. DiffBIR makes two calls (``SpacedSampler.apply_model``); one batched call compiles the network once
    (half the compile time) and agrees with two calls to float32 rounding (errors below are the same either way)."""
    TRACES["diffbir"] += 1
    scales = jnp.ones((model.config.num_controls,), jnp.float32)

    def denoise_cond(x, t, c, step):
        t = jnp.full((x.shape[0],), t)
        return model.net.apply({"params": params}, x, t, c["c_txt"], c["c_img"], scales, method="denoise")

    network = classifier_free_guidance(denoise_cond, {"c_txt": c_txt[1:2], "c_img": c_img},
                                       {"c_txt": c_txt[0:1], "c_img": c_img}, cfg_scale, batched=True)
    return Smp.sample_ddpm(denoiser(network, parameterization), x_T, schedule, noise)


@pytest.fixture(scope="module")
def cldm(tiny_diffbir_dir):
    model, params = jaxir.load(tiny_diffbir_dir)
    with jax.default_matmul_precision("highest"):
        c_txt = model.encode_text(params, ["", "a photo of an astronaut, high quality"])
    return model, params, c_txt


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIXTURES / "fixtures.npz"))


def _diffbir_schedule(zero_snr: bool, spacing: str = "10") -> S.SpacedSchedule:
    """DiffBIR's ``Diffusion`` (configs/inference/diffusion*.yaml) respaced by ``SpacedSampler.make_schedule``."""
    betas = S.sd_linear_betas(1000, 0.00085, 0.012)
    betas = S.rescale_zero_terminal_snr(betas) if zero_snr else betas
    return S.spaced_schedule(S.alphas_cumprod(betas), S.space_timesteps(1000, spacing))


@needs_fixtures("diffbir")
@pytest.mark.parametrize("name, parameterization", [("eps", "eps"), ("v_zsnr", "v")])
def test_diffbir_spaced_sampler(cldm, ref, name, parameterization):
    """Max abs errors on the tiny model: eps 2.7e-5 with |z0| ≤ 52.6 (x0 = (z − s·ε)/a amplifies the random network's
    ε 15× at t = 999), v_zsnr 6.0e-7 with |z0| ≤ 2.5; with two unbatched calls 1.5e-5 and 7.2e-7."""
    model, params, c_txt = cldm
    with jax.default_matmul_precision("highest"):
        z0 = _diffbir_sample(model, params, jnp.asarray(ref[f"sampler_xT_{name}"]),
                             jnp.asarray(ref[f"sampler_noise_{name}"]), _diffbir_schedule(name == "v_zsnr"), c_txt,
                             jnp.asarray(ref["c_img"]), jnp.float32(4.0), parameterization)
    expected = ref[f"sampler_z0_{name}"]
    assert float(np.abs(np.asarray(z0) - expected).max() / np.abs(expected).max()) < 1e-5


@needs_fixtures("diffbir")
def test_diffbir_sampler_never_recompiles(cldm, ref):
    """Other noise, timestep values and guidance reuse the compiled sampler (params and conditions are traced);
    the first call reuses the program of test_diffbir_spaced_sampler[eps] (same argument types)."""
    model, params, c_txt = cldm
    c_img = jnp.asarray(ref["c_img"])
    with jax.default_matmul_precision("highest"):
        first = _diffbir_sample(model, params, jnp.asarray(ref["sampler_xT_eps"]),
                                jnp.asarray(ref["sampler_noise_eps"]), _diffbir_schedule(False), c_txt, c_img,
                                jnp.float32(4.0), "eps")
        traces = TRACES["diffbir"]
        rng = np.random.default_rng(7)
        x_T = jnp.asarray(rng.standard_normal(ref["sampler_xT_eps"].shape, np.float32))
        noise = jnp.asarray(rng.standard_normal(ref["sampler_noise_eps"].shape, np.float32))
        schedule = _diffbir_schedule(False, "ddim10")
        with compiled_functions() as compiled:
            second = _diffbir_sample(model, params, x_T, noise, schedule, c_txt, c_img, jnp.float32(1.5), "eps")
    assert TRACES["diffbir"] == traces and "_diffbir_sample" not in compiled
    assert np.abs(np.asarray(first) - np.asarray(second)).max() > 1e-2


def _row(schedule: S.SpacedSchedule, i: int) -> S.SpacedSchedule:
    return jax.tree.map(lambda a: jnp.asarray(a[i]), schedule)


def _x0(x, out, row, parameterization):
    """The denoiser's x0 for a given network output at a schedule row."""
    return denoiser(lambda x_in, t, step: out, parameterization)(x, row, 0)


def _torch_normal(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddpm_step_matches_diffusers(prediction):
    """diffusers' DDPMScheduler with custom (respaced) timesteps is the IDDPM respaced process; v with zero SNR.
    diffusers runs in float64 (its float32 ᾱ table promoted), so the tolerance measures our float32 step (max abs
    errors over all 10 steps: 8.4e-7 for eps, 3.5e-7 for v)."""
    zero_snr = prediction == "v_prediction"
    ref = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                        prediction_type=prediction, rescale_betas_zero_snr=zero_snr)
    kept = S.space_timesteps(1000, "10")
    ref.set_timesteps(timesteps=kept[::-1].tolist())
    ref.alphas_cumprod = ref.alphas_cumprod.double()
    schedule = S.spaced_schedule(ref.alphas_cumprod.numpy(), kept)
    shape = (2, 4, 4, 3)
    for i in range(10):
        t = int(schedule.timesteps[i])
        x, out = _torch_normal(shape, 100 + i), _torch_normal(shape, 200 + i)
        expected = ref.step(out, t, x, generator=torch.Generator().manual_seed(i)).prev_sample.numpy()  # noise: seed i
        x_t, row = jnp.asarray(x.numpy()), _row(schedule, i)
        x0 = _x0(x_t, jnp.asarray(out.numpy()), row, "eps" if prediction == "epsilon" else "v")
        ours = Smp.ddpm_step(x_t, x0, jnp.asarray(_torch_normal(shape, i).numpy()), row, final=i == 9)
        np.testing.assert_allclose(np.asarray(ours), expected, rtol=0, atol=2e-6, err_msg=f"t={t}")


@pytest.mark.parametrize("prediction, spacing, eta", [("epsilon", "leading", 0.0), ("epsilon", "leading", 0.7),
                                                      ("v_prediction", "trailing", 0.0),
                                                      ("v_prediction", "trailing", 1.0)])
def test_ddim_step_matches_diffusers(prediction, spacing, eta):
    """DDIMScheduler (``set_alpha_to_one``) over its own timesteps, diffusers in float64 (max abs errors ≤ 7.7e-7)."""
    zero_snr = prediction == "v_prediction"
    ref = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                        set_alpha_to_one=True, prediction_type=prediction, rescale_betas_zero_snr=zero_snr,
                        timestep_spacing=spacing)
    ref.set_timesteps(10)
    ref.alphas_cumprod = ref.alphas_cumprod.double()  # float64 reference: at a zero-SNR first step with η = 1,
    # float32 diffusers takes √ of the rounding residue of 1 − ᾱ_prev − σ² = 0 (errors ~1e-3)
    schedule = S.spaced_schedule(ref.alphas_cumprod.numpy(), ref.timesteps.numpy())
    np.testing.assert_array_equal(schedule.timesteps, ref.timesteps.numpy())  # 900…0 or 999…99
    shape = (2, 4, 4, 3)
    for i in range(10):
        t = int(schedule.timesteps[i])
        x, out, noise = (_torch_normal(shape, seed + i) for seed in (100, 200, 300))
        expected = ref.step(out, t, x, eta=eta, variance_noise=noise).prev_sample.numpy()
        x_t, row = jnp.asarray(x.numpy()), _row(schedule, i)
        x0 = _x0(x_t, jnp.asarray(out.numpy()), row, "eps" if prediction == "epsilon" else "v")
        ours = Smp.ddim_step(x_t, x0, jnp.asarray(noise.numpy()), row, jnp.float32(eta))
        np.testing.assert_allclose(np.asarray(ours), expected, rtol=0, atol=2e-6, err_msg=f"t={t}")


def _oracle(x0, ac_table, parameterization):
    """The network output that predicts exactly x0 at every step."""
    table = jnp.asarray(ac_table, jnp.float32)

    def denoise(x_t, t, step):
        a, s = jnp.sqrt(table[t]), jnp.sqrt(1.0 - table[t])
        eps = S.eps_from_x0(x_t, x0, a, s)
        return eps if parameterization == "eps" else S.v_target(x0, eps, a, s)

    return denoise


@pytest.mark.parametrize("parameterization", ["eps", "v"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_oracle_denoiser_recovers_data_from_noised_start(sampler, parameterization):
    """Starting from q_sample(x0, t_0, ε) on a truncated schedule, an exact x0-predictor leads back to x0."""
    ac = S.alphas_cumprod(S.sd_linear_betas())
    schedule = jax.tree.map(lambda a: a[4:], S.spaced_schedule(ac, S.space_timesteps(1000, "10")))  # from t = 555
    rng = np.random.default_rng(0)
    x0, x_T = (jnp.asarray(rng.standard_normal((2, 4, 4, 3), np.float32)) for _ in range(2))
    noise = jnp.asarray(rng.standard_normal((6, 2, 4, 4, 3), np.float32))
    start = Smp.noised_start(x0, x_T, schedule)
    run = {"ddpm": functools.partial(Smp.sample_ddpm), "ddim": functools.partial(Smp.sample_ddim, eta=0.5)}[sampler]
    z0, steps = jax.jit(lambda s, sch, n: run(denoiser(_oracle(x0, ac, parameterization), parameterization), s, sch,
                                              n, trajectory=True))(start, schedule, noise)
    x0s = steps.denoised
    assert x0s.shape == steps.x.shape == (6, *x0.shape)
    np.testing.assert_array_equal(np.asarray(steps.x[-1]), np.asarray(z0))
    np.testing.assert_allclose(np.asarray(z0), np.asarray(x0), atol=1e-5)
    np.testing.assert_allclose(np.asarray(x0s), np.broadcast_to(x0, x0s.shape), atol=1e-5)


@jax.jit
def _toy_sample(key, sample_ids, w, schedule, cfg_scale, eta):
    """A guided DDIM sampler with a tiny traced "network" ``tanh(w·x + t/1000)`` and noise drawn inside the jit."""
    TRACES["toy"] += 1
    x_T, noise = sampler_noise(key, (2, 4, 4, 3), schedule.timesteps.shape[0], sample_ids)
    per_sample = lambda v: jnp.broadcast_to(v, (2, 1, 1, 1))  # noqa: E731 — a condition has a batch axis
    network = classifier_free_guidance(lambda x, t, c, i: jnp.tanh(x * c + t / 1000.0), per_sample(w[1]),
                                       per_sample(w[0]), cfg_scale)
    return Smp.sample_ddim(denoiser(network, "v"), x_T, schedule, noise, eta=eta)


def test_seeds_ids_timesteps_guidance_eta_are_traced():
    """One compilation for all calls; a sample's noise follows its id (``fold_in``), not its place in the batch."""
    ac = S.alphas_cumprod(S.rescale_zero_terminal_snr(S.sd_linear_betas()))
    calls = [(0, [0, 1], "10", 4.0, 0.0), (1, [0, 1], "ddim10", 4.0, 0.0), (0, [0, 1], "5,5", 2.5, 1.0),
             (0, [1, 0], "10", 4.0, 0.0)]
    traces = TRACES["toy"]
    outs = [np.asarray(_toy_sample(jax.random.key(seed), jnp.asarray(ids), jnp.array([0.5, 0.9]),
                                   S.spaced_schedule(ac, S.space_timesteps(1000, steps)), jnp.float32(cfg),
                                   jnp.float32(eta))) for seed, ids, steps, cfg, eta in calls]
    assert TRACES["toy"] - traces == 1
    assert all(np.abs(outs[0] - o).max() > 1e-3 for o in outs[1:3])
    assert np.abs(outs[0][0] - outs[0][1]).max() > 1e-3
    np.testing.assert_allclose(outs[3], outs[0][::-1], atol=1e-6)


def test_classifier_free_guidance_order_and_batching():
    denoise_cond = lambda x, t, c, i: x * c["w"] + t  # noqa: E731
    x = jnp.arange(6.0).reshape(2, 3)
    cond, uncond = {"w": jnp.full((2, 1), 3.0)}, {"w": jnp.full((2, 1), 1.0)}
    for batched in (True, False):
        guided = classifier_free_guidance(denoise_cond, cond, uncond, 4.0, batched=batched)
        np.testing.assert_allclose(guided(x, 2.0, 0), (x + 2) + 4.0 * (3 * x - x))
        np.testing.assert_allclose(classifier_free_guidance(denoise_cond, cond, uncond, 1.0, batched)(x, 0.0, 0),
                                   3 * x)
        per_step = classifier_free_guidance(denoise_cond, cond, uncond, jnp.array([4.0, 2.0]), batched)
        np.testing.assert_allclose(per_step(x, 2.0, 1), (x + 2) + 2.0 * (3 * x - x))
        linear = classifier_free_guidance(denoise_cond, cond, uncond, lambda level, step: 2.0 * level, batched)
        np.testing.assert_allclose(linear(x, 2.0, 0), (x + 2) + 4.0 * (3 * x - x))   # sgm's LinearCFG: w(σ)


def test_noise_shape_is_checked():
    schedule = S.spaced_schedule(S.alphas_cumprod(S.sd_linear_betas()), S.space_timesteps(1000, "4"))
    with pytest.raises(JaxirInputError, match="noise has shape"):
        Smp.sample_ddpm(lambda x, t, i: x, jnp.zeros((1, 2, 2, 4)), schedule, jnp.zeros((3, 1, 2, 2, 4)))
