"""DiffBIR end to end: convert the fixture checkpoints with the CLI, load with jaxir.load, and reproduce every
ControlLDM operation recorded from DiffBIR's own code (../shared/fixtures/diffbir, random tiny weights)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import jaxir
from helpers import DIFFBIR_FIXTURES, convert_tiny_diffbir, needs_fixtures
from checkpoints_conversion.__main__ import main as convert_main
from jaxir.models.cldm import CLDM

FIXTURES = DIFFBIR_FIXTURES
pytestmark = [needs_fixtures("diffbir"), pytest.mark.slow]   # compiles whole models


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def converted(tiny_diffbir_dir):
    return tiny_diffbir_dir


@pytest.fixture(scope="module")
def loaded(converted):
    return jaxir.load(converted)


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIXTURES / "fixtures.npz"))


def test_checkpoint_directory_is_self_describing(converted):
    config = json.loads((converted / "config.json").read_text())
    assert config["kind"] == "diffbir_cldm" and config["config"]["vae"]["scale_factor"] == pytest.approx(0.18215)
    provenance = json.loads((converted / "provenance.json").read_text())
    assert set(provenance["sources"]) == {"sd", "controlnet", "config"}
    assert all(len(s["sha256"]) == 64 for s in provenance["sources"].values())


def test_operations_match_diffbir(loaded, ref):
    model, params = loaded
    assert isinstance(model, CLDM)
    with jax.default_matmul_precision("highest"):
        c_txt = model.encode_text(params, ["", "a photo of an astronaut, high quality"])
        c_img = model.encode_condition(params, ref["cond_img"])
        decoded = model.decode(params, ref["decode_in"])
        batch = ref["x_noisy"].shape[0]
        cond_txt = np.repeat(np.asarray(c_txt)[1:2], batch, axis=0)
        cond_img = np.repeat(ref["c_img"], batch, axis=0)
        eps = model.denoise(params, ref["x_noisy"], ref["t"], cond_txt, cond_img)
        eps05 = model.denoise(params, ref["x_noisy"], ref["t"], cond_txt, cond_img, control_scales=0.5)
    np.testing.assert_array_equal(np.asarray(model.tokenize(["", "a photo of an astronaut, high quality"])),
                                  ref["tokens"])
    errors = {"c_txt": _rel(c_txt, ref["c_txt"]), "c_img": _rel(c_img, ref["c_img"]),
              "decode": _rel(decoded, ref["decode_out"]), "eps": _rel(eps, ref["eps"]),
              "eps_scale05": _rel(eps05, ref["eps_scale05"])}
    assert max(errors.values()) < 1e-5, errors
    assert _rel(eps, ref["eps_scale05"]) > 1e-3  # the control scale matters


def test_bf16_storage_loads_close(tmp_path, ref):
    model, params = jaxir.load(convert_tiny_diffbir(tmp_path / "bf16", "--bf16"))
    assert all(p.dtype == np.float32 for p in jax.tree.leaves(params))
    c_img = model.encode_condition(params, ref["cond_img"])
    assert 1e-6 < _rel(c_img, ref["c_img"]) < 5e-2


@pytest.mark.parametrize("args, message", [
    (["--sd", "controlnet_tiny.pth", "--controlnet", "controlnet_tiny.pth"], "not a Stable Diffusion checkpoint"),
    (["--sd", "sd_tiny.ckpt", "--controlnet", "sd_tiny.ckpt"], "not a DiffBIR ControlNet"),
    (["--sd", "cldm_tiny.yaml", "--controlnet", "controlnet_tiny.pth"], "unsupported checkpoint type"),
    (["--sd", "sd_tiny.ckpt", "--controlnet", "controlnet_tiny.pth"], "shape mismatch"),  # v2 sizes ≠ tiny files
])
def test_wrong_files_give_one_line_errors(tmp_path, capsys, args, message):
    argv = ["diffbir"] + [a if a.startswith("--") else str(FIXTURES / a) for a in args] + ["--out", str(tmp_path / "o")]
    assert convert_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_corrupt_checkpoint_file(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a pickle at all")
    assert convert_main(["vae", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err


def test_load_rejects_non_checkpoint(tmp_path):
    with pytest.raises(jaxir.errors.JaxirInputError, match="not a jaxir checkpoint"):
        jaxir.load(tmp_path)


def test_diffusers_folder_converts_like_its_state_dict(tmp_path):
    import torch
    from diffusers import AutoencoderKL

    from checkpoints_conversion.sources import read_state_dict

    torch.manual_seed(0)
    model = AutoencoderKL(block_out_channels=(32,), down_block_types=("DownEncoderBlock2D",),
                          up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=32)
    model.save_pretrained(tmp_path / "vae")
    state = read_state_dict(tmp_path / "vae")
    reference = {k: v.numpy() for k, v in model.state_dict().items()}
    assert state.keys() == reference.keys()
    assert all(np.array_equal(state[k], reference[k]) for k in state)


def test_checkpoint_records_its_diffusion_process_and_the_pipeline_reads_it(tmp_path, converted):
    """The diffusion process goes into config.json (default: SD 2.1's eps; v2.1's zero-SNR v-prediction from DiffBIR's
    own diffusion_v2.1.yaml or the flags) and the DiffBIR pipeline samples with it: the same weights, settings and
    key restore differently as a v-prediction checkpoint."""
    from checkpoints_conversion.diffbir import load_process
    from jaxir.degradations import Degradation
    from jaxir.models.cldm import DiffusionProcess
    from jaxir.pipelines.diffbir import DiffBIR, DiffBIRSettings

    yaml_file = tmp_path / "diffusion_v2.1.yaml"
    yaml_file.write_text("target: diffbir.model.Diffusion\nparams:\n  linear_start: 0.00085\n  linear_end: 0.0120\n"
                         "  timesteps: 1000\n  zero_snr: True\n  parameterization: v\n")
    v_dir = convert_tiny_diffbir(tmp_path / "v", "--diffusion-config", str(yaml_file))
    assert json.loads((v_dir / "config.json").read_text())["config"]["process"] == {
        "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "zero_snr": True, "parameterization": "v"}
    v_process = DiffusionProcess(zero_snr=True, parameterization="v")
    assert load_process(None, "v", True) == v_process and load_process(yaml_file, "eps", None) == DiffusionProcess(
        zero_snr=True)   # the flags, and flags over the YAML
    eps_model, params = jaxir.load(converted)
    v_model, _ = jaxir.load(v_dir)
    assert eps_model.config.process == DiffusionProcess() and v_model.config.process == v_process
    settings = DiffBIRSettings.preset("v2", steps=2, min_short_edge=0, cfg_scale=1.0, sampler="ddim")
    lq = np.random.default_rng(0).random((1, 32, 32, 3)).astype(np.float32)
    runs = [np.asarray(DiffBIR(m, params, settings, stage1=lambda x, *_: x)(lq, Degradation(blur_sigma=1.0),
                                                                              jax.random.key(0)))
            for m in (eps_model, v_model)]
    assert np.abs(runs[0] - runs[1]).max() > 1e-3
