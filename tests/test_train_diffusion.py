"""Training the autoencoder and the small CLDM: the objectives against independent references (torch's Normal KL,
diffusers' ``DDPMScheduler.add_noise``), falling losses on tiny runs, the ControlNet initialised from the UNet,
checkpoints that ``jaxir.load`` and the DiffBIR pipeline run end to end, and the shipped small CLDM."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxir
from jaxir.degradations.resize import imresize
from jaxir.diffusion import schedule as S
from jaxir.errors import JaxirInputError
from jaxir.models.unet import UNetConfig
from jaxir.models.vae import AutoencoderKL, VAEConfig
from jaxir.train.diffusion import (DiffusionData, augment_condition, connector_batches, controlnet_from_unet,
                                   eps_loss, train_connector, train_ldm)
from jaxir.train.loop import TrainConfig
from jaxir.train.vae import (INITIAL_LOGVAR, VAEData, initial_params, kl_divergence, latent_scale, train_vae,
                             vae_loss)

pytestmark = pytest.mark.slow   # compiles whole models or runs training / pipelines

TINY_VAE = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=4, resolution=16,
                     scale_factor=1.0, norm_groups=8)
TINY_UNET = UNetConfig(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                       attention_resolutions=(2,), num_heads=-1, num_head_channels=32, context_dim=32)
TINY_DATA = DiffusionData(pool=32, batch=8, crop=16, validation=8)


def _steps(n: int, lr: float = 3e-3) -> TrainConfig:
    """n steps, validated after each (the validation loss is on a fixed batch with fixed timesteps and noise)."""
    return TrainConfig(steps=n, learning_rate=lr, warmup_steps=1, log_every=1, eval_every=1, checkpoint_every=n)


def test_kl_matches_torch_distributions():
    torch = pytest.importorskip("torch")
    mean = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype(np.float32)
    logvar = np.random.default_rng(1).normal(size=(2, 3, 3, 4)).astype(np.float32)
    ours = np.asarray(kl_divergence(jnp.asarray(mean), jnp.asarray(logvar)))
    q = torch.distributions.Normal(torch.from_numpy(mean), torch.from_numpy(np.exp(0.5 * logvar)))
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5)


@pytest.fixture
def ddpm_noised():
    """diffusers' DDPM scheduler on Stable Diffusion's schedule (scaled_linear 0.00085 → 0.012) and its
    ``add_noise`` of random latents at t = 0, 500, 999: ``(scheduler, z0, noise, t, z_t)``."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    z0 = np.random.default_rng(0).normal(size=(3, 4, 4, 2)).astype(np.float32)
    noise = np.random.default_rng(1).normal(size=z0.shape).astype(np.float32)
    t = np.array([0, 500, 999])
    z_t = scheduler.add_noise(torch.from_numpy(z0), torch.from_numpy(noise), torch.from_numpy(t)).numpy()
    return scheduler, z0, noise, t, z_t


def test_eps_loss_noises_as_diffusers_ddpm_does(ddpm_noised):
    """z_t = √ᾱ z0 + √(1−ᾱ) ε on Stable Diffusion's schedule equals diffusers' ``add_noise``: a network returning
    its input z_t makes the loss mean((ε − z_t)²)."""
    _, z0, noise, t, z_t = ddpm_noised
    loss = eps_loss(lambda p, x, tt, c_t, c_f: x, S.alphas_cumprod(S.sd_linear_betas()))
    ours = float(loss(None, (jnp.asarray(z0), None, None, (jnp.asarray(t), jnp.asarray(noise)))))
    np.testing.assert_allclose(ours, np.mean((noise - z_t) ** 2), rtol=1e-5)
    perfect = eps_loss(lambda p, x, tt, c_t, c_f: p, S.alphas_cumprod(S.sd_linear_betas()))
    assert float(perfect(jnp.asarray(noise), (jnp.asarray(z0), None, None, (jnp.asarray(t), jnp.asarray(noise))))) \
        == 0.0


