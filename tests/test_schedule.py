"""Noise schedules and respacing against DiffBIR's recorded tables (../shared/fixtures/diffbir), SUPIR's sigma
snapping (../shared/fixtures/supir) and diffusers' schedulers."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr as diffusers_rescale

from helpers import FIXTURES, needs_fixtures
from jaxir.diffusion import schedule as S
from jaxir.diffusion.denoiser import denoiser, x0_prediction
from jaxir.errors import JaxirInputError



@pytest.fixture(scope="module")
def diffbir():
    return dict(np.load(FIXTURES / "diffbir" / "fixtures.npz"))


@pytest.fixture(scope="module")
def supir():
    return dict(np.load(FIXTURES / "supir" / "supir.npz"))


@needs_fixtures()
def test_diffbir_betas_and_spacing(diffbir):
    """SD 2.1's linear schedule is bit-exact; the zero-SNR rescaling agrees to 1e-15 (the fixture's √ᾱ comes from
    PyTorch's vectorised CPU sqrt, which is 1 ulp off IEEE sqrt at 12 of the 1000 entries)."""
    np.testing.assert_array_equal(S.sd_linear_betas(1000, 0.00085, 0.012), diffbir["betas_eps"])
    np.testing.assert_array_equal(S.make_betas("linear"), diffbir["betas_eps"])
    zsnr = S.rescale_zero_terminal_snr(S.sd_linear_betas())
    np.testing.assert_allclose(zsnr, diffbir["betas_v_zsnr"], rtol=0, atol=1e-15)
    assert zsnr[-1] == 1.0 and S.alphas_cumprod(zsnr)[-1] == 0.0
    np.testing.assert_allclose(S.alphas_cumprod(zsnr)[0], S.alphas_cumprod(S.sd_linear_betas())[0], rtol=1e-15)
    for name in ("eps", "v_zsnr"):  # DiffBIR's SpacedSampler with steps=10: space_timesteps(1000, "10")
        np.testing.assert_array_equal(S.space_timesteps(1000, "10"), diffbir[f"spaced_timesteps_{name}"])


@pytest.mark.parametrize("diffusers_name, ours", [
    ("scaled_linear", S.sd_linear_betas(1000, 0.00085, 0.012)),
    ("linear", S.linear_betas(1000, 0.00085, 0.012)),
    ("squaredcos_cap_v2", S.cosine_betas(1000)),
])
def test_betas_match_diffusers(diffusers_name, ours):
    """diffusers builds its tables in float32: betas within float32 rounding, ᾱ within its cumprod's drift."""
    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule=diffusers_name)
    np.testing.assert_allclose(ours, ref.betas.numpy(), rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(S.alphas_cumprod(ours), ref.alphas_cumprod.numpy(), rtol=2e-5, atol=1e-9)


def test_zero_snr_matches_diffusers():
    betas = S.sd_linear_betas()
    np.testing.assert_allclose(S.rescale_zero_terminal_snr(betas), diffusers_rescale(torch.from_numpy(betas)).numpy(),
                               rtol=0, atol=1e-15)
    ref = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_betas_zero_snr=True)
    np.testing.assert_allclose(S.alphas_cumprod(S.rescale_zero_terminal_snr(betas)), ref.alphas_cumprod.numpy(),
                               rtol=2e-5, atol=1e-9)


def test_cosine_schedule_properties():
    betas = S.cosine_betas(1000)
    ac = S.alphas_cumprod(betas)
    assert betas.max() == 0.999 and np.all(np.diff(ac) < 0)
    f = lambda t: np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731 — Nichol & Dhariwal eq. (17)
    np.testing.assert_allclose(ac[:900], f(np.arange(1, 901)) / f(0), rtol=1e-12)


def test_make_betas_names():
    np.testing.assert_array_equal(S.make_betas("scaled_linear"), S.sd_linear_betas())
    np.testing.assert_array_equal(S.make_betas("sqrt_linear", 10, 0.1, 0.2), np.linspace(0.1, 0.2, 10))
    with pytest.raises(JaxirInputError, match="unknown beta schedule"):
        S.make_betas("quadratic")


def test_space_timesteps():
    assert S.space_timesteps(1000, "ddim50").tolist() == list(range(0, 1000, 20))
    assert S.space_timesteps(1000, "1000").tolist() == list(range(1000))
    assert S.space_timesteps(1000, [1]).tolist() == [0]
    steps = S.space_timesteps(300, "10,15,20")  # IDDPM's docstring example: sections of 100 steps
    assert len(steps) == 45 and {0, 99, 100, 199, 200, 299} <= set(steps.tolist())
    assert [np.sum((steps >= lo) & (steps < lo + 100)) for lo in (0, 100, 200)] == [10, 15, 20]
    assert S.space_timesteps(10, [3, 4]).tolist() == [0, 2, 4, 5, 6, 8, 9]  # 10 = 5 + 5; strides 2 and 4/3
    with pytest.raises(JaxirInputError, match="exactly 30 steps"):
        S.space_timesteps(100, "ddim30")
    with pytest.raises(JaxirInputError, match="section of 5 steps into 6"):
        S.space_timesteps(10, [6, 1])


