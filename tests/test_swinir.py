"""SwinIR against spandrel's SwinIR architecture with random weights (classical pixelshuffle ×2/×3/×4, real-SR
nearest+conv, the denoising head, 1conv/3conv, shifted-window masks at non-square sizes padded to the window,
DiffBIR's PixelUnshuffle(8) + ×8 variant), its checkpoint conversion (release and DiffBIR layouts, wrappers,
errors), and the SwinIR / DiffBIR stage-1 restorers."""

from __future__ import annotations

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxir
from checkpoints_conversion.__main__ import main as convert_main
from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.sources import read_state_dict
from checkpoints_conversion.swinir_keys import convert_swinir
from jaxir import checkpoints
from jaxir.degradations.pipeline import Degradation
from jaxir.degradations.resize import imresize
from jaxir.errors import JaxirInputError
from jaxir.models.swinir import (SwinIR, SwinIRConfig, pixel_shuffle, pixel_unshuffle, preset, relative_position_index,
                                 shifted_window_mask)
from jaxir.restorers import swinir as swinir_restorers

pytestmark = pytest.mark.slow   # compiles whole models or runs training / pipelines

TOLERANCE = 1e-5   # max |ours − spandrel| / max |spandrel|; measured 3.9e-7 … 1.2e-6
# one RSTB of two Swin layers (window attention, then shifted window attention); TWO_GROUPS: two RSTBs
TINY = dict(img_size=16, embed_dim=16, depths=(2,), num_heads=(2,), window_size=4, mlp_ratio=2.0)
TWO_GROUPS = {**TINY, "depths": (2, 2), "num_heads": (2, 4)}
CONFIGS = {
    # window 4 and shift 2 on 13×18, reflect-padded to 16×20: 4×5 windows, the shifted ones masked
    "classical_x2": (SwinIRConfig(**TWO_GROUPS, upscale=2, upsampler="pixelshuffle"), (13, 18)),
    "classical_x3_3conv": (SwinIRConfig(**TINY, upscale=3, upsampler="pixelshuffle", resi_connection="3conv"), (9, 14)),
    "classical_x4": (SwinIRConfig(**TINY, upscale=4, upsampler="pixelshuffle"), (10, 7)),
    "realsr_x4_3conv": (SwinIRConfig(**TINY, upscale=4, upsampler="nearest+conv", resi_connection="3conv"), (11, 13)),
    # shifted masks on a 16×12 grid, 1 output channel
    "denoise": (SwinIRConfig(**TINY, upscale=1, upsampler=""), (14, 9)),
    # gray (mean 0), img_range 255 (the JPEG models' setting); nominal grid 4 ≤ window 8: every layer attends over
    # 4×4 windows without shifting, the input still padded to a multiple of 8
    "denoise_gray_255_small_grid": (
        SwinIRConfig(**{**TINY, "in_chans": 1, "img_size": 4, "window_size": 8}, upscale=1, upsampler="",
                     img_range=255.0), (11, 6)),
}
# DiffBIR stage-1: PixelUnshuffle(8), window 2 (shift 1) on the 1/8 grid, nearest+conv ×8 → output at input size
DIFFBIR = SwinIRConfig(**{**TWO_GROUPS, "window_size": 2}, upscale=8, upsampler="nearest+conv", unshuffle_scale=8)


def spandrel_model(config: SwinIRConfig, seed: int = 0) -> torch.nn.Module:
    """spandrel's SwinIR (JingyunLiang/SwinIR's network; ``start_unshuffle`` is DiffBIR's PixelUnshuffle) with every
    tensor random: He-scaled weights, biases, LayerNorms around 1 and unit-variance relative-position tables, so
    that no part (bias lookup, mask, residual conv) is a no-op."""
    from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR

    model = TorchSwinIR(img_size=config.img_size, patch_size=config.patch_size, in_chans=config.in_chans,
                        embed_dim=config.embed_dim, depths=list(config.depths), num_heads=list(config.num_heads),
                        window_size=config.window_size, mlp_ratio=config.mlp_ratio, upscale=config.upscale,
                        img_range=config.img_range, upsampler=config.upsampler,
                        resi_connection=config.resi_connection, start_unshuffle=config.unshuffle_scale)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            z = torch.randn(p.shape, generator=gen)
            if "relative_position_bias_table" in name:
                p.copy_(z)
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * z)
            elif p.ndim == 1:
                p.copy_(0.1 * z)
            else:
                p.copy_(z / np.sqrt(p[0].numel()))
    return model.eval()