def test_min_snr_weighting_equals_diffusers_training_scripts(ddpm_noised):
    """``min_snr_gamma``: each sample's squared error weighted by min(SNR_t, γ)/SNR_t, SNR from diffusers'
    ``training_utils.compute_snr`` on SD's scheduler, as diffusers' text-to-image script weights its ε-loss; the
    high-SNR (low-noise) t = 0 is down-weighted, t = 999 is not."""
    import torch
    from diffusers.training_utils import compute_snr

    scheduler, z0, noise, t, z_t = ddpm_noised
    snr = compute_snr(scheduler, torch.from_numpy(t)).numpy()
    weights = np.minimum(snr, 5.0) / snr
    assert weights[0] < 0.01 and weights[2] == 1.0
    want = np.mean(weights * np.mean((noise - z_t) ** 2, axis=(1, 2, 3)))
    batch = (jnp.asarray(z0), None, None, (jnp.asarray(t), jnp.asarray(noise)))
    ours = eps_loss(lambda p, x, tt, c_t, c_f: x, S.alphas_cumprod(S.sd_linear_betas()), min_snr_gamma=5.0)
    np.testing.assert_allclose(float(ours(None, batch)), want, rtol=1e-5)
    with pytest.raises(JaxirInputError, match="min_snr_gamma"):
        DiffusionData(min_snr_gamma=-1.0)


def test_condition_noise_augmentation_noises_as_diffusers_ddpm_does(ddpm_noised):
    """``augment_condition``: each of 64 conditions diffused to its own t' < T = 200 as diffusers' ``add_noise``
    does (DiffBIR v2.1's ``q_sample`` of ``c_img``), with t' and ε' from the key's split; T > 1000 is refused, and
    so is augmenting the UNet's training, which has no condition."""
    import torch

    scheduler = ddpm_noised[0]
    c_f = np.random.default_rng(2).normal(size=(64, 4, 4, 2)).astype(np.float32)
    key = jax.random.key(3)
    ours = np.asarray(augment_condition(jnp.asarray(c_f), key, S.alphas_cumprod(S.sd_linear_betas()), 200))
    k_t, k_noise = jax.random.split(key)
    t = np.asarray(jax.random.randint(k_t, (64,), 0, 200))
    noise = np.asarray(jax.random.normal(k_noise, c_f.shape))
    assert t.max() < 200 and t.max() - t.min() > 150   # the draw spans [0, T)
    want = scheduler.add_noise(torch.from_numpy(c_f), torch.from_numpy(noise), torch.from_numpy(t)).numpy()
    # diffusers' ᾱ is a float32 cumprod: its √(1−ᾱ_t) differs from ours (float64, then float32) by ≤ 6.9e-7 for
    # t < 200, times |ε'| ≤ 4
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=3e-6)
    with pytest.raises(JaxirInputError, match="noise_aug_timestep"):
        DiffusionData(noise_aug_timestep=1001)
    with pytest.raises(JaxirInputError, match="connector"):
        train_ldm("unused", None, data=DiffusionData(noise_aug_timestep=200))


def test_connector_batches_augment_the_drawn_conditions_only_when_asked():
    """The connector's training batches: with ``noise_aug_timestep`` the same samples, targets and draw as without,
    their conditions noised by ``augment_condition`` with the key split from the step's draw; without it the
    pool's conditions as they are."""
    z0 = jnp.arange(8 * 2 * 2 * 1, dtype=jnp.float32).reshape(8, 2, 2, 1)
    c_f, c_t, key = -z0, jnp.ones((1, 3, 4)), jax.random.key(5)
    table = S.alphas_cumprod(S.sd_linear_betas())
    data = DiffusionData(batch=4)
    z, c, ctx, draw = connector_batches(z0, c_f, c_t, data, key, table)(jnp.int32(3))
    np.testing.assert_array_equal(np.asarray(c), -np.asarray(z))   # the drawn samples' own conditions
    augmented = connector_batches(z0, c_f, c_t, dataclasses.replace(data, noise_aug_timestep=200), key, table)
    z_aug, c_aug, _, draw_aug = augmented(jnp.int32(3))
    np.testing.assert_array_equal(np.asarray(z_aug), np.asarray(z))
    rest, k_aug = jax.random.split(draw)
    np.testing.assert_array_equal(jax.random.key_data(draw_aug), jax.random.key_data(rest))
    np.testing.assert_allclose(np.asarray(c_aug), np.asarray(augment_condition(c, k_aug, table, 200)), rtol=1e-6)
    assert float(jnp.abs(c_aug - c).max()) > 0.1
    np.testing.assert_array_equal(np.asarray(ctx), np.asarray(c_t))