def test_spaced_schedule_is_the_respaced_process():
    ac = S.alphas_cumprod(S.sd_linear_betas())
    kept = S.space_timesteps(1000, "10")
    sch = S.spaced_schedule(ac, kept)
    assert sch.timesteps.tolist() == kept[::-1].tolist()
    # its betas rebuild ᾱ at the kept steps (DiffBIR make_schedule), its last step returns the x0 prediction
    np.testing.assert_allclose(np.cumprod(1 - sch.betas[::-1]), ac[kept], rtol=1e-13)
    assert sch.posterior_variance[-1] == 0 and sch.posterior_mean_coef2[-1] == 0
    np.testing.assert_allclose(sch.posterior_mean_coef1[-1], 1.0, rtol=1e-13)
    np.testing.assert_allclose(sch.posterior_log_variance_clipped, np.log(np.append(sch.posterior_variance[:-1],
                                                                                    sch.posterior_variance[-2])))
    full = S.spaced_schedule(ac, np.arange(1000))
    np.testing.assert_allclose(full.betas[::-1], S.sd_linear_betas(), rtol=1e-10)
    with pytest.raises(JaxirInputError, match="distinct"):
        S.spaced_schedule(ac, [0, 5, 5])
    one = S.spaced_schedule(ac, [999])
    assert one.posterior_mean_coef1[0] == pytest.approx(1.0) and np.isneginf(one.posterior_log_variance_clipped[0])


def test_ddim_variance_matches_ddim_formula():
    """σ_t of DDIM (DiffBIR ``make_ddim_sampling_parameters`` with η = 1, ending at ᾱ[0]) is √posterior_variance."""
    ac = S.alphas_cumprod(S.sd_linear_betas())
    steps = np.arange(0, 1000, 100) + 1  # DiffBIR's "uniform" DDIM steps
    sch = S.spaced_schedule(ac, steps, final_alpha_cumprod=ac[0])
    a, a_prev = ac[steps], np.append(ac[0], ac[steps[:-1]])
    ddim_sigma = np.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    np.testing.assert_allclose(np.sqrt(sch.posterior_variance), ddim_sigma[::-1], rtol=1e-12)
    np.testing.assert_array_equal(sch.alphas_cumprod_prev, a_prev[::-1])


def test_parameterization_conversions():
    rng = np.random.default_rng(0)
    x0, eps = rng.standard_normal((2, 3, 4, 4)).astype(np.float64)
    for ac in (0.999, 0.5, 0.01):
        a, s = S.scales(ac)
        x_t = S.q_sample(x0, eps, a, s)
        v = S.v_target(x0, eps, a, s)
        np.testing.assert_allclose(S.x0_from_eps(x_t, eps, a, s), x0, atol=1e-10)
        np.testing.assert_allclose(S.eps_from_x0(x_t, x0, a, s), eps, atol=1e-10)
        np.testing.assert_allclose(S.x0_from_v(x_t, v, a, s), x0, atol=1e-12)
        np.testing.assert_allclose(S.eps_from_v(x_t, v, a, s), eps, atol=1e-12)
        for name, out in (("eps", eps), ("v", v), ("x0", x0)):
            np.testing.assert_allclose(x0_prediction(out, x_t, a, s, 1.0, name), x0, atol=1e-10)
            # the same state in sigma space, x_t/a = x0 + σ·ε with σ = s/a, which the network sees as c_in·x = x_t
            np.testing.assert_allclose(x0_prediction(out, x_t / a, 1.0, s / a, a, name), x0, atol=1e-10)
    with pytest.raises(JaxirInputError, match="parameterization"):
        denoiser(lambda x, t, step: x, "score")


@needs_fixtures()
def test_sigmas_and_snapping_match_supir(supir):
    table = S.sigmas(S.alphas_cumprod(S.sd_linear_betas()))
    np.testing.assert_allclose(table, supir["denoiser_sigmas"], rtol=1.2e-7)  # SUPIR takes √ in float32
    np.testing.assert_array_equal(S.sigma_to_timestep(supir["den_sigma"], table), supir["den_timestep"])
    np.testing.assert_allclose(table[supir["den_timestep"]], supir["den_sigma_snapped"], rtol=1.2e-7)
    np.testing.assert_array_equal(S.sigma_to_timestep(supir["sampler_sigma_hat"], table), supir["sampler_timestep"])
    eight = np.append(table[S.sgm_timesteps(8)][::-1], 0.0)  # LegacyDDPMDiscretization(8), descending, + 0
    np.testing.assert_allclose(eight, supir["sampler_sigmas"], rtol=1.2e-7)
    assert np.isinf(S.sigmas(S.alphas_cumprod(S.rescale_zero_terminal_snr(S.sd_linear_betas())))[-1])


def test_snapping_linear_or_log():
    table = np.array([0.5, 1.0, 4.0])
    assert int(S.sigma_to_timestep(2.2, table)) == 1  # |2.2 − 1| < |2.2 − 4|
    assert int(S.sigma_to_timestep(2.2, table, log_space=True)) == 2  # log 2.2 is nearer log 4
    assert S.sigma_to_timestep(np.array([[0.1, 9.0]]), table).tolist() == [[0, 2]]
    assert S.sgm_timesteps(3).tolist() == [333, 666, 999] and len(S.sgm_timesteps(1000)) == 1000
