"""jaxir.models.controlnet: DiffBIR's IRControlNet + UNet against the DiffBIR fixture, the hint-block ControlNet
against diffusers' ControlNetModel (our diffusers key map, and our LDM key map vs diffusers' LDM converter)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from test_unet import DIFFBIR, SD_LIKE, TOL, diffusers_unet, inputs, nchw, nhwc, randomize, rel_err, state_numpy

from checkpoints_conversion.sources import read_state_dict
from checkpoints_conversion.unet_keys import convert_controlnet, convert_unet
from jaxir.errors import JaxirInputError
from jaxir.models.controlnet import ControlNet, ControlNetConfig, param_shapes
from jaxir.models.unet import UNetConfig, UNetModel
from jaxir.models.unet import param_shapes as unet_param_shapes

pytestmark = pytest.mark.slow   # compiles whole models or runs training / pipelines

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")



def controlled_unet_fn(unet_config: UNetConfig, control_config: ControlNetConfig):
    """ControlLDM's denoiser step, jitted: the control features (scaled) and the UNet output with them."""
    unet, control = UNetModel(unet_config), ControlNet(control_config)

    @jax.jit
    def run(unet_params, control_params, x, hint, t, ctx, scales):
        features = control.apply({"params": control_params}, x, hint, t, ctx, control_scales=scales)
        return features, unet.apply({"params": unet_params}, x, t, ctx, control=features)

    return run


def test_diffbir_fixture():
    """``ControlLDM.forward`` of the fixture: ``c_txt[1]`` and ``c_img`` repeated to the batch of ``x_noisy``
    (DiffBIR's pipeline builds the condition per batch element), all control scales 1 → ``eps``, 0.5 →
    ``eps_scale05``. The tiny UNet has 9 input blocks, so 10 control features (``zip`` with 13 scales in DiffBIR)."""
    with open(DIFFBIR + "cldm_tiny.yaml") as f:
        cfg = yaml.safe_load(f)["params"]
    unet_config = UNetConfig.from_ldm(cfg["unet_cfg"])
    control_config = ControlNetConfig.from_ldm(cfg["controlnet_cfg"], hint_mode="concat")
    unet_params = convert_unet(read_state_dict(DIFFBIR + "sd_tiny.ckpt"), unet_config)
    control_params = convert_controlnet(read_state_dict(DIFFBIR + "controlnet_tiny.pth"), control_config)
    fixtures = np.load(DIFFBIR + "fixtures.npz")
    x, t = fixtures["x_noisy"], fixtures["t"]
    ctx = np.broadcast_to(fixtures["c_txt"][1:], (len(x),) + fixtures["c_txt"].shape[1:])
    hint = np.broadcast_to(fixtures["c_img"], x.shape)
    run = controlled_unet_fn(unet_config, control_config)
    assert control_config.num_outputs == 10
    for scale, key in ((1.0, "eps"), (0.5, "eps_scale05")):
        _, eps = run(unet_params, control_params, x, hint, t, ctx, jnp.full((10,), scale))
        err = rel_err(eps, fixtures[key])
        print(f"DiffBIR tiny ControlLDM {key}: {err:.2e}")
        assert err < TOL
    assert rel_err(fixtures["eps_scale05"], fixtures["eps"]) > 100 * TOL  # the scale matters


def test_matches_diffusers_controlnet():
    """diffusers ControlNetModel (non-default hint widths) with random weights, zero convs included: the residuals
    (diffusers' down residuals then the mid one, each times its own scale) and the UNet output given them
    (``down_block_additional_residuals``/``mid_block_additional_residual``)."""
    unet_config, unet_kwargs = SD_LIKE["sd21"]
    config = ControlNetConfig(unet_config, hint_channels=3, hint_mode="hint_block", hint_block_channels=(8, 16, 16, 32))
    ref_unet = diffusers_unet(unet_kwargs, seed=1)
    ref_control = randomize(diffusers.ControlNetModel(
        in_channels=4, conditioning_channels=3, conditioning_embedding_out_channels=config.hint_block_channels,
        **{k: v for k, v in unet_kwargs.items() if k != "up_block_types"}), seed=4)
    unet_params = convert_unet(state_numpy(ref_unet), unet_config, layout="diffusers")
    control_params = convert_controlnet(state_numpy(ref_control), config, layout="diffusers")

    x, t, ctx = inputs(unet_config)
    hint = np.random.default_rng(5).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    scales = np.linspace(0.4, 1.3, config.num_outputs).astype(np.float32)
    with torch.no_grad():
        down, mid = ref_control(nchw(x), torch.from_numpy(t), torch.from_numpy(ctx), nchw(hint), return_dict=False)
        ref_features = [r * float(s) for r, s in zip((*down, mid), scales, strict=True)]
        ref_out = ref_unet(nchw(x), torch.from_numpy(t), torch.from_numpy(ctx),
                           down_block_additional_residuals=ref_features[:-1],
                           mid_block_additional_residual=ref_features[-1]).sample
    features, out = controlled_unet_fn(unet_config, config)(unet_params, control_params, x, hint, t, ctx, scales)
    feature_err = max(rel_err(f, nhwc(r)) for f, r in zip(features, ref_features, strict=True))
    out_err = rel_err(out, nhwc(ref_out))
    print(f"ControlNet vs diffusers: features {feature_err:.2e}, controlled UNet {out_err:.2e}")
    assert feature_err < TOL and out_err < TOL