def test_vae_initialisation_and_latent_scale():
    model = AutoencoderKL(TINY_VAE)
    params = initial_params(model, seed=0, crop=16)
    np.testing.assert_array_equal(np.asarray(params["quant_conv"]["bias"][4:]), INITIAL_LOGVAR)
    mean, logvar = model.apply({"params": params}, jnp.zeros((1, 16, 16, 3)), method="encode")
    assert mean.shape == (1, 8, 8, 4) and float(jnp.exp(0.5 * logvar).max()) < 0.1
    scale = latent_scale(model, params, seed=0, images=4, size=16)
    from jaxir.data.dead_leaves import dead_leaves_batch
    from jaxir.train.vae import SCALE_KEY

    x = dead_leaves_batch(jax.random.fold_in(jax.random.key(0), SCALE_KEY), 4, 16)
    mean, _ = model.apply({"params": params}, 2 * x - 1, method="encode")
    np.testing.assert_allclose(float(jnp.std(scale * mean)), 1.0, rtol=1e-5)
    with pytest.raises(JaxirInputError, match="loss must be"):
        vae_loss(model, VAEData(loss="l3"))


@pytest.fixture(scope="module")
def tiny_cldm(tmp_path_factory):
    """A tiny autoencoder → latent diffusion UNet → IRControlNet, each trained a few steps by the real trainers (the
    connector with min-SNR-5 weighting and condition noise augmentation)."""
    root = tmp_path_factory.mktemp("cldm")
    vae_dir = train_vae(root / "vae", model_config=TINY_VAE, train_config=_steps(10),
                        data=VAEData(batch=4, crop=16, validation_images=2, validation_size=16), progress=False)
    ldm_dir = train_ldm(root / "ldm", str(vae_dir), unet_config=TINY_UNET, train_config=_steps(10),
                        data=TINY_DATA, progress=False)
    stage1 = {task: (lambda lq, d: imresize(lq, scale=d.scale) if d.scale > 1 else lq) for task in ("sr2", "blur2")}
    cldm_dir = train_connector(root / "cldm", str(ldm_dir), stage1, tasks=("sr2", "blur2"),
                               train_config=_steps(10),
                               data=dataclasses.replace(TINY_DATA, min_snr_gamma=5.0, noise_aug_timestep=200),
                               progress=False)
    return root, vae_dir, ldm_dir, cldm_dir


def _log(run_dir, field):
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r[field] for r in records if field in r]


def test_tiny_runs_lower_their_validation_losses(tiny_cldm):
    """Each trainer's validation score (VAE: Y-PSNR of the round trip; diffusion: minus the ε-loss on a fixed batch,
    timesteps and noise) is better after its last step than after its first."""
    root = tiny_cldm[0]
    for name in ("vae", "ldm", "cldm"):
        scores = _log(root / name / "run", "score")
        assert len(scores) == 10
        assert scores[-1] > scores[0], (name, scores)
        curve = json.loads((root / name / "model" / "provenance.json").read_text())["validation_curve"]
        assert [score for _, _, score in curve] == scores and [step for step, _, _ in curve] == list(range(1, 11))
    provenance = json.loads((root / "cldm" / "model" / "provenance.json").read_text())
    assert provenance["data"]["min_snr_gamma"] == 5.0 and provenance["data"]["noise_aug_timestep"] == 200


