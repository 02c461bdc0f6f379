"""jaxir.models.unet against diffusers' UNet2DConditionModel (random weights, our diffusers key map) and against the
DiffBIR fixture's LDM checkpoint loaded by diffusers' own LDM converter (an independent check of our LDM key map)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.keymap import strip_prefix
from checkpoints_conversion.sources import read_state_dict
from checkpoints_conversion.unet_keys import LDM_UNET_PREFIX, convert_unet
from jaxir.errors import JaxirInputError
from jaxir.layers import timestep_embedding
from jaxir.models.unet import UNetConfig, UNetModel, param_shapes

pytestmark = pytest.mark.slow   # compiles whole models or runs training / pipelines

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

DIFFBIR = "../shared/fixtures/diffbir/"
TOL = 1e-4  # max |ours − reference| / max |reference|



def randomize(module: "torch.nn.Module", seed: int):
    """Random weights everywhere, zero-initialised layers and norms included, so every parameter matters: matrices
    and kernels N(0, 1/fan_in), 1-D weights (norm scales) 1 + 0.1·N, biases 0.1·N."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim > 1:
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return module.eval()


def state_numpy(module: "torch.nn.Module") -> dict:
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def nchw(x: np.ndarray) -> "torch.Tensor":
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(x: "torch.Tensor") -> np.ndarray:
    return x.detach().numpy().transpose(0, 2, 3, 1)


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def unet_fn(config: UNetConfig):
    """A jitted ``UNetModel.apply`` (one compilation per config and input shapes)."""
    model = UNetModel(config)
    return jax.jit(lambda params, x, t, ctx, y=None, control=None: model.apply({"params": params}, x, t, ctx, y,
                                                                              control))


def inputs(config: UNetConfig, batch=2, side=8, tokens=7, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, side, side, config.in_channels), dtype=np.float32)
    ctx = rng.standard_normal((batch, tokens, config.context_dim), dtype=np.float32)
    return x, np.array([999, 321][:batch], np.int64), ctx


# SD 2.1-like: linear projections, 8-channel heads, attention at every level; SD 1.5-like: 1×1-conv projections and
# a fixed number of heads (diffusers' ``attention_head_dim`` is the number of heads).
SD_LIKE = {
    "sd21": (UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=2, attention_resolutions=(1, 2),
                        num_head_channels=8, context_dim=32),
             dict(block_out_channels=(32, 64), layers_per_block=2, attention_head_dim=(4, 8),
                  cross_attention_dim=32, use_linear_projection=True,
                  down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2)),
    "sd15": (UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,),
                        num_heads=2, num_head_channels=-1, context_dim=24, use_linear_in_transformer=False),
             dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=2, cross_attention_dim=24,
                  use_linear_projection=False, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))),
}


def diffusers_unet(kwargs: dict, seed: int):
    return randomize(diffusers.UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, **kwargs), seed)


@pytest.mark.parametrize("name", sorted(SD_LIKE))
def test_matches_diffusers_sd(name):
    config, kwargs = SD_LIKE[name]
    ref_model = diffusers_unet(kwargs, seed=1)
    params = convert_unet(state_numpy(ref_model), config, layout="diffusers")
    x, t, ctx = inputs(config)
    with torch.no_grad():
        ref = nhwc(ref_model(nchw(x), torch.from_numpy(t), torch.from_numpy(ctx)).sample)
    err = rel_err(unet_fn(config)(params, x, t, ctx), ref)
    print(f"{name}-like UNet vs diffusers: {err:.2e}")
    assert err < TOL


