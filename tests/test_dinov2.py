"""DINOv2 ViT against timm's VisionTransformer and the original ``interpolate_pos_encoding`` (random weights)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checkpoints_conversion.__main__ import main as convert_main
from checkpoints_conversion.dinov2_keys import convert_dinov2
from checkpoints_conversion.errors import ConversionError
from jaxir import checkpoints
from jaxir.errors import JaxirInputError
from jaxir.models.dinov2 import DINOv2, DINOv2Config, preset, resample_pos_embed

timm = pytest.importorskip("timm")
from timm.layers import GluMlp, SwiGLUPacked, resample_abs_pos_embed  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

pytestmark = pytest.mark.slow   # compiles whole models or runs training / pipelines

TOLERANCE = 1e-4   # max |ours − reference| / max |reference|
TINY = dict(embed_dim=48, depth=2, num_heads=3)
# name: (timm VisionTransformer options beyond TINY, our config)
TINY_MODELS = {
    "plain": (dict(init_values=1.0), DINOv2Config(**TINY, img_size=56)),
    "reg4": (dict(init_values=1.0, reg_tokens=4, no_embed_class=True),
             DINOv2Config(**TINY, img_size=56, num_register_tokens=4, interpolate_offset=0.0,
                          interpolate_antialias=True)),
    "no_layerscale": (dict(init_values=None), DINOv2Config(**TINY, img_size=56, layerscale=False)),
    "swiglu": (dict(init_values=1.0, mlp_ratio=2.66667 * 2, mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU),
               DINOv2Config(**TINY, img_size=56, ffn="swiglu")),
}
SIZES = {"native": (56, 56), "other": (14 * 9, 14 * 6)}


def _relative_error(ours, reference) -> float:
    reference = np.asarray(reference)
    return float(np.abs(np.asarray(ours) - reference).max() / np.abs(reference).max())


def _randomise(model: torch.nn.Module, seed: int, scale: float = 0.2) -> torch.nn.Module:
    """Every tensor random (LayerNorm scales and LayerScale gammas around 1), so no part is a no-op; ``scale``, the
    standard deviation of the others, near 1/√width keeps a deep random network from amplifying round-off."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            around_one = name.endswith("gamma") or (p.ndim == 1 and "norm" in name and name.endswith("weight"))
            p.copy_(1 + 0.2 * noise if around_one else scale * noise)
    return model.eval()


def timm_model(name: str, seed: int = 0, img_size: int = 56) -> VisionTransformer:
    options, _ = TINY_MODELS[name]
    model = VisionTransformer(img_size=img_size, patch_size=14, num_classes=0, dynamic_img_size=True, **TINY,
                              **options)
    return _randomise(model, seed)


def hub_state_dict(model: VisionTransformer, seed: int = 1) -> dict[str, np.ndarray]:
    """The same network in the torch-hub ``DinoVisionTransformer`` layout: ``register_tokens``, SwiGLU
    ``w12``/``w3``, a ``mask_token``, and for ``no_embed_class`` models a positional class row r (random) with
    ``cls_token − r`` as the class token (timm stores their sum)."""
    rng = np.random.default_rng(seed)
    swiglu = isinstance(model.blocks[0].mlp, GluMlp)
    state = {}
    for key, value in model.state_dict().items():
        value = value.numpy().copy()
        if swiglu:
            key = key.replace("mlp.fc1.", "mlp.w12.").replace("mlp.fc2.", "mlp.w3.")
        state[key.replace("reg_token", "register_tokens")] = value
    if model.no_embed_class:
        class_row = rng.normal(size=state["cls_token"].shape).astype(np.float32)
        state["cls_token"] = state["cls_token"] - class_row
        state["pos_embed"] = np.concatenate([class_row, state["pos_embed"]], axis=1)
    state["mask_token"] = rng.normal(size=(1, model.embed_dim)).astype(np.float32)
    return state