def test_vae_checkpoint_has_the_measured_scale(tiny_cldm):
    vae_dir = tiny_cldm[1]
    model, params = jaxir.load(vae_dir)
    provenance = json.loads((vae_dir / "provenance.json").read_text())
    assert model.config.scale_factor == pytest.approx(latent_scale(model, params, seed=0), rel=1e-6)
    assert model.config.scale_factor != 1.0 and provenance["converter"] == "jaxir.train.vae"


def test_controlnet_starts_as_the_unet_encoder(tiny_cldm):
    """DiffBIR's initialisation: a copy of the UNet encoder with zero condition channels and zero convolutions,
    so the untrained CLDM predicts exactly what the UNet alone predicts."""
    model, params = jaxir.load(tiny_cldm[2])
    fresh = controlnet_from_unet(model.config.controlnet, params["unet"])
    first = fresh["input_blocks_0_0"]["kernel"]
    np.testing.assert_array_equal(np.asarray(first[:, :, :4]), np.asarray(params["unet"]["input_blocks_0_0"]["kernel"]))
    assert not np.any(np.asarray(first[:, :, 4:]))
    z = jax.random.normal(jax.random.key(0), (1, 4, 4, 4))
    c_t = model.encode_text(params, [""])
    with_control = model.denoise(params, z, jnp.array([500.0]), c_t, jax.random.normal(jax.random.key(1), z.shape))
    alone = model.net.apply({"params": params}, z, jnp.array([500.0]), c_t,
                            method=lambda net, *a: net.unet(*a))
    np.testing.assert_allclose(np.asarray(with_control), np.asarray(alone), atol=1e-6)


def test_connector_training_changes_only_the_controlnet(tiny_cldm):
    _, _, ldm_dir, cldm_dir = tiny_cldm
    _, before = jaxir.load(ldm_dir)
    _, after = jaxir.load(cldm_dir)
    for part in ("unet", "vae", "text"):
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), before[part],
                     after[part])
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before["controlnet"],
                                           after["controlnet"]))
    assert all(changed), f"{changed.count(False)} of {len(changed)} ControlNet tensors unchanged"


def test_trained_cldm_runs_in_the_diffbir_pipeline(tiny_cldm):
    """The trained checkpoint restores through the DiffBIR pipeline with the ``jaxir`` preset (f = 4, pad to 8)
    and gives the same image for the same key."""
    from jaxir.degradations.pipeline import Degradation
    from jaxir.pipelines.diffbir import DiffBIR, DiffBIRSettings

    model, params = jaxir.load(tiny_cldm[3])
    settings = DiffBIRSettings.preset("jaxir", steps=3, vae_tile=0)
    pipe = DiffBIR(model, params, settings, stage1=lambda lq, d, *_: imresize(lq, scale=d.scale))
    assert (pipe.factor, pipe.pad_multiple) == (2, 4)
    lq = jax.random.uniform(jax.random.key(2), (1, 10, 9, 3))
    a = pipe(lq, Degradation(scale=2), jax.random.key(0))
    b = pipe(lq, Degradation(scale=2), jax.random.key(0))
    assert a.shape == (1, 20, 18, 3) and bool(jnp.all(jnp.isfinite(a)))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_pixel_space_variant_trains_the_unet_on_pixels(tmp_path):
    unet = UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(2,), num_heads=-1, num_head_channels=32, context_dim=32)
    data = DiffusionData(pool=16, batch=8, crop=8, validation=8, space="pixel")
    path = train_ldm(tmp_path, None, unet_config=unet, train_config=_steps(10), data=data, progress=False)
    model, _ = jaxir.load(path)
    assert model.config.in_channels == 3
    scores = _log(tmp_path / "run", "score")
    assert scores[-1] > scores[0], scores
    with pytest.raises(JaxirInputError, match="latent space"):
        train_connector(tmp_path / "c", str(path), {}, data=data)
    with pytest.raises(JaxirInputError, match="needs the trained autoencoder"):
        train_ldm(tmp_path / "x", None, data=DiffusionData())