def torch_forward(model, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(image).permute(0, 3, 1, 2))
    return out.permute(0, 2, 3, 1).numpy()


def state_of(model) -> dict[str, np.ndarray]:
    """The state dict as saved, buffers (``relative_position_index``, ``attn_mask``) included."""
    return {k: v.numpy() for k, v in model.state_dict().items()}


def to_diffbir(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """DiffBIR's layout: ``conv_first = Sequential(PixelUnshuffle, Conv2d)``, saved from DataParallel."""
    return {"module." + k.replace("conv_first.", "conv_first.1."): v for k, v in state.items()}


def relative_error(ours, reference) -> float:
    return float(np.max(np.abs(np.asarray(ours) - reference)) / np.max(np.abs(reference)))


@functools.cache
def network(config: SwinIRConfig):
    """One jitted network per config (tests sharing a config and input shape share the compiled program)."""
    return jax.jit(lambda p, x: SwinIR(config).apply({"params": p}, x))


def run(config, params, image):
    return np.asarray(network(config)(params, jnp.asarray(image)))


def test_window_helpers_match_spandrel():
    """Relative-position index and the shifted-window mask (``calculate_mask``) at a non-square size."""
    from spandrel.architectures.SwinIR.__arch.SwinIR import SwinTransformerBlock

    block = SwinTransformerBlock(dim=8, input_resolution=(16, 16), num_heads=2, window_size=4, shift_size=2)
    np.testing.assert_array_equal(relative_position_index(4), block.attn.relative_position_index.numpy())
    for size in [(16, 20), (8, 12), (12, 4)]:
        want = block.calculate_mask(size).numpy()
        got = shifted_window_mask(*size, 4, 2)
        assert got.shape == want.shape == (size[0] * size[1] // 16, 16, 16)
        np.testing.assert_array_equal(got, want)
        assert (got == -100).any()


def test_pixel_shuffle_match_torch():
    x = np.random.default_rng(1).random((2, 6, 8, 18), np.float32)
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x), 3)),
                                  F.pixel_shuffle(nchw, 3).permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(np.asarray(pixel_unshuffle(jnp.asarray(x), 2)),
                                  F.pixel_unshuffle(nchw, 2).permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_spandrel(name):
    """Random weights, a batch of two, sizes that are not multiples of the window (reflect padding, cropping)."""
    config, size = CONFIGS[name]
    model = spandrel_model(config, seed=len(name))
    image = np.random.default_rng(len(name)).random((2, *size, config.in_chans), np.float32)
    reference = torch_forward(model, image)
    ours = run(config, convert_swinir(state_of(model), config), image)
    assert ours.shape == (2, size[0] * config.upscale, size[1] * config.upscale, config.in_chans) == reference.shape
    assert relative_error(ours, reference) < TOLERANCE


def test_diffbir_variant_matches_spandrel_unshuffle(tmp_path):
    """DiffBIR's stage-1 layout (``state_dict`` wrapper, ``module.`` prefix, ``conv_first.1``) read from a file, at
    a size that is not a multiple of window · 8: equal to spandrel's ``start_unshuffle`` network (DiffBIR's forward)
    on the input reflect-padded to that multiple and cropped (the original pads to the window only and then cannot
    unshuffle). At a multiple of 64, see test_diffbir_restorer_matches_reference_pipeline."""
    model = spandrel_model(DIFFBIR, seed=3)
    path = tmp_path / "general_swinir_v1.ckpt"
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in to_diffbir(state_of(model)).items()}}, path)
    params = convert_swinir(read_state_dict(path), DIFFBIR)
    image = np.random.default_rng(3).random((1, 37, 26, 3), np.float32)
    padded = np.pad(image, ((0, 0), (0, 48 - 37), (0, 32 - 26), (0, 0)), mode="reflect")
    reference = torch_forward(model, padded)[:, :37, :26]
    ours = run(DIFFBIR, params, image)
    assert ours.shape == image.shape
    assert relative_error(ours, reference) < TOLERANCE


