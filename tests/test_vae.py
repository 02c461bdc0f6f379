"""AutoencoderKL (jaxir.models.vae) and its key maps (checkpoints_conversion.vae_keys), float32.

References: diffusers' ``AutoencoderKL`` with random weights (diffusers layout), the DiffBIR fixture made by the
original LDM code (LDM layout), and diffusers' own LDM→diffusers converter as an independent check of the LDM map.
Errors are max |ours − reference| / max |reference|.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
yaml = pytest.importorskip("yaml")

from helpers import DIFFBIR_FIXTURES, needs_fixtures  # noqa: E402
from checkpoints_conversion.errors import ConversionError  # noqa: E402
from checkpoints_conversion.keymap import strip_prefix  # noqa: E402
from checkpoints_conversion.sources import read_state_dict  # noqa: E402
from checkpoints_conversion.vae_keys import convert_vae  # noqa: E402
from jaxir.models.vae import param_shapes as vae_shapes  # noqa: E402
from jaxir.errors import JaxirInputError  # noqa: E402
from jaxir.models.vae import AutoencoderKL, VAEConfig  # noqa: E402

FIXTURES = DIFFBIR_FIXTURES
TOL = 1e-4


def rel_err(ours, ref) -> float:
    ref = np.asarray(ref)
    return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@functools.cache
def _jitted(config: VAEConfig, method, static: tuple):
    return jax.jit(functools.partial(AutoencoderKL(config).apply, method=method, **dict(static)))


def run(config: VAEConfig, params, method, *args, **static):
    """``AutoencoderKL(config).method(*args, **static)``, jitted once per (config, method, static arguments)."""
    with jax.default_matmul_precision("highest"):
        return _jitted(config, method, tuple(sorted(static.items())))({"params": params}, *args)


@functools.cache
def diffbir_vae():
    """The DiffBIR fixture: (config, VAE tensors without ``first_stage_model.``, the whole checkpoint, the YAML
    ``params``, the fixture arrays)."""
    params = yaml.safe_load((FIXTURES / "cldm_tiny.yaml").read_text())["params"]
    config = VAEConfig.from_ldm(params["vae_cfg"]["ddconfig"], params["vae_cfg"]["embed_dim"],
                                params["latent_scale_factor"])
    checkpoint = read_state_dict(FIXTURES / "sd_tiny.ckpt")
    arrays = dict(np.load(FIXTURES / "fixtures.npz"))
    return config, strip_prefix(checkpoint, "first_stage_model."), checkpoint, params, arrays


def test_presets_and_config():
    assert VAEConfig.sd().block_channels == (128, 256, 512, 512) and VAEConfig.sd().downsample_factor == 8
    assert VAEConfig.sdxl().scale_factor == 0.13025 and VAEConfig.sdxl().block_channels == VAEConfig.sd().block_channels
    assert hash(VAEConfig.sd()) == hash(VAEConfig())
    ddconfig = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
                    num_res_blocks=2, attn_resolutions=[], dropout=0.0, attn_type="vanilla-xformers")
    assert VAEConfig.from_ldm(ddconfig, 4, 0.13025) == VAEConfig.sdxl()
    with pytest.raises(JaxirInputError, match="tanh_out"):
        VAEConfig.from_ldm({**ddconfig, "tanh_out": True}, 4, 0.18215)
    with pytest.raises(JaxirInputError, match="double_z"):
        VAEConfig.from_ldm({**ddconfig, "double_z": False}, 4, 0.18215)


def test_matches_diffusers_random_weights():
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                                  norm_num_groups=32).eval()
    with torch.no_grad():
        for p in ref.parameters():
            if p.ndim == 1:   # GroupNorm affine (1 and 0 at init) and biases
                p.add_(0.2 * torch.randn_like(p))
        ref.quant_conv.bias[4:6] += torch.tensor([40.0, -40.0])   # drive two logvar channels into the clamp
    config = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, embed_dim=4,
                       scale_factor=ref.config.scaling_factor)
    params = convert_vae({k: v.numpy() for k, v in ref.state_dict().items()}, config, layout="diffusers")

    x01 = np.random.default_rng(0).random((2, 32, 48, 3), dtype=np.float32)
    z = np.random.default_rng(1).standard_normal((2, 16, 24, 4)).astype(np.float32)
    with torch.no_grad():
        posterior = ref.encode(nchw(2 * x01 - 1)).latent_dist
        ref_mean, ref_logvar = nhwc(posterior.mean), nhwc(posterior.logvar)
        ref_dec = nhwc(ref.decode(nchw(z / config.scale_factor)).sample)
    everything = lambda vae, x01, z: (*vae.encode(2 * x01 - 1), vae.encode_latent(x01), vae.decode(z))  # noqa: E731
    mean, logvar, latent, dec = run(config, params, everything, x01, z)   # one compilation

    assert mean.shape == ref_mean.shape and dec.shape == ref_dec.shape == (2, 32, 48, 3)
    np.testing.assert_array_equal(np.asarray(logvar[..., :2]), ref_logvar[..., :2])
    assert np.all(ref_logvar[..., 0] == 20.0) and np.all(ref_logvar[..., 1] == -30.0)
    errors = {"mean": rel_err(mean, ref_mean), "logvar": rel_err(logvar[..., 2:], ref_logvar[..., 2:]),
              "latent": rel_err(latent, config.scale_factor * ref_mean), "decode": rel_err(dec, ref_dec)}
    assert max(errors.values()) <= TOL, errors


def test_encode_latent_sample():
    config = VAEConfig(ch=32, ch_mult=(1, 1), num_res_blocks=1)
    x = np.random.default_rng(0).random((1, 8, 8, 3), dtype=np.float32)
    rng = np.random.default_rng(1)   # random parameters without init (whose compilation takes seconds)
    params = jax.tree.map(lambda s: 0.2 * rng.standard_normal(s.shape).astype(np.float32), vae_shapes(config))
    key = jax.random.key(3)
    mean, logvar = run(config, params, AutoencoderKL.encode, 2 * x - 1)
    sample = run(config, params, AutoencoderKL.encode_latent, x, key, sample=True)
    expected = config.scale_factor * (mean + np.exp(0.5 * logvar) * jax.random.normal(key, mean.shape))
    np.testing.assert_allclose(sample, expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="PRNG key"):
        run(config, params, AutoencoderKL.encode_latent, x, sample=True)


@needs_fixtures("diffbir")
def test_diffbir_fixture_ldm_layout():
    config, ldm, _, _, arrays = diffbir_vae()
    params = convert_vae(ldm, config, layout="ldm")
    c_img = run(config, params, AutoencoderKL.encode_latent, arrays["cond_img"])
    dec = run(config, params, AutoencoderKL.decode, arrays["decode_in"])
    errors = {"c_img": rel_err(c_img, arrays["c_img"]), "decode": rel_err(dec, arrays["decode_out"])}
    assert max(errors.values()) <= TOL, errors


@functools.cache
def diffusers_converted():
    """The fixture VAE converted by diffusers' own single-file code: (diffusers config, state dict)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint, create_vae_diffusers_config_from_ldm

    config, _, checkpoint, yaml_params, _ = diffbir_vae()
    original_config = {"model": {"params": {"first_stage_config": {"params": yaml_params["vae_cfg"]}}}}
    ref_config = create_vae_diffusers_config_from_ldm(original_config, checkpoint, scaling_factor=config.scale_factor)
    return ref_config, convert_ldm_vae_checkpoint(checkpoint, ref_config)


