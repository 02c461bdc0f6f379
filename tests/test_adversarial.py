"""LDM's adversarial autoencoder term (jaxir.train.adversarial) against taming-transformers' own code (the
``taming-transformers-rom1504`` package, whose ``NLayerDiscriminator`` and losses are the CompVis files), and the
GAN branch of the autoencoder trainer (jaxir.train.vae) against direct computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxir.train.adversarial import PatchDiscriminator, adaptive_weight, hinge_d_loss

taming_model = pytest.importorskip("taming.modules.discriminator.model")
vqperceptual = pytest.importorskip("taming.modules.losses.vqperceptual")
torch = pytest.importorskip("torch")


def flax_params_from_torch(disc) -> dict:
    """taming's ``main`` Sequential → PatchDiscriminator parameters (conv_k in order, norm_k after conv_k)."""
    params, conv_index = {}, 0
    for module in disc.main:
        if isinstance(module, torch.nn.Conv2d):
            entry = {"kernel": module.weight.detach().numpy().transpose(2, 3, 1, 0)}
            if module.bias is not None:
                entry["bias"] = module.bias.detach().numpy()
            params[f"conv_{conv_index}"] = entry
            conv_index += 1
        elif isinstance(module, torch.nn.BatchNorm2d):
            params[f"norm_{conv_index - 1}"] = {"scale": module.weight.detach().numpy(),
                                                "bias": module.bias.detach().numpy()}
    return jax.tree.map(jnp.asarray, params)


@pytest.mark.parametrize("layers, features", [(3, 64), (2, 16)])
def test_patch_discriminator_equals_taming(layers, features):
    """The same weights (taming's ``weights_init``), the same batch, training-mode BatchNorm: equal logits."""
    torch.manual_seed(0)
    disc = taming_model.NLayerDiscriminator(input_nc=3, ndf=features, n_layers=layers).apply(taming_model.weights_init)
    disc.train()
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 64, 48)).astype(np.float32)
    with torch.no_grad():
        expected = disc(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    network = PatchDiscriminator(features, layers)
    shapes = jax.tree.map(np.shape, network.init(jax.random.key(0), jnp.zeros((1, 64, 48, 3)))["params"])
    params = flax_params_from_torch(disc)
    assert jax.tree.map(np.shape, params) == shapes
    with jax.default_matmul_precision("highest"):
        got = np.asarray(network.apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1))))
    err = float(np.abs(got - expected).max() / np.abs(expected).max())
    print(f"PatchGAN {layers} layers: max error / max |logit| = {err:.1e}")
    assert got.shape == expected.shape and err <= 1e-5


def test_initialisation_follows_weights_init():
    """Kernels N(0, 0.02²), BatchNorm scales N(1, 0.02²) and offsets 0, conv biases within ±1/√fan_in."""
    params = PatchDiscriminator().init(jax.random.key(1), jnp.zeros((1, 64, 64, 3)))["params"]
    kernel = np.asarray(params["conv_2"]["kernel"])
    assert abs(kernel.std() - 0.02) < 0.001 and abs(kernel.mean()) < 0.001
    scale = np.asarray(params["norm_2"]["scale"])
    assert abs(scale.mean() - 1) < 0.01 and 0.01 < scale.std() < 0.03 and not np.any(params["norm_2"]["bias"])
    bias = np.asarray(params["conv_0"]["bias"])
    assert np.abs(bias).max() <= 1 / np.sqrt(3 * 16) and np.abs(bias).max() > 0.5 / np.sqrt(3 * 16)
    assert "bias" not in params["conv_1"]


def test_hinge_loss_and_adaptive_weight_equal_ldm():
    """hinge_d_loss = taming's; the adaptive weight = LPIPSWithDiscriminator.calculate_adaptive_weight's formula
    with torch autograd through a last layer: ‖∇L_rec‖ / (‖∇L_G‖ + 1e-4), clamped, times disc_weight."""
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(2, 5, 5, 1)).astype(np.float32), rng.normal(size=(2, 5, 5, 1)).astype(np.float32)
    expected = float(vqperceptual.hinge_d_loss(torch.from_numpy(real), torch.from_numpy(fake)))
    assert float(hinge_d_loss(real, fake)) == pytest.approx(expected, rel=1e-6)

    w = torch.from_numpy(rng.normal(size=(4, 6)).astype(np.float32)).requires_grad_()
    h = torch.from_numpy(rng.normal(size=(8, 6)).astype(np.float32))
    out = h @ w.T
    rec, gan = (out - 1).abs().sum() / 8, -(out * 3).mean()
    rec_grad = torch.autograd.grad(rec, w, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan, w, retain_graph=True)[0]
    ldm = float(torch.clamp(torch.norm(rec_grad) / (torch.norm(gan_grad) + 1e-4), 0.0, 1e4) * 0.5)
    assert float(adaptive_weight(rec_grad.numpy(), gan_grad.numpy(), 0.5)) == pytest.approx(ldm, rel=1e-6)
    assert float(adaptive_weight(np.ones(3), np.zeros(3), 1.0)) == pytest.approx(1e4)   # the clamp


# ---- the autoencoder trainer's adversarial branch --------------------------------------------------------------