def test_params_ema_preferred_and_load_roundtrip(tmp_path):
    """A release file holding ``params`` and ``params_ema``: the EMA weights are converted; the checkpoint
    directory reloads to the same network."""
    config, size = CONFIGS["realsr_x4_3conv"]
    ema, raw = spandrel_model(config, seed=5), spandrel_model(config, seed=6)
    path = tmp_path / "003_realSR_tiny.pth"
    torch.save({"params": raw.state_dict(), "params_ema": ema.state_dict()}, path)
    out = checkpoints.save(tmp_path / "ckpt", "swinir", config, convert_swinir(read_state_dict(path), config))
    model, params = jaxir.load(out)
    assert model.config == config
    image = np.random.default_rng(7).random((2, *size, 3), np.float32)
    ours = run(model.config, params, image)
    assert relative_error(ours, torch_forward(ema, image)) < TOLERANCE
    assert relative_error(ours, torch_forward(raw, image)) > 0.1


@pytest.fixture(scope="module")
def diffbir_v1_file(tmp_path_factory):
    """A full-size DiffBIR ``general_swinir_v1.ckpt`` layout with spandrel's random initialisation."""
    torch.manual_seed(0)
    config = preset("diffbir_v1")
    from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR

    model = TorchSwinIR(img_size=64, embed_dim=180, depths=list(config.depths), num_heads=list(config.num_heads),
                        window_size=8, mlp_ratio=2.0, upscale=8, upsampler="nearest+conv", start_unshuffle=8)
    state = to_diffbir(state_of(model))
    path = tmp_path_factory.mktemp("diffbir") / "general_swinir_v1.ckpt"
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in state.items()}}, path)
    return path, state