def original_pos_encoding(pos_embed: torch.Tensor, grid_h: int, grid_w: int, offset: float,
                          antialias: bool) -> torch.Tensor:
    """``DinoVisionTransformer.interpolate_pos_encoding`` (dinov2/models/vision_transformer.py), in torch."""
    n = pos_embed.shape[1] - 1
    m = int(math.sqrt(n))
    if (grid_h, grid_w) == (m, m):
        return pos_embed
    dim = pos_embed.shape[-1]
    kwargs = ({"scale_factor": (float(grid_h + offset) / m, float(grid_w + offset) / m)} if offset
              else {"size": (grid_h, grid_w)})
    patch = F.interpolate(pos_embed[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2), mode="bicubic",
                          antialias=antialias, **kwargs)
    assert tuple(patch.shape[-2:]) == (grid_h, grid_w)
    return torch.cat([pos_embed[:, :1], patch.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


@torch.no_grad()
def original_forward(model: VisionTransformer, state: dict, config: DINOv2Config, x: torch.Tensor):
    """``DinoVisionTransformer.forward_features`` with the hub ``state`` (timm's blocks and norms, the original's
    token assembly and positional interpolation): (cls, patches (B, N, D))."""
    b, _, h, w = x.shape
    p = config.patch_size
    tokens = model.patch_embed(x).reshape(b, -1, config.embed_dim)
    tokens = torch.cat([torch.from_numpy(state["cls_token"]).expand(b, -1, -1), tokens], dim=1)
    tokens = tokens + original_pos_encoding(torch.from_numpy(state["pos_embed"]), h // p, w // p,
                                            config.interpolate_offset, config.interpolate_antialias)
    if config.num_register_tokens:
        registers = torch.from_numpy(state["register_tokens"]).expand(b, -1, -1)
        tokens = torch.cat([tokens[:, :1], registers, tokens[:, 1:]], dim=1)
    tokens = model.norm(model.blocks(tokens))
    return tokens[:, 0].numpy(), tokens[:, 1 + config.num_register_tokens:].numpy()


def _images(size: tuple[int, int], seed: int = 0, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, *size, 3)).astype(np.float32)


def _ours(config: DINOv2Config, params, images: np.ndarray):
    cls, patches = DINOv2(config).apply({"params": params}, jnp.asarray(images))
    return np.asarray(cls), np.asarray(patches).reshape(images.shape[0], -1, config.embed_dim)


@pytest.mark.parametrize("grid_h, grid_w", [(16, 16), (9, 6), (40, 23)])
@pytest.mark.parametrize("offset, antialias", [(0.1, False), (0.0, True)])
def test_pos_embed_interpolation_matches_original(grid_h, grid_w, offset, antialias):
    """The 37×37 grid resampled like the original (plain: scale factor (n + 0.1)/37, no antialias; registers:
    size, antialias); where timm's ``resample_abs_pos_embed`` computes the same (registers) it agrees too."""
    config = DINOv2Config(embed_dim=8, num_heads=1, interpolate_offset=offset, interpolate_antialias=antialias)
    pos = torch.randn(1, 1 + 37 * 37, 8, generator=torch.Generator().manual_seed(0))
    reference = original_pos_encoding(pos, grid_h, grid_w, offset, antialias).numpy()
    ours = np.asarray(resample_pos_embed(jnp.asarray(pos.numpy()), grid_h, grid_w, config))
    assert _relative_error(ours, reference) < 1e-5   # ATen computes sampling positions in float32, we in float64
    timm_pos = resample_abs_pos_embed(pos, [grid_h, grid_w], num_prefix_tokens=1).numpy()
    if antialias and not offset:
        assert _relative_error(ours, timm_pos) < 1e-5
    else:   # documented difference: timm always resamples by size with antialiasing
        assert _relative_error(ours, timm_pos) > 1e-3


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_matches_reference(name, size):
    """CLS and patch tokens against the original formula (both layouts converted); against timm's own forward
    where timm equals the original (native grid, or register models at any size)."""
    model = timm_model(name)
    config = TINY_MODELS[name][1]
    images = _images(SIZES[size])
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    hub = hub_state_dict(model)
    ref_cls, ref_patches = original_forward(model, hub, config, x)
    scale = max(np.abs(ref_cls).max(), np.abs(ref_patches).max())
    for layout, state in (("hub", hub), ("timm", {k: v.numpy() for k, v in model.state_dict().items()})):
        cls, patches = _ours(config, convert_dinov2(state, config, layout), images)
        err = max(np.abs(cls - ref_cls).max(), np.abs(patches - ref_patches).max()) / scale
        assert err < TOLERANCE, (layout, err)
    if size == "native" or config.num_register_tokens:
        with torch.no_grad():
            timm_tokens = model.forward_features(x).numpy()
        assert _relative_error(ref_cls, timm_tokens[:, 0]) < TOLERANCE
        assert _relative_error(ref_patches, timm_tokens[:, model.num_prefix_tokens:]) < TOLERANCE


def test_cli_vits14_preset_round_trip(tmp_path):
    """The vits14 preset is timm's ``vit_small_patch14_dinov2`` at 518: hub .pth → CLI → jaxir.load → same
    tokens at 224 × 224 (the positional grid resampled 37 → 16 with the 0.1 offset)."""
    model = _randomise(timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=518,
                                         dynamic_img_size=True), seed=3, scale=0.05)
    hub = hub_state_dict(model)
    torch.save({k: torch.from_numpy(v) for k, v in hub.items()}, tmp_path / "dinov2_vits14_pretrain.pth")
    out = tmp_path / "dinov2_vits14"
    assert convert_main(["dinov2", str(tmp_path / "dinov2_vits14_pretrain.pth"), "--preset", "vits14",
                         "--out", str(out)]) == 0
    loaded, params = checkpoints.load(out)
    assert loaded.config == preset("vits14")
    images = _images((224, 224), batch=1)
    ref_cls, ref_patches = original_forward(model, hub, preset("vits14"), torch.from_numpy(images).permute(0, 3, 1, 2))
    cls, patches = _ours(loaded.config, params, images)
    assert _relative_error(cls, ref_cls) < TOLERANCE
    assert _relative_error(patches, ref_patches) < TOLERANCE