@needs_fixtures("diffbir")
def test_ldm_map_agrees_with_diffusers_converter():
    """diffusers' own LDM→diffusers conversion, loaded into its AutoencoderKL, gives our outputs; and our
    diffusers map applied to its result gives exactly the parameters of our LDM map."""
    config, ldm, _, _, arrays = diffbir_vae()
    ref_config, converted = diffusers_converted()
    ref = diffusers.AutoencoderKL(**ref_config).eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in converted.items()}, strict=True)

    params = convert_vae(ldm, config, layout="ldm")
    via_diffusers = convert_vae(converted, config, layout="diffusers")
    jax.tree.map(np.testing.assert_array_equal, params, via_diffusers)

    with torch.no_grad():
        ref_c_img = config.scale_factor * nhwc(ref.encode(nchw(2 * arrays["cond_img"] - 1)).latent_dist.mode())
        ref_dec = nhwc(ref.decode(nchw(arrays["decode_in"] / config.scale_factor)).sample)
    c_img = run(config, params, AutoencoderKL.encode_latent, arrays["cond_img"])
    dec = run(config, params, AutoencoderKL.decode, arrays["decode_in"])
    errors = {"c_img": rel_err(c_img, ref_c_img), "decode": rel_err(dec, ref_dec),
              "diffusers_vs_fixture": max(rel_err(ref_c_img, arrays["c_img"]), rel_err(ref_dec, arrays["decode_out"]))}
    assert max(errors.values()) <= TOL, errors