def test_table2_scores_the_round_trip_of_any_autoencoder_checkpoint(tiny_cldm, tmp_path, monkeypatch):
    """``jaxir experiment table2 --models CHECKPOINT…``: the round trip D(mode(E(x))) as computed here by hand
    (tiled: 48-px tiles on 96×104 images), from any checkpoint holding the autoencoder (kind vae or diffbir_cldm:
    the same numbers); a checkpoint without one is listed as unavailable; a rerun computes nothing."""
    from experiments import table2_vae
    from jaxir.data.images import ImageRecord
    from jaxir.metrics import psnr
    from jaxir.metrics.color import quantize_uint8
    from jaxir.pipelines.autoencoder import load_autoencoder, roundtrip
    from jaxir.study.experiment import Options, run_experiment

    monkeypatch.setattr(table2_vae, "TILE", 48)
    images = tuple(ImageRecord(f"img{i}", np.asarray(jax.random.uniform(jax.random.key(i), (100, 106, 3))), "test")
                   for i in range(2))   # NIQE needs 96² at least; cropped to 96 × 104
    unet_only = _unet_only(tmp_path)
    options = Options(images, models=(str(tiny_cldm[1]), str(tiny_cldm[3]), str(unet_only)))
    run = run_experiment(table2_vae.EXPERIMENT, options, tmp_path / "out", progress=False)
    model, params = load_autoencoder(tiny_cldm[1])
    x = jnp.asarray(images[1].image[:96, :104])[None]
    expected = float(psnr(quantize_uint8(roundtrip(model, params, x, tile=48)) / 255.0, x, y_channel=True)[0])
    by_key = {(r["model"], r["image"]): r for r in run.rows}
    assert len(run.rows) == 4 and by_key[(str(tiny_cldm[1]), "img1")]["psnr"] == pytest.approx(expected, abs=1e-6)
    assert by_key[(str(tiny_cldm[3]), "img1")]["psnr"] == pytest.approx(expected, abs=1e-6)
    summary = json.loads((tmp_path / "out" / "table2" / "summary.json").read_text())
    assert "no autoencoder" in summary["unavailable"][str(unet_only)]
    assert "VAE round trip, PSNR per image" in run.summary.table
    again = run_experiment(table2_vae.EXPERIMENT, options, tmp_path / "out", progress=False)
    assert again.computed == 0 and [r["psnr"] for r in again.rows] == [r["psnr"] for r in run.rows]
    with pytest.raises(JaxirInputError, match="no autoencoder"):
        load_autoencoder(unet_only)


def _unet_only(tmp_path):
    from jaxir import checkpoints
    from jaxir.models.unet import param_shapes

    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), param_shapes(TINY_UNET))
    return checkpoints.save(tmp_path / "unet", "unet", TINY_UNET, params)


def test_copy_as_bfloat16_keeps_config_and_provenance(tiny_cldm, tmp_path):
    from jaxir.checkpoints import copy_as

    source = tiny_cldm[3]
    target = copy_as(source, tmp_path / "bf16", "bfloat16")
    model, params = jaxir.load(target)
    _, original = jaxir.load(source)
    provenance = json.loads((target / "provenance.json").read_text())
    assert provenance["storage_dtype"] == "bfloat16" and provenance["command"] == json.loads(
        (source / "provenance.json").read_text())["command"]
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(original)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2 ** -8, atol=1e-30)