def test_cli_diffbir_v1_full_size(diffbir_v1_file, tmp_path, monkeypatch):
    """The command line on a full-size DiffBIR file, written where the ``diffbir_swinir`` restorer looks: it
    becomes available, and ``jaxir.load`` gives exactly the converted tensors."""
    path, state = diffbir_v1_file
    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path))
    restorer = jaxir.restorers.get("diffbir_swinir")
    assert "python -m checkpoints_conversion swinir general_swinir_v1.ckpt --preset diffbir_v1" in \
        restorer.unavailable_reason()
    assert convert_main(["swinir", str(path), "--preset", "diffbir_v1",
                         "--out", str(tmp_path / "diffbir_swinir_v1")]) == 0
    assert restorer.unavailable_reason() is None
    model, params = jaxir.load(tmp_path / "diffbir_swinir_v1")
    assert model.config == preset("diffbir_v1")
    assert params["conv_first"]["kernel"].shape == (3, 3, 192, 180)
    np.testing.assert_array_equal(params["conv_first"]["kernel"],
                                  state["module.conv_first.1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["layers_7"]["blocks_5"]["attn"]["relative_position_bias_table"],
                                  state["module.layers.7.residual_group.blocks.5.attn.relative_position_bias_table"])
    np.testing.assert_array_equal(params["layers_3"]["blocks_1"]["attn"]["qkv"]["kernel"],
                                  state["module.layers.3.residual_group.blocks.1.attn.qkv.weight"].T)
    np.testing.assert_array_equal(params["conv_up3"]["bias"], state["module.conv_up3.bias"])


def test_cli_wrong_preset_names_key_and_shapes(diffbir_v1_file, tmp_path, capsys):
    path, _ = diffbir_v1_file
    assert convert_main(["swinir", str(path), "--preset", "realsr_m_x4", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "conv_first.1.weight (180, 192, 3, 3) → conv_first/kernel (3, 3, 3, 180)" in err
    assert "unused source tensors" in err and "conv_up3.weight" in err
    assert not (tmp_path / "o").exists()


def test_foreign_checkpoint_is_refused(tmp_path, capsys):
    rrdb_like = {"conv_first.weight": torch.zeros(64, 3, 3, 3), "body.0.rdb1.conv1.weight": torch.zeros(32, 64, 3, 3)}
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": rrdb_like}, path)
    with pytest.raises(ConversionError, match="not a SwinIR checkpoint"):
        convert_swinir(read_state_dict(path), CONFIGS["classical_x4"][0])
    assert convert_main(["swinir", str(path), "--preset", "classical_x4", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a SwinIR checkpoint" in err and "body.0.rdb1.conv1.weight" in err


def test_strict_accounting():
    """Buffers are ignored on purpose; a real-SR file as classical, 1conv as 3conv, or a missing table is named."""
    config = SwinIRConfig(**TINY, upscale=2, upsampler="nearest+conv")
    state = state_of(spandrel_model(config))
    assert "layers.0.residual_group.blocks.1.attn_mask" in state
    with pytest.raises(ConversionError, match=r"conv_up1\.weight \(64, 64, 3, 3\) \(→ conv_up1/kernel, no such"):
        convert_swinir(state, SwinIRConfig(**TINY, upscale=2, upsampler="pixelshuffle"))
    with pytest.raises(ConversionError, match=r"layers\.0\.conv\.weight \(16, 16, 3, 3\) \(→ layers_0/conv/conv/"):
        convert_swinir(state, SwinIRConfig(**TINY, upscale=2, upsampler="nearest+conv", resi_connection="3conv"))
    table = "layers.0.residual_group.blocks.1.attn.relative_position_bias_table"
    with pytest.raises(ConversionError, match=r"parameters not filled: layers_0/blocks_1/attn/relative_position_bias"
                                              r"_table \(49, 2\)"):
        convert_swinir({k: v for k, v in state.items() if k != table}, config)


def test_config_checks():
    with pytest.raises(JaxirInputError, match="pixelshuffle needs upscale 2\\^n or 3"):
        SwinIRConfig(upscale=5)
    with pytest.raises(JaxirInputError, match="unshuffle_scale 3 must be >= 1 and divide upscale 8"):
        SwinIRConfig(upscale=8, upsampler="nearest+conv", unshuffle_scale=3)
    with pytest.raises(JaxirInputError, match="unknown SwinIR preset"):
        preset("classical_x3")
    config = CONFIGS["classical_x2"][0]
    with pytest.raises(JaxirInputError, match="expects 3 channels"):
        SwinIR(config).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))


def test_registered_restorers_say_how_to_get_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path))
    expected = {
        "swinir_x4": ("swinir_realsr_m_x4", "003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth --preset realsr_m_x4"),
        "swinir_classical_x2": ("swinir_classical_x2",
                                "001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth --preset classical_x2"),
        "swinir_classical_x4": ("swinir_classical_x4",
                                "001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth --preset classical_x4"),
        "diffbir_swinir": ("diffbir_swinir_v1", "general_swinir_v1.ckpt --preset diffbir_v1"),
    }
    for name, (directory, command) in expected.items():
        restorer = jaxir.restorers.get(name)
        reason = restorer.unavailable_reason()
        assert f"no checkpoint at {tmp_path / directory}" in reason
        assert f"python -m checkpoints_conversion swinir {command} --out $JAXIR_CHECKPOINTS/{directory}" in reason
        assert restorer.tasks == (("sr", "deblur", "denoise", "dejpeg") if name == "diffbir_swinir" else ("sr",))


@pytest.fixture(scope="module")
def tiny_x4():
    config = CONFIGS["realsr_x4_3conv"][0]
    torch_model = spandrel_model(config, seed=9)
    return SwinIR(config), convert_swinir(state_of(torch_model), config), torch_model


def test_restorer_scale_and_clamp(tiny_x4):
    """A ×4 model restores an SR ×4 input to lq×4 (spandrel's output, clamped) and an SR ×2 input to lq×2
    (resized with MATLAB bicubic); HWC input gives HWC output."""
    model, _, torch_model = tiny_x4
    torch_model = copy.deepcopy(torch_model)
    with torch.no_grad():   # a wider output range, so that clamping matters
        torch_model.conv_last.weight.mul_(10)
    params = convert_swinir(state_of(torch_model), model.config)
    restore = swinir_restorers.make_restore(model, params)
    lq = np.random.default_rng(11).random((1, 10, 13, 3), np.float32)
    raw = torch_forward(torch_model, lq)
    assert raw.min() < 0 and raw.max() > 1
    x4 = np.asarray(restore(lq, Degradation(scale=4)))
    assert x4.shape == (1, 40, 52, 3)
    np.testing.assert_allclose(x4, np.clip(raw, 0, 1), atol=TOLERANCE * np.abs(raw).max())
    x2 = np.asarray(restore(lq[0], Degradation(scale=2)))
    assert x2.shape == (20, 26, 3)
    np.testing.assert_allclose(x2, np.clip(np.asarray(imresize(raw, size=(20, 26)))[0], 0, 1), atol=1e-4)
    assert x2.min() == 0 and x2.max() == 1


def test_restorer_tiled_close_to_untiled(tiny_x4):
    """With every attention projection switched off (``proj`` = 0) the network is local (convolutions and
    token-wise MLPs, a few LQ pixels of context), so overlapping tiles reproduce the whole-image output except for
    the small Gaussian weight that the zero-padded tile borders still carry in the blend."""
    model, params, _ = tiny_x4
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if "proj" in jax.tree_util.keystr(path) else a, params)
    lq = np.random.default_rng(12).random((1, 40, 53, 3), np.float32)
    whole = np.asarray(swinir_restorers.make_restore(model, params, tile=64)(lq, Degradation(scale=4)))
    tiled = np.asarray(swinir_restorers.make_restore(model, params, tile=24, overlap=12)(lq, Degradation(scale=4)))
    assert tiled.shape == whole.shape == (1, 160, 212, 3)
    error = np.abs(tiled - whole)
    assert 0 < error.max() < 2e-2 and error.mean() < 2e-3   # measured: 9.0e-3 and 8.6e-4 (mean |output| 0.56)
    # the whole LQ image is padded before tiling: the right border (53 → 56) matches too (0.41 when
    # tiles were cut from the unpadded image)
    assert error[:, :, -16:].max() < 5e-3