@needs_fixtures("diffbir")
def test_diffusers_legacy_attention_names():
    config, ldm, _, _, _ = diffbir_vae()
    _, converted = diffusers_converted()
    legacy_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    legacy = {}
    for key, value in converted.items():
        for new, old in legacy_names.items():
            key = key.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        legacy[key] = value
    assert any(".query." in k for k in legacy)
    jax.tree.map(np.testing.assert_array_equal, convert_vae(ldm, config),
                 convert_vae(legacy, config, layout="diffusers"))


@needs_fixtures("diffbir")
@pytest.mark.parametrize("case", ["unknown_extra", "extra_without_parameter", "missing", "wrong_shape"])
def test_conversion_is_strict(case):
    config, ldm, _, _, _ = diffbir_vae()
    state = dict(ldm)
    if case == "unknown_extra":
        state["encoder.down.0.block.0.extra.weight"] = np.zeros((3,), np.float32)
        expected = ["unused source tensors", "encoder.down.0.block.0.extra.weight"]
    elif case == "extra_without_parameter":   # a 1×1 skip where the channel count does not change
        state["encoder.down.0.block.0.nin_shortcut.weight"] = np.zeros((32, 32, 1, 1), np.float32)
        expected = ["encoder.down.0.block.0.nin_shortcut.weight", "encoder/down_0/block_0/nin_shortcut/kernel",
                    "no such parameter"]
    elif case == "missing":
        del state["decoder.up.3.block.1.norm2.weight"]
        expected = ["parameters not filled", "decoder/up_3/block_1/norm2/scale"]
    else:
        state["encoder.conv_in.weight"] = np.zeros((32, 4, 3, 3), np.float32)
        expected = ["shape mismatch", "encoder.conv_in.weight (32, 4, 3, 3)", "encoder/conv_in/kernel (3, 3, 3, 32)"]
    with pytest.raises(ConversionError) as err:
        convert_vae(state, config, layout="ldm")
    for text in expected:
        assert text in str(err.value)


@needs_fixtures("diffbir")
def test_training_extras_ignored_and_layout_checked():
    config, ldm, _, _, _ = diffbir_vae()
    extras = {"loss.logvar": np.zeros((), np.float32), "loss.discriminator.main.0.weight": np.zeros((64, 3, 4, 4)),
              "loss.perceptual_loss.net.slice1.0.weight": np.zeros((64, 3, 3, 3)), "model_ema.decay": np.ones(())}
    jax.tree.map(np.testing.assert_array_equal, convert_vae(ldm, config), convert_vae({**ldm, **extras}, config))
    with pytest.raises(ConversionError, match="unknown VAE layout"):
        convert_vae(ldm, config, layout="sgm")