def test_matches_diffusers_sdxl():
    """SDXL-like: no attention at level 0 (its depth entry unused), per-level depths (middle = last), per-level
    res blocks, and the ``text_time`` vector embedding: ``y`` = [pooled text, Fourier features of the 6 size and
    crop numbers] as sgm's conditioner builds it, diffusers' ``add_embedding`` = our ``label_emb``."""
    text_dim, time_dim = 16, 8
    config = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 2), attention_resolutions=(2,),
                        transformer_depth=(0, 2), num_head_channels=16, context_dim=48,
                        adm_in_channels=text_dim + 6 * time_dim)
    ref_model = diffusers_unet(dict(
        block_out_channels=(32, 64), layers_per_block=(1, 2), transformer_layers_per_block=(0, 2),
        attention_head_dim=(2, 4), cross_attention_dim=48, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=config.adm_in_channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")),
        seed=2)
    params = convert_unet(state_numpy(ref_model), config, layout="diffusers")
    x, t, ctx = inputs(config)
    rng = np.random.default_rng(3)
    text = rng.standard_normal((2, text_dim), dtype=np.float32)
    time_ids = np.array([[512, 768, 0, 16, 512, 768], [1024, 1024, 32, 0, 1024, 1024]], np.float32)
    with torch.no_grad():
        ref = nhwc(ref_model(nchw(x), torch.from_numpy(t), torch.from_numpy(ctx), added_cond_kwargs=dict(
            text_embeds=torch.from_numpy(text), time_ids=torch.from_numpy(time_ids))).sample)
    y = jnp.concatenate([text, timestep_embedding(time_ids.reshape(-1), time_dim).reshape(2, -1)], axis=-1)
    err = rel_err(unet_fn(config)(params, x, t, ctx, y), ref)
    print(f"SDXL-like UNet vs diffusers: {err:.2e}")
    assert err < TOL


def diffbir_config() -> dict:
    with open(DIFFBIR + "cldm_tiny.yaml") as f:
        return yaml.safe_load(f)["params"]


@pytest.mark.filterwarnings("ignore:`image_size` is deprecated")
def test_diffbir_ldm_checkpoint_matches_diffusers_converter():
    """The fixture's ``model.diffusion_model.*`` through our LDM rules, and through diffusers' own
    ``convert_ldm_unet_checkpoint`` into a ``UNet2DConditionModel`` configured by
    ``create_unet_diffusers_config_from_ldm`` (strict load): the same outputs."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, create_unet_diffusers_config_from_ldm

    cfg = diffbir_config()
    config = UNetConfig.from_ldm(cfg["unet_cfg"])
    state = read_state_dict(DIFFBIR + "sd_tiny.ckpt")
    params = convert_unet(state, config)  # the whole SD checkpoint: only model.diffusion_model.* is read

    original = {"model": {"params": {"unet_config": {"params": cfg["unet_cfg"]},
                                     "first_stage_config": {"params": {"ddconfig": cfg["vae_cfg"]["ddconfig"]}}}}}
    dconfig = create_unet_diffusers_config_from_ldm(original, None, image_size=64)
    ref_model = diffusers.UNet2DConditionModel(**dconfig).eval()
    converted = convert_ldm_unet_checkpoint({k: torch.from_numpy(v) for k, v in state.items()}, dconfig)
    ref_model.load_state_dict(converted, strict=True)

    fixtures = np.load(DIFFBIR + "fixtures.npz")
    x, t = fixtures["x_noisy"], fixtures["t"]
    ctx = np.ascontiguousarray(np.broadcast_to(fixtures["c_txt"][1:], (len(x),) + fixtures["c_txt"].shape[1:]))
    with torch.no_grad():
        ref = nhwc(ref_model(nchw(x), torch.from_numpy(t), torch.from_numpy(ctx)).sample)
    err = rel_err(unet_fn(config)(params, x, t, ctx), ref)
    print(f"DiffBIR tiny UNet (LDM keys) vs diffusers converter: {err:.2e}")
    assert err < TOL


@pytest.mark.parametrize("preset, count", [("sd15", 859_520_964), ("sd21_base", 865_910_724),
                                           ("sdxl_base", 2_567_463_684)])
def test_presets_have_the_released_parameter_counts(preset, count):
    shapes = param_shapes(getattr(UNetConfig, preset)())
    assert sum(math.prod(s.shape) for s in jax.tree.leaves(shapes)) == count


def test_from_ldm_reads_the_released_configs():
    sd21 = dict(use_checkpoint=True, use_fp16=True, image_size=32, in_channels=4, out_channels=4, model_channels=320,
                attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_head_channels=64,
                use_spatial_transformer=True, use_linear_in_transformer=True, transformer_depth=1,
                context_dim=1024, legacy=False)  # stablediffusion configs/stable-diffusion/v2-inference.yaml
    assert UNetConfig.from_ldm(sd21) == UNetConfig.sd21_base()
    sdxl = dict(adm_in_channels=2816, num_classes="sequential", use_checkpoint=True, in_channels=4, out_channels=4,
                model_channels=320, attention_resolutions=[4, 2], num_res_blocks=2, channel_mult=[1, 2, 4],
                num_head_channels=64, use_linear_in_transformer=True, transformer_depth=[1, 2, 10],
                context_dim=2048, spatial_transformer_attn_type="softmax-xformers")  # sd_xl_base.yaml
    assert UNetConfig.from_ldm(sdxl) == UNetConfig.sdxl_base()
    with pytest.raises(JaxirInputError, match="use_scale_shift_norm"):
        UNetConfig.from_ldm({**sd21, "use_scale_shift_norm": True})
    with pytest.raises(JaxirInputError, match="unknown"):
        UNetConfig.from_ldm({**sd21, "heads": 3})


def test_conversion_is_strict():
    config = UNetConfig.from_ldm(diffbir_config()["unet_cfg"])
    state = strip_prefix(read_state_dict(DIFFBIR + "sd_tiny.ckpt"), LDM_UNET_PREFIX)
    bad = {k: v for k, v in state.items() if k != "output_blocks.3.1.proj_out.bias"}
    bad["extra.weight"] = np.zeros(1)
    bad["input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"] = np.zeros((32, 32))
    with pytest.raises(ConversionError) as err:
        convert_unet(bad, config)
    message = str(err.value)
    assert "shape mismatch: input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight" in message
    assert "unused source tensors: extra.weight" in message
    not_filled = message.split("not filled:")[1]
    assert "input_blocks_4_1/transformer_blocks_0/attn2/to_k/kernel" in not_filled
    assert "output_blocks_3_1/proj_out/bias" in not_filled