def test_diffbir_restorer_matches_reference_pipeline():
    """``diffbir_swinir`` on an SR ×4 input: MATLAB-bicubic ×4 (clamped), zero-padded to a multiple of 64,
    spandrel's unshuffle network (DiffBIR's forward: no padding needed at 64 × 64), cropped and clamped; a ×2
    network is refused."""
    torch_model = spandrel_model(DIFFBIR, seed=13)
    params = convert_swinir(state_of(torch_model), DIFFBIR)
    restore = swinir_restorers.make_diffbir_restore(SwinIR(DIFFBIR), params)
    lq = np.random.default_rng(13).random((1, 9, 14, 3), np.float32)
    upscaled = np.clip(np.asarray(imresize(jnp.asarray(lq), size=(36, 56))), 0, 1)
    padded = np.pad(upscaled, ((0, 0), (0, 64 - 36), (0, 64 - 56), (0, 0)))
    raw = torch_forward(torch_model, padded)[:, :36, :56]
    ours = np.asarray(restore(lq, Degradation(scale=4)))
    assert ours.shape == (1, 36, 56, 3)
    np.testing.assert_allclose(ours, np.clip(raw, 0, 1), atol=TOLERANCE * np.abs(raw).max())
    assert (raw < 0).any() or (raw > 1).any()
    with pytest.raises(JaxirInputError, match="restores at scale 1"):
        swinir_restorers.make_diffbir_restore(SwinIR(CONFIGS["classical_x2"][0]), params)
