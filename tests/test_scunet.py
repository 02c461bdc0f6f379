"""SCUNet against spandrel's SCUNet architecture with random weights (padding, W/SW windows and shift masks at a
non-square size that is not a multiple of 64), its checkpoint conversion, and the denoising restorer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxir
from checkpoints_conversion.__main__ import main as convert_main
from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.scunet_keys import convert_scunet
from checkpoints_conversion.sources import read_state_dict
from jaxir import checkpoints
from jaxir.degradations.pipeline import Degradation
from jaxir.models.scunet import SCUNet, SCUNetConfig, shift_mask
from jaxir.restorers import pretrained

pytestmark = pytest.mark.slow   # compiles whole models or runs training / pipelines

TOLERANCE = 1e-4   # max abs error / max abs reference output
SIZE = (40, 72)    # padded to 64 × 128: one window row and two columns at the coarsest level


def spandrel_model(config: SCUNetConfig, seed: int):
    """spandrel's SCUNet with random weights (relative-position tables and LayerNorms perturbed too), and with
    the original's edge-replicating padding: spandrel reflect-pads where cszn/SCUNet and DiffBIR replicate."""
    from spandrel.architectures.SCUNet import SCUNet as TorchSCUNet

    torch.manual_seed(seed)
    model = TorchSCUNet(in_nc=config.in_channels, config=list(config.config), dim=config.dim,
                        input_resolution=config.input_resolution).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "relative_position_params" in name:
                p.normal_(0, 0.5)
            elif ".ln" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


def torch_forward(model, image: np.ndarray, pad_mode: str = "replicate") -> np.ndarray:
    h, w = image.shape[1:3]
    model.check_image_size = lambda x: F.pad(x, (0, -w % 64, 0, -h % 64), mode=pad_mode)
    with torch.no_grad():
        out = model(torch.from_numpy(image).permute(0, 3, 1, 2))
    return out.permute(0, 2, 3, 1).numpy()


def state_of(model) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


def relative_error(ours, reference) -> float:
    return float(np.max(np.abs(np.asarray(ours) - reference)) / np.max(np.abs(reference)))


def run(config, params, image):
    return np.asarray(jax.jit(lambda p, x: SCUNet(config).apply({"params": p}, x))(params, jnp.asarray(image)))


def test_shift_mask_matches_original_rule():
    """``generate_mask``: in the last window row, rows < s and rows ≥ s (s = window − shift) do not see each
    other; in the last column likewise for columns; every other window is unmasked."""
    mask = shift_mask(2, 3, 4).reshape(2, 3, 4, 4, 4, 4)   # (w1, w2, p1, p2, p3, p4)
    want = np.zeros_like(mask)
    want[-1, :, :2, :, 2:, :] = want[-1, :, 2:, :, :2, :] = True
    want[:, -1, :, :2, :, 2:] = want[:, -1, :, 2:, :, :2] = True
    np.testing.assert_array_equal(mask, want)


@pytest.mark.parametrize("config", [
    SCUNetConfig(config=(2, 2, 2, 2, 2, 2, 2)),
    # nominal size 64: the body (64 / 8 = 8 ≤ window) falls back to W attention in its second block
    SCUNetConfig(config=(1, 1, 1, 2, 1, 1, 1), input_resolution=64),
], ids=["sw_everywhere", "body_window_only"])
def test_matches_spandrel(config):
    model = spandrel_model(config, seed=sum(config.config))
    image = np.random.default_rng(1).random((1, *SIZE, 3), np.float32)
    reference = torch_forward(model, image)
    ours = run(config, convert_scunet(state_of(model), config), image)
    assert ours.shape == reference.shape == (1, *SIZE, 3)
    assert relative_error(ours, reference) < TOLERANCE
    # the padding matters: spandrel's reflect padding gives a visibly different result
    assert relative_error(torch_forward(model, image, "reflect"), reference) > 100 * TOLERANCE


@pytest.fixture(scope="module")
def tiny():
    config = SCUNetConfig(config=(1, 1, 1, 1, 1, 1, 1))
    return config, spandrel_model(config, seed=7)


def test_conversion_roundtrip_with_wrapper_and_prefix(tiny, tmp_path):
    config, model = tiny
    path = tmp_path / "scunet.pth"
    torch.save({"params": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    out = checkpoints.save(tmp_path / "ckpt", "scunet", config, convert_scunet(read_state_dict(path), config))
    loaded, params = jaxir.load(out)
    assert loaded.config == config
    image = np.random.default_rng(2).random((1, 24, 70, 3), np.float32)
    ours = np.asarray(jax.jit(loaded.apply)({"params": params}, jnp.asarray(image)))
    assert relative_error(ours, torch_forward(model, image)) < TOLERANCE


def test_cli_full_size(tmp_path):
    """The command line on a full-size ``scunet_color`` state dict: jaxir.load gives the converted tensors
    (the transposed-conv and relative-position tables included)."""
    config = SCUNetConfig.scunet_color()
    state = {k: torch.randn_like(v) for k, v in spandrel_model(config, seed=3).state_dict().items()}
    path = tmp_path / "scunet_color_real_psnr.pth"
    torch.save(state, path)
    assert convert_main(["scunet", str(path), "--out", str(tmp_path / "scunet")]) == 0
    loaded, params = jaxir.load(tmp_path / "scunet")
    assert loaded.config == config
    np.testing.assert_array_equal(params["m_up2_0"]["kernel"], state["m_up2.0.weight"].numpy().transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(params["m_body_3"]["trans_block"]["msa"]["relative_position_params"],
                                  state["m_body.3.trans_block.msa.relative_position_params"].numpy())


def test_foreign_checkpoint_is_refused(tmp_path, capsys):
    rrdbnet_like = {"conv_first.weight": torch.zeros(64, 3, 3, 3), "body.0.rdb1.conv1.weight": torch.zeros(32, 64, 3, 3)}
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": rrdbnet_like}, path)
    with pytest.raises(ConversionError, match="not an SCUNet checkpoint"):
        convert_scunet(read_state_dict(path), SCUNetConfig())
    assert convert_main(["scunet", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not an SCUNet checkpoint" in err


def test_restorer(tiny):
    """Same size out for a denoising input, whole or tiled (tiles of 64 overlapping by 32), clamped to [0, 1]."""
    config, model = tiny
    params = convert_scunet(state_of(model), config)
    noisy = np.random.default_rng(4).random((1, 70, 90, 3), np.float32)
    whole = np.asarray(pretrained.make_restore(SCUNet(config), params)(noisy, Degradation(noise=0.1)))
    raw = run(config, params, noisy)
    np.testing.assert_allclose(whole, np.clip(raw, 0, 1), atol=1e-6)
    tiled = np.asarray(pretrained.make_restore(SCUNet(config), params, tile=64, overlap=32)(noisy, Degradation(noise=0.1)))
    assert tiled.shape == whole.shape == noisy.shape
    assert 0 < np.abs(tiled - whole).mean() < 0.1 * np.abs(whole - noisy).mean()