def _tiny():
    from jaxir.models.vae import AutoencoderKL, VAEConfig
    from jaxir.train.vae import VAEData, initial_params

    config = VAEConfig(ch=16, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=4, resolution=16,
                       scale_factor=1.0, norm_groups=8)
    model = AutoencoderKL(config)
    data = VAEData(batch=2, crop=16, disc_weight=0.5, disc_start=3, disc_features=8, disc_layers=2)
    disc = PatchDiscriminator(8, 2).init(jax.random.key(5), jnp.zeros((1, 16, 16, 3)))["params"]
    params = {"autoencoder": initial_params(model, 0, 16), "discriminator": disc}
    x = jax.random.uniform(jax.random.key(3), (2, 16, 16, 3))
    return model, data, params, x


def test_adversarial_loss_is_ldms_two_objectives():
    """Before ``disc_start`` the autoencoder gets exactly the plain loss's gradient and the discriminator none;
    from it on the loss is rec + KL + λ·(−mean D(x̂)) + hinge(D(x), D(x̂)), with λ from the decoder's last kernel's
    gradients computed here by full differentiation (not the trainer's pullback), and each part's gradient is its
    own objective's."""
    import dataclasses

    from jaxir.train.vae import vae_loss

    model, data, params, x = _tiny()
    key = jax.random.key(4)
    gan, plain = vae_loss(model, data), vae_loss(model, dataclasses.replace(data, disc_weight=0.0))
    disc = PatchDiscriminator(8, 2)
    mean, logvar = model.apply({"params": params["autoencoder"]}, 2 * x - 1, method="encode")
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)

    def recon_of(ae):
        return model.apply({"params": ae}, z, method="decode")

    def rec_of(ae):
        return jnp.mean((recon_of(ae) - (2 * x - 1)) ** 2)

    def gan_of(ae):
        return -jnp.mean(disc.apply({"params": params["discriminator"]}, recon_of(ae)))

    def d_loss_of(d, recon):
        return hinge_d_loss(disc.apply({"params": d}, 2 * x - 1), disc.apply({"params": d}, recon))

    @jax.jit
    def everything(params):
        last = lambda g: g["decoder"]["conv_out"]["kernel"]  # noqa: E731
        ae = params["autoencoder"]
        recon = recon_of(ae)
        return {"early": jax.grad(gan)(params, (x, key, jnp.int32(2))),
                "alone": jax.grad(plain)(ae, (x, key, jnp.int32(2))),
                "late": jax.grad(gan)(params, (x, key, jnp.int32(3))),
                "loss": gan(params, (x, key, jnp.int32(3))), "plain": plain(ae, (x, key, jnp.int32(3))),
                "rec": rec_of(ae), "gan": gan_of(ae), "rec_grad": last(jax.grad(rec_of)(ae)),
                "gan_grad": last(jax.grad(gan_of)(ae)), "d_loss": d_loss_of(params["discriminator"], recon),
                "d_only": jax.grad(d_loss_of)(params["discriminator"], recon)}

    with jax.default_matmul_precision("highest"):
        got = everything(params)
    assert all(not np.any(g) for g in jax.tree.leaves(got["early"]["discriminator"]))
    for a, b in zip(jax.tree.leaves(got["early"]["autoencoder"]), jax.tree.leaves(got["alone"])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)
    weight = 0.5 * min(float(np.linalg.norm(got["rec_grad"]) / (np.linalg.norm(got["gan_grad"]) + 1e-4)), 1e4)
    kl = float(got["plain"] - got["rec"])
    expected = float(got["rec"]) + kl + weight * float(got["gan"]) + float(got["d_loss"])
    assert float(got["loss"]) == pytest.approx(expected, rel=1e-5)
    late, d_only = jax.tree.leaves(got["late"]["discriminator"]), jax.tree.leaves(got["d_only"])
    scale = max(float(np.abs(b).max()) for b in d_only)
    assert max(float(np.abs(a - b).max()) for a, b in zip(late, d_only)) <= 1e-5 * scale   # float rounding of x̂


def test_adversarial_training_writes_the_autoencoder_alone(tmp_path):
    """A few steps with the GAN on from step 2: a kind-vae checkpoint of the last autoencoder (no discriminator
    inside), the discriminator's parameters moved only once the term is on, the validation logged."""
    import dataclasses
    import json

    import jaxir
    from jaxir.train.loop import TrainConfig
    from jaxir.train.vae import train_vae

    model, data, _, _ = _tiny()
    config = TrainConfig(steps=4, learning_rate=1e-3, warmup_steps=1, log_every=1, eval_every=2, checkpoint_every=4)
    out = train_vae(tmp_path / "vae", model_config=model.config, train_config=config,
                    data=dataclasses.replace(data, disc_start=2, validation_images=2, validation_size=16),
                    progress=False)
    loaded, params = jaxir.load(out)
    assert type(loaded).__name__ == "AutoencoderKL" and set(params) >= {"encoder", "decoder"}
    assert "discriminator" not in params
    notes = json.loads((out / "provenance.json").read_text())
    assert notes["data"]["disc_weight"] == 0.5 and notes["validation_psnr_y"] is not None
