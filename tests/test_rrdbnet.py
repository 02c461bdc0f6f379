"""RRDBNet (Real-ESRGAN x4plus/x2plus, BSRNet) against spandrel's ESRGAN architecture with random weights, its
checkpoint conversion (BasicSR and BSRGAN layouts, wrappers, errors), the feed-forward restorer wrapper, and
``jaxir.tiling.tiled_apply``."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxir
from checkpoints_conversion.__main__ import main as convert_main
from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.rrdbnet_keys import convert_rrdbnet
from checkpoints_conversion.sources import read_state_dict
from jaxir import checkpoints
from jaxir.degradations.pipeline import Degradation
from jaxir.degradations.resize import imresize
from jaxir.models.rrdbnet import RRDBNet, RRDBNetConfig, pixel_unshuffle
from jaxir.restorers import pretrained
from jaxir.tiling import tiled_apply

TOLERANCE = 1e-4   # max abs error / max abs reference output
# spandrel's RRDB hard-codes the growth channels to 32
TINY = {4: RRDBNetConfig(num_feat=8, num_block=2, num_grow_ch=32, scale=4),
        2: RRDBNetConfig(num_feat=8, num_block=2, num_grow_ch=32, scale=2),
        1: RRDBNetConfig(num_feat=8, num_block=1, num_grow_ch=32, scale=1)}
BSRGAN_NAMES = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2", "conv_hr": "HRconv"}


def basicsr_state(config: RRDBNetConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """A random state dict in BasicSR's ``RRDBNet`` layout (He-scaled weights, small random biases)."""
    rng = np.random.default_rng(seed)
    state = {}

    def conv(name, cin, cout):
        state[f"{name}.weight"] = rng.normal(0, (9 * cin) ** -0.5, (cout, cin, 3, 3)).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(0, 0.1, cout).astype(np.float32)

    nf, gc = config.num_feat, config.num_grow_ch
    conv("conv_first", config.in_channels * config.unshuffle ** 2, nf)
    for i in range(config.num_block):
        for k in (1, 2, 3):
            for j in range(1, 6):
                conv(f"body.{i}.rdb{k}.conv{j}", nf + (j - 1) * gc, gc if j < 5 else nf)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, nf, nf)
    conv("conv_last", nf, config.out_channels)
    return state


def to_bsrgan(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same tensors under cszn/BSRGAN ``network_rrdbnet.py`` names."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^body\.(\d+)\.rdb(\d)", r"RRDB_trunk.\1.RDB\2", key)
        top, leaf = key.split(".", 1)
        out[f"{BSRGAN_NAMES.get(top, top)}.{leaf}"] = value
    return out


def spandrel_output(state: dict[str, np.ndarray], image: np.ndarray) -> np.ndarray:
    """spandrel's ESRGAN on NHWC ``image`` (spandrel converts the BasicSR/BSRGAN keys to its old-arch layout)."""
    from spandrel.architectures.ESRGAN import ESRGANArch

    model = ESRGANArch().load({k: torch.from_numpy(v) for k, v in state.items()}).model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(image).permute(0, 3, 1, 2))
    return out.permute(0, 2, 3, 1).numpy()


def relative_error(ours, reference) -> float:
    return float(np.max(np.abs(np.asarray(ours) - reference)) / np.max(np.abs(reference)))


def run(config, params, image):
    return np.asarray(jax.jit(lambda p, x: RRDBNet(config).apply({"params": p}, x))(params, jnp.asarray(image)))


def test_pixel_unshuffle_matches_torch():
    x = np.random.default_rng(1).random((2, 6, 8, 3), np.float32)
    want = torch.nn.functional.pixel_unshuffle(torch.from_numpy(x).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(pixel_unshuffle(jnp.asarray(x), 2)), want.numpy())