def test_foreign_checkpoint_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "vae.pth"
    torch.save({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}, path)
    assert convert_main(["dinov2", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a DINOv2 ViT state dict" in err
    assert convert_main(["dinov2", str(path), "--preset", "vitx14", "--out", str(tmp_path / "out")]) == 2
    assert "unknown DINOv2 preset 'vitx14'" in capsys.readouterr().err


def test_strict_accounting():
    """mask_token is ignored on purpose; an unknown tensor, a missing one or a wrong preset is named."""
    config = TINY_MODELS["reg4"][1]
    hub = hub_state_dict(timm_model("reg4"))
    convert_dinov2(hub, config, "hub")
    with pytest.raises(ConversionError, match=r"unused source tensors: extra\.weight \(3,\)"):
        convert_dinov2({**hub, "extra.weight": np.zeros(3, np.float32)}, config, "hub")
    with pytest.raises(ConversionError, match=r"parameters not filled: blocks_1/ls2/gamma \(48,\)"):
        convert_dinov2({k: v for k, v in hub.items() if k != "blocks.1.ls2.gamma"}, config, "hub")
    with pytest.raises(ConversionError, match=r"shape mismatch: .*embed_dim 48, depth 2, 4 registers"):
        convert_dinov2(hub, preset("vits14_reg4"), "hub")
    with pytest.raises(ConversionError, match="mask_token"):   # the timm layout has no mask token
        convert_dinov2(hub, config, "timm")


def test_input_checks():
    config = TINY_MODELS["plain"][1]
    params = jax.tree.map(jnp.zeros_like, DINOv2(config).init(jax.random.key(0), jnp.zeros((1, 56, 56, 3)))["params"])
    with pytest.raises(JaxirInputError, match="multiples of 14"):
        DINOv2(config).apply({"params": params}, jnp.zeros((1, 30, 28, 3)))
    with pytest.raises(JaxirInputError, match="unknown DINOv2 preset"):
        preset("vitb16")