@pytest.mark.filterwarnings("ignore:`image_size` is deprecated")
def test_ldm_hint_controlnet_matches_diffusers_converter():
    """An lllyasviel-layout ControlNet (``control_model.*`` inside a whole checkpoint): the fixture's ControlNet
    encoder with 4 input channels and a random ``input_hint_block``, through our LDM rules and through diffusers'
    ``convert_controlnet_checkpoint`` into a ``ControlNetModel`` (strict load)."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint, create_unet_diffusers_config_from_ldm

    with open(DIFFBIR + "cldm_tiny.yaml") as f:
        cfg = yaml.safe_load(f)["params"]
    params = {**cfg["controlnet_cfg"], "hint_channels": 3}
    config = ControlNetConfig.from_ldm(params, hint_mode="hint_block")
    state = read_state_dict(DIFFBIR + "controlnet_tiny.pth")
    state["input_blocks.0.0.weight"] = state["input_blocks.0.0.weight"][:, :4]
    rng = np.random.default_rng(6)
    widths = (3, 16, 16, 32, 32, 96, 96, 256, config.unet.model_channels)
    for n, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        state[f"input_hint_block.{2 * n}.weight"] = rng.standard_normal((c_out, c_in, 3, 3), np.float32) / (
            3 * math.sqrt(c_in))
        state[f"input_hint_block.{2 * n}.bias"] = 0.1 * rng.standard_normal(c_out, np.float32)
    checkpoint = {f"control_model.{k}": v for k, v in state.items()}
    checkpoint["model.diffusion_model.time_embed.0.weight"] = np.zeros((1, 1), np.float32)  # not read
    ours = convert_controlnet(checkpoint, config)

    unet_params = {**params, "out_channels": params["in_channels"]}
    unet_params.pop("hint_channels")
    original = {"model": {"params": {"unet_config": {"params": unet_params},
                                     "first_stage_config": {"params": {"ddconfig": cfg["vae_cfg"]["ddconfig"]}}}}}
    dconfig = create_unet_diffusers_config_from_ldm(original, None, image_size=64)
    drop = ("sample_size", "out_channels", "up_block_types")
    ref_model = diffusers.ControlNetModel(conditioning_channels=3,
                                          **{k: v for k, v in dconfig.items() if k not in drop}).eval()
    converted = convert_controlnet_checkpoint({k: torch.from_numpy(v) for k, v in checkpoint.items()}, dconfig)
    ref_model.load_state_dict(converted, strict=True)

    x, t, ctx = inputs(config.unet)
    hint = np.random.default_rng(7).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        down, mid = ref_model(nchw(x), torch.from_numpy(t), torch.from_numpy(ctx), nchw(hint), return_dict=False)
    features = jax.jit(ControlNet(config).apply)({"params": ours}, x, hint, t, ctx)
    err = max(rel_err(f, nhwc(r)) for f, r in zip(features, (*down, mid), strict=True))
    print(f"lllyasviel-layout ControlNet (LDM keys) vs diffusers converter: {err:.2e}")
    assert err < TOL


def test_sd15_preset_has_the_diffusers_parameter_count():
    """``ControlNetModel(cross_attention_dim=768)`` (SD 1.5) has 361,279,120 parameters."""
    shapes = param_shapes(ControlNetConfig.sd15_hint())
    assert sum(math.prod(s.shape) for s in jax.tree.leaves(shapes)) == 361_279_120


def test_rejects_bad_inputs():
    """Checked while tracing (``jax.eval_shape``: nothing runs)."""
    config = ControlNetConfig(UNetConfig(model_channels=32, channel_mult=(1,), num_res_blocks=1,
                                         attention_resolutions=(), num_head_channels=8, context_dim=8))
    control, unet = ControlNet(config), UNetModel(config.unet)
    control_params, unet_params = {"params": param_shapes(config)}, {"params": unet_param_shapes(config.unet)}
    x, ctx, t = jnp.zeros((1, 8, 8, 4)), jnp.zeros((1, 3, 8)), jnp.zeros((1,))
    with pytest.raises(JaxirInputError, match="control_scales"):
        jax.eval_shape(lambda p: control.apply(p, x, x, t, ctx, control_scales=jnp.ones(13)), control_params)
    with pytest.raises(JaxirInputError, match="hint"):
        jax.eval_shape(lambda p: control.apply(p, x, jnp.zeros((1, 64, 64, 4)), t, ctx), control_params)
    features = jax.eval_shape(lambda p: control.apply(p, x, x, t, ctx), control_params)
    assert len(features) == config.num_outputs == 3
    with pytest.raises(JaxirInputError, match="control must hold 3"):
        jax.eval_shape(lambda p: unet.apply(p, x, t, ctx, control=features[:2]), unet_params)