@pytest.mark.parametrize("scale, size", [(4, (11, 13)), (2, (13, 18)), (1, (10, 14))])
def test_matches_spandrel(scale, size):
    """×4 plain, ×2 and ×1 with pixel-unshuffle; odd sides exercise the reflect padding to the unshuffle factor."""
    config = TINY[scale]
    state = basicsr_state(config, seed=scale)
    image = np.random.default_rng(10 + scale).random((1, *size, 3), np.float32)
    reference = spandrel_output(state, image)
    ours = run(config, convert_rrdbnet(state, config), image)
    assert ours.shape == (1, size[0] * scale, size[1] * scale, 3) == reference.shape
    assert relative_error(ours, reference) < TOLERANCE


def test_bsrgan_layout_and_module_prefix_via_file(tmp_path):
    """BSRNet.pth names (``RRDB_trunk``, ``trunk_conv``, ``upconv1``, ``HRconv``) behind a DataParallel prefix."""
    config = TINY[4]
    state = basicsr_state(config, seed=3)
    path = tmp_path / "bsrnet.pth"
    torch.save({f"module.{k}": torch.from_numpy(v) for k, v in to_bsrgan(state).items()}, path)
    image = np.random.default_rng(4).random((1, 9, 7, 3), np.float32)
    ours = run(config, convert_rrdbnet(read_state_dict(path), config), image)
    assert relative_error(ours, spandrel_output(state, image)) < TOLERANCE


def test_params_ema_preferred_save_load_roundtrip(tmp_path):
    """A Real-ESRGAN file holding ``params`` and ``params_ema``: the EMA weights are converted; the jaxir
    checkpoint directory reloads to the same network."""
    config = TINY[2]
    ema, raw = basicsr_state(config, seed=5), basicsr_state(config, seed=6)
    path = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params": {k: torch.from_numpy(v) for k, v in raw.items()},
                "params_ema": {k: torch.from_numpy(v) for k, v in ema.items()}}, path)
    out = checkpoints.save(tmp_path / "ckpt", "rrdbnet", config, convert_rrdbnet(read_state_dict(path), config))
    model, params = jaxir.load(out)
    assert model.config == config
    image = np.random.default_rng(7).random((1, 8, 10, 3), np.float32)
    ours = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(image)))
    assert relative_error(ours, spandrel_output(ema, image)) < TOLERANCE
    assert relative_error(ours, spandrel_output(raw, image)) > 100 * TOLERANCE