def test_shipped_cldm_restores_a_photo():
    """The shipped small CLDM loads (bf16 storage), was trained by the recorded commands on dead leaves, and
    restores a 128² crop of a bundled photo through its pipeline, the same for the same key: 31.40 dB Y-PSNR at
    SR ×2 when measured (its stage 1, jaxir_cnn, has 37.2 dB: the CLDM's distortion the study reports)."""
    from jaxir.data import bundled_photos
    from jaxir.metrics import psnr
    from jaxir.restorers import get
    from jaxir.restorers.trained import CLDM
    from jaxir.weights import SHIPPED as WEIGHTS
    from jaxir.train.restorer import TASKS

    provenance = json.loads((WEIGHTS / CLDM / "provenance.json").read_text())
    assert provenance["command"].startswith("jaxir train --task cldm") and provenance["storage_dtype"] == "bfloat16"
    assert "dead leaves" in provenance["training_data"]
    assert [command.split()[3] for command in provenance["recipe"]] == ["vae", "ldm", "cldm", "cldm"]

    def options(command):
        words = command.split()
        return {w: words[i + 1] for i, w in enumerate(words) if w.startswith("--")}

    def training_options(command):   # every option but the folders
        return {k: v for k, v in options(command).items() if k not in ("--ldm", "--out")}

    first, second = provenance["recipe"][2:]   # the connector: one command twice, the second continuing the first
    assert training_options(first) == training_options(second) == training_options(provenance["command"])
    assert options(second)["--ldm"] == options(first)["--out"] + "/model"
    assert training_options(provenance["previous_run"]["command"]) == training_options(provenance["command"])
    assert options(provenance["command"])["--ldm"] == options(provenance["previous_run"]["command"])["--out"] + "/model"
    d = TASKS["sr2"]
    hq = jnp.asarray(bundled_photos(["coffee"])[0].image[:128, 128:256])[None]
    lq = d(hq, jax.random.key(0))
    restorer = get("jaxir_cldm")
    a, b = restorer.restore(lq, d, jax.random.key(1)), restorer.restore(lq, d, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = restorer.restore(lq, d, jax.random.key(2))   # the key reaches the diffusion noise
    assert float(jnp.abs(other - a).max()) > 1e-3
    assert a.shape == hq.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    quantised = jnp.round(a * 255) / 255
    assert 30.5 < float(psnr(quantised, hq, crop_border=2, y_channel=True)[0]) < 37.0
    assert restorer.handles(d) and not restorer.handles(TASKS["sr2"].__class__(scale=3))


def test_timestep_errors_measure_the_denoiser_against_its_condition(tiny_cldm):
    """``timestep_errors``: its ε-loss at t is the trainer's eq. (9) loss with that t and noise, its x̂0 error is
    √(1−ᾱ)/√ᾱ times the ε error (x̂0 − z0 = −(√(1−ᾱ)/√ᾱ)(ε̂ − ε)), the condition's error is rms(c_f − z0) of the
    same held-out crops."""
    from jaxir.train.diffusion import (DIAGNOSTIC_KEY, DiffusionData, connector_pool, empty_prompt_feature,
                                       eps_loss, timestep_errors)

    _, _, _, cldm_dir = tiny_cldm
    stage1 = {task: (lambda lq, d: imresize(lq, scale=d.scale) if d.scale > 1 else lq) for task in ("sr2", "blur2")}
    rows = timestep_errors(cldm_dir, stage1, [10, 500], tasks=("sr2", "blur2"), samples=8)
    model, params = jaxir.load(cldm_dir)
    key = jax.random.fold_in(jax.random.key(0), DIAGNOSTIC_KEY)
    z0, c_f = connector_pool(model.config.vae, params["vae"], stage1, ("sr2", "blur2"), DiffusionData(), 0,
                             DIAGNOSTIC_KEY, 8, key)
    noise = jax.random.normal(jax.random.fold_in(key, 1), z0.shape)
    c_t = empty_prompt_feature(model.config.text, params["text"])
    table = S.alphas_cumprod(S.sd_linear_betas())
    loss = eps_loss(lambda p, z_t, t, ctx, c: model.denoise(p, z_t, t, jnp.broadcast_to(ctx, (8, *ctx.shape[1:])), c),
                    table)
    for row in rows:
        t = jnp.full((8,), row["t"], jnp.int32)
        assert row["eps_loss"] == pytest.approx(float(loss(params, (z0, c_f, c_t, (t, noise)))), rel=1e-5)
        ratio = np.sqrt(1 - table[row["t"]]) / np.sqrt(table[row["t"]])
        assert row["x0_rms"] == pytest.approx(ratio * np.sqrt(row["eps_loss"]), rel=1e-4)
        assert row["condition_rms"] == pytest.approx(float(jnp.sqrt(jnp.mean((c_f - z0) ** 2))), rel=1e-6)