def test_cli_bsrnet_full_size(tmp_path):
    """The command line on a full-size BSRNet-layout file: jaxir.load gives exactly the converted tensors."""
    config = RRDBNetConfig.bsrnet()
    state = to_bsrgan(basicsr_state(config, seed=8))
    path = tmp_path / "BSRNet.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    assert convert_main(["rrdbnet", str(path), "--preset", "bsrnet", "--out", str(tmp_path / "bsrnet")]) == 0
    model, params = jaxir.load(tmp_path / "bsrnet")
    assert model.config == config
    np.testing.assert_array_equal(params["body_22"]["rdb3"]["conv5"]["kernel"],
                                  state["RRDB_trunk.22.RDB3.conv5.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["conv_hr"]["bias"], state["HRconv.bias"])


def test_foreign_checkpoint_is_refused(tmp_path, capsys):
    swinir_like = {"conv_first.weight": torch.zeros(60, 3, 3, 3), "conv_first.bias": torch.zeros(60),
                   "layers.0.residual_group.blocks.0.norm1.weight": torch.ones(60),
                   "conv_last.weight": torch.zeros(3, 64, 3, 3)}
    path = tmp_path / "swinir.pth"
    torch.save({"params": swinir_like}, path)
    with pytest.raises(ConversionError, match="not an RRDBNet checkpoint: expected BasicSR"):
        convert_rrdbnet(read_state_dict(path), TINY[4])
    assert convert_main(["rrdbnet", str(path), "--preset", "realesrgan_x4plus", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not an RRDBNet checkpoint" in err


def test_wrong_preset_names_key_and_shapes():
    """An x2plus file (12 input channels after unshuffle) converted as ×4: the mismatch names key and shapes."""
    state = basicsr_state(TINY[2])
    with pytest.raises(ConversionError, match=r"conv_first\.weight \(8, 12, 3, 3\) → conv_first/kernel \(3, 3, 3, 8\)"):
        convert_rrdbnet(state, TINY[4])


@pytest.fixture(scope="module")
def tiny_x4():
    config = TINY[4]
    return RRDBNet(config), convert_rrdbnet(basicsr_state(config, seed=9), config)


def test_restorer_scale_and_clamp(tiny_x4):
    """A ×4 model restores an SR ×4 input to lq×4 and an SR ×2 input to lq×2 (resized with MATLAB bicubic)."""
    model, params = tiny_x4
    restore = pretrained.make_restore(model, params)
    lq = np.random.default_rng(11).random((1, 10, 12, 3), np.float32)
    raw = run(model.config, params, lq)
    x4 = np.asarray(restore(lq, Degradation(scale=4)))
    np.testing.assert_allclose(x4, np.clip(raw, 0, 1), atol=1e-6)
    assert x4.min() >= 0 and x4.max() <= 1 and (raw.min() < 0 or raw.max() > 1)
    x2 = np.asarray(restore(lq[0], Degradation(scale=2)))
    assert x2.shape == (20, 24, 3)
    np.testing.assert_allclose(x2, np.clip(imresize(raw, size=(20, 24))[0], 0, 1), atol=1e-5)


def test_restorer_tiled_close_to_untiled(tiny_x4):
    """With the trunk switched off (``conv_body`` = 0) the network is local (about 2 LQ pixels of context), so
    overlapping tiles reproduce the whole-image output except for the small Gaussian weight that each tile's
    zero-padded border still carries in the blend."""
    model, params = tiny_x4
    params = jax.tree.map(lambda a: a, params)
    params["conv_body"] = jax.tree.map(jnp.zeros_like, params["conv_body"])
    lq = np.random.default_rng(12).random((1, 40, 53, 3), np.float32)
    whole = np.asarray(pretrained.make_restore(model, params, tile=64)(lq, Degradation(scale=4)))
    tiled = np.asarray(pretrained.make_restore(model, params, tile=24, overlap=12)(lq, Degradation(scale=4)))
    assert tiled.shape == whole.shape == (1, 160, 212, 3)
    error = np.abs(tiled - whole)
    assert 0 < error.max() < 1e-2 and error.mean() < 2e-4   # measured: 4.3e-3 and 4.1e-5 (mean |output| 0.044)


def test_registered_restorers_say_how_to_get_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path))
    reasons = {name: jaxir.restorers.get(name).unavailable_reason()
               for name in ("realesrgan_x4", "realesrgan_x2", "bsrnet", "scunet")}
    assert "releases/download/v0.1.0/RealESRGAN_x4plus.pth" in reasons["realesrgan_x4"]
    assert "--preset realesrgan_x2plus" in reasons["realesrgan_x2"]
    assert "BSRNet.pth" in reasons["bsrnet"] and "scunet_color_real_psnr.pth" in reasons["scunet"]
    assert jaxir.restorers.get("realesrgan_x4").tasks == ("sr",)
    assert jaxir.restorers.get("scunet").tasks == ("denoise",)


@pytest.mark.parametrize("scale", [1, 2])
def test_tiled_apply_local_function_equals_untiled(scale):
    """A pointwise map (with nearest ×scale enlargement) tiled with tiles smaller than the image, odd sizes and
    a last tile shifted back to the border, equals the untiled result."""
    def fn(x):
        y = jnp.tanh(3 * x) * x[..., :1]
        return jnp.repeat(jnp.repeat(y, scale, axis=1), scale, axis=2)

    x = jnp.asarray(np.random.default_rng(13).random((2, 23, 37, 3), np.float32))
    for weighting in ("gaussian", "uniform"):
        tiled = tiled_apply(fn, x, tile=8, overlap=3, scale=scale, weighting=weighting)
        np.testing.assert_allclose(np.asarray(tiled), np.asarray(fn(x)), atol=1e-6)
