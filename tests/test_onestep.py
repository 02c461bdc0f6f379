"""One-step restorers (HYPIR, OSEDiff, PiSA-SR): LoRA conversion (checkpoints_conversion.lora/onestep), the
``onestep`` model kind and pipeline, the registered restorers.

References: the ``hypir`` and ``osediff`` fixtures, made by the originals' own code (HYPIR ``SD2Enhancer.enhance``,
OSEDiff ``OSEDiff_test.forward``) with a tiny seeded SD 2.1-like base, their release formats and recorded posterior
noise (``shared/fixtures/README.md``); diffusers + peft with two sets of adapters for PiSA-SR's λ combination (no
fixture: a tiny ``.pkl`` in its key layout is written here). Errors are max |ours − reference| / max |reference|.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import FIXTURES, compilations, needs_fixtures
from checkpoints_conversion import lora
from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.onestep import convert_hypir, convert_osediff, convert_pisa_sr
from jaxir.models.onestep import OneStepModel
from jaxir.pipelines.colorfix import adain_color_fix
from jaxir.pipelines.onestep import OneStep, OneStepSettings

pytestmark = pytest.mark.slow   # converts and runs (tiny) models

HYPIR, OSEDIFF = FIXTURES / "hypir", FIXTURES / "osediff"
TOL = 1e-5
# Outputs clamped to [0, 1] / [−1, 1] are measured against the scale of the unclamped output they come from (the
# fixtures' ``restored_unclamped``, 2.95, and ``decoded``, 4.61): the clamp shrinks the scale, not the decoder's
# absolute float32 rounding. Measured: our run with float64 parameters and inputs (GroupNorm statistics stay
# float32) is 9.9e-6 of max|out| from OSEDiff's ``out`` and our float32 run 1.4e-5 from our float64 one; the fixture's
# own float64 rerun is within 1e-5 (``out_tiled`` 3e-5).
HYPIR_UNCLAMPED_SCALE = "restored_unclamped"
OSEDIFF_UNCLAMPED_SCALE = "decoded"


def rel_err(ours, ref) -> float:
    ref = np.asarray(ref)
    return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


@functools.cache
def converted(method: str):
    if method == "hypir":
        config, params, _ = convert_hypir(HYPIR / "base", HYPIR / "HYPIR_tiny.pth")
    else:
        config, params, _ = convert_osediff(OSEDIFF / "base", OSEDIFF / "osediff_tiny.pkl")
    return OneStepModel(config), params


def check(name: str, ours, ref, scale=None) -> None:
    """max |ours − ref| / max |ref| (``scale``: / max |scale| instead, for a clamped output) ≤ TOL."""
    err = rel_err(ours, ref) if scale is None else float(np.abs(np.asarray(ours) - ref).max() / np.abs(scale).max())
    print(f"{name}: {err:.2e}" + ("" if scale is None else f" (of the unclamped scale; {rel_err(ours, ref):.2e} of "
                                                           "the clamped one)"))
    assert err <= TOL, (name, err)


@needs_fixtures("hypir", "fixtures.npz")
def test_hypir_matches_original():
    """Networks, the one step and the whole ``enhance`` (one tile and 3×3 tiles) against HYPIR's own run."""
    f = np.load(HYPIR / "fixtures.npz")
    model, params = converted("hypir")
    assert model.config.model_t == 200 and model.config.coeff_t == 200
    settings = OneStepSettings.preset("hypir", patch_size=64, patch_stride=32)
    pipe = OneStep(model, params, settings)
    x, ref = pipe.program.prepare(jnp.asarray(f["lq"]), (64, 64))
    check("hypir lq_up", ref, f["lq_up"])
    unet, vae = model.networks(params, {})
    mean, logvar = model.posterior(vae, 2 * x - 1)
    check("hypir z_lq_mean", mean, f["z_lq_mean"])
    check("hypir z_lq", mean + jnp.exp(0.5 * logvar) * f["vae_noise"], f["z_lq"])
    t = jnp.full((2,), 200.0)
    check("hypir eps", model.predict(unet, f["unet_in"], t, f["text_embed"]), f["eps"])
    unet_base, _ = model.networks(params, {}, lora_scale=0.0)
    check("hypir eps_base (lora_scale 0)", model.predict(unet_base, f["unet_in"], t, f["text_embed"]), f["eps_base"])
    check("hypir z0", pipe.program.clean_latent(f["unet_in"], f["eps"]), f["z0"])
    check("hypir decoded", model.decode(vae, f["z0"]), f["decoded"])
    check("hypir restored", pipe.restore_prepared(x, ref, f["text_embed"], f["vae_noise"][None]), f["restored"],
          f[HYPIR_UNCLAMPED_SCALE])
    tiled = OneStep(model, params, dataclasses.replace(settings, patch_size=32, patch_stride=16))
    assert tiled.program.noise_shape(64, 64) == f["tiled_vae_noise"].shape[:1] + f["tiled_vae_noise"].shape[2:]
    check("hypir restored_tiled", tiled.restore_prepared(x, ref, f["text_embed"], f["tiled_vae_noise"]),
          f["restored_tiled"], f[HYPIR_UNCLAMPED_SCALE])


@needs_fixtures("osediff", "fixtures.npz")
def test_osediff_matches_original():
    """OSEDiff_test.forward per image (LoRA VAE encoder, fine-tuned conv_in, t = 999), its AdaIN fix and latent
    tiler, against OSEDiff's own run."""
    f = np.load(OSEDIFF / "fixtures.npz")
    model, params = converted("osediff")
    unet, vae = model.networks(params, {})
    mean, logvar = model.posterior(vae, 2 * f["lq"] - 1)
    scale = model.config.vae.scale_factor
    check("osediff lq_latent_mode", scale * mean, f["lq_latent_mode"])
    check("osediff lq_latent", scale * (mean + jnp.exp(0.5 * logvar) * f["vae_noise"]), f["lq_latent"])
    t = jnp.full((2,), 999.0)
    check("osediff eps", model.predict(unet, f["lq_latent"], t, f["prompt_embeds"]), f["eps"])
    unet_base, _ = model.networks(params, {}, lora_scale=0.0)
    check("osediff eps_nolora", model.predict(unet_base, f["lq_latent"], t, f["prompt_embeds"]), f["eps_nolora"])
    settings = OneStepSettings.preset("osediff", process_size=64, color_fix="none")
    pipe = OneStep(model, params, settings)
    check("osediff x_denoised", pipe.program.clean_latent(f["lq_latent"], f["eps"]), f["x_denoised"])
    check("osediff decoded", model.decode(params["vae"], f["x_denoised"]), f["decoded"])
    x, ref = pipe.program.prepare(jnp.asarray(f["lq"]), (64, 64))
    np.testing.assert_array_equal(x, f["lq"])
    per_image = lambda p: np.concatenate([p.restore_prepared(  # noqa: E731  (OSEDiff runs one image per call)
        x[i:i + 1], ref[i:i + 1], f["prompt_embeds"][i:i + 1], f["vae_noise"][None, i:i + 1]) for i in range(2)])
    out = per_image(pipe)
    check("osediff out", 2 * out - 1, f["out"], f[OSEDIFF_UNCLAMPED_SCALE])
    check("osediff out_adain", np.clip(adain_color_fix(out, f["lq"]), 0, 1), f["out_adain"])
    tiled = OneStep(model, params, dataclasses.replace(settings, latent_tile=4, latent_tile_overlap=2))
    check("osediff out_tiled", 2 * per_image(tiled) - 1, f["out_tiled"], f[OSEDIFF_UNCLAMPED_SCALE])


@needs_fixtures("hypir", "fixtures.npz")
def test_lora_scale_is_traced():
    """A sweep over the LoRA scale reuses the compiled program; scale 0 is the base model, 1 the release."""
    f = np.load(HYPIR / "fixtures.npz")
    model, params = converted("hypir")
    settings = OneStepSettings.preset("hypir", patch_size=64, patch_stride=32)
    x, ref = OneStep(model, params, settings).program.prepare(jnp.asarray(f["lq"]), (64, 64))
    outs = {}
    for scale in (1.0, 0.0, 0.5):
        with compilations() as cost:
            outs[scale] = OneStep(model, params, dataclasses.replace(settings, lora_scale=scale)).restore_prepared(
                x, ref, f["text_embed"], f["vae_noise"][None])
        if scale != 1.0:
            assert cost().compilations == 0, scale
    check("hypir restored (lora_scale 1 again)", outs[1.0], f["restored"])
    assert rel_err(outs[0.0], f["restored"]) > 1e-3 and rel_err(outs[0.5], outs[0.0]) > 1e-4


# ---- strictness --------------------------------------------------------------------------------------------------

def _hypir_state():
    from checkpoints_conversion.sources import read_state_dict

    return read_state_dict(HYPIR / "HYPIR_tiny.pth")


@needs_fixtures("hypir", "HYPIR_tiny.pth")
@pytest.mark.parametrize("damage, message", [
    ("unknown", "down_blocks.0.resnets.0.conv9.weight"),
    ("shape", "shape mismatch: down_blocks.0.resnets.0.conv1.weight (16, 15, 3, 3)"),
    ("no_b", "down_blocks.0.resnets.0.conv1 has no lora_B"),
])
def test_lora_conversion_is_strict(tmp_path, damage, message):
    import torch

    state = {k: torch.from_numpy(v) for k, v in _hypir_state().items()}
    key_a = "down_blocks.0.resnets.0.conv1.lora_A.default.weight"
    if damage == "unknown":
        state[key_a.replace("conv1", "conv9")] = state[key_a]
        state[key_a.replace("conv1", "conv9").replace("lora_A", "lora_B")] = state[key_a.replace("lora_A", "lora_B")]
    elif damage == "shape":
        state[key_a] = state[key_a][:, :15]
    else:
        del state[key_a.replace("lora_A", "lora_B")]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ConversionError, match="bad.pth") as err:
        convert_hypir(HYPIR / "base", path)
    assert message in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


@needs_fixtures("osediff", "osediff_tiny.pkl")
def test_osediff_module_lists_are_checked(tmp_path):
    import torch

    data = torch.load(OSEDIFF / "osediff_tiny.pkl", weights_only=True)
    data["unet_lora_decoder_modules"] = data["unet_lora_decoder_modules"][1:]
    torch.save(data, tmp_path / "bad.pkl")
    with pytest.raises(ConversionError, match="LoRA tensors on unlisted modules: up_blocks.0.resnets.0.conv1"):
        convert_osediff(OSEDIFF / "base", tmp_path / "bad.pkl")


def test_dense_delta_matches_conv_of_factors():
    """A conv LoRA's delta is the composition of its two convs (peft ``Conv2d.get_delta_weight``)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 5, 3, 3), np.float32), rng.standard_normal((7, 3, 1, 1), np.float32)
    x = torch.from_numpy(rng.standard_normal((1, 5, 9, 9), np.float32))
    ref = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, torch.from_numpy(a)), torch.from_numpy(b))
    ours = torch.nn.functional.conv2d(x, torch.from_numpy(lora.dense_delta(a, b, 1.0)))
    assert rel_err(ours.numpy(), ref.numpy()) < 1e-6


# ---- PiSA-SR: its .pkl format and the λ dial against diffusers + peft with two adapters -------------------------

PISA_PATTERNS = ("to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut", "conv_out",
                 "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj")


def _pisa_groups(unet) -> dict[str, list[str]]:
    """PiSA-SR ``initialize_unet``'s module lists: encoder (down blocks, conv_in), decoder (up blocks, conv_out),
    others (the mid block)."""
    groups = {"encoder": [], "decoder": [], "others": []}
    for name, _ in unet.named_parameters():
        if "bias" in name or "norm" in name or not any(p in name for p in PISA_PATTERNS):
            continue
        group = ("encoder" if "down_blocks" in name or "conv_in" in name else
                 "decoder" if "up_blocks" in name or "conv_out" in name else "others")
        groups[group].append(name.removesuffix(".weight"))
    return groups


@needs_fixtures("hypir", "base")
def test_pisa_sr_dial_matches_peft(tmp_path):
    """A PiSA-SR-format ``.pkl`` (ranks 4 and 2, six adapters) made with peft on the tiny base; our
    ``λ_pix·pred_pix + λ_sem·(pred_pix+sem − pred_pix)`` and ``x0 = z − pred`` against peft's outputs with the
    pixel adapters alone and with all six."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    peft = pytest.importorskip("peft")
    unet = diffusers.UNet2DConditionModel.from_pretrained(HYPIR / "base", subfolder="unet").eval()
    groups = _pisa_groups(unet)
    ranks = {"pix": 4, "sem": 2}
    for kind, rank in ranks.items():
        for group, modules in groups.items():
            unet.add_adapter(peft.LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=modules),
                             adapter_name=f"default_{group}_{kind}")
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    data = {"state_dict_unet": {k: v for k, v in unet.state_dict().items() if "lora" in k},
            **{f"lora_rank_unet_{k}": r for k, r in ranks.items()},
            **{f"unet_lora_{g}_modules_{k}": m for k in ranks for g, m in groups.items()}}
    torch.save(data, tmp_path / "pisa_tiny.pkl")
    rng = np.random.default_rng(3)
    z = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    ctx = rng.standard_normal((1, 77, 24)).astype(np.float32)

    def peft_pred(kinds):
        unet.set_adapters([f"default_{g}_{k}" for k in kinds for g in groups])
        with torch.no_grad():
            out = unet(torch.from_numpy(z).permute(0, 3, 1, 2), 1, encoder_hidden_states=torch.from_numpy(ctx)).sample
        return out.permute(0, 2, 3, 1).numpy()

    pix, full = peft_pred(["pix"]), peft_pred(["pix", "sem"])
    config, params, notes = convert_pisa_sr(HYPIR / "base", tmp_path / "pisa_tiny.pkl")
    assert notes["lora"] == {"rank_pix": 4, "rank_sem": 2, "alpha": 8.0} and config.x0_rule == "residual"
    model = OneStepModel(config)
    for lambdas in ((1.0, 1.0), (0.6, 1.4)):
        settings = OneStepSettings.preset("pisa_sr", dial=True, lambda_pix=lambdas[0], lambda_sem=lambdas[1])
        program = OneStep(model, params, settings).program
        pred = program.predict(params, jnp.asarray(z), jnp.asarray(ctx), 1.0, jnp.asarray(lambdas))
        ref = lambdas[0] * pix + lambdas[1] * (full - pix)
        check(f"pisa_sr pred λ={lambdas}", pred, ref)
        check(f"pisa_sr x0 λ={lambdas}", program.clean_latent(z, pred), z - ref)
    default = OneStep(model, params, OneStepSettings.preset("pisa_sr")).program
    check("pisa_sr default (one pass)", default.predict(params, jnp.asarray(z), jnp.asarray(ctx), 1.0, None), full)


# ---- the registered restorers ------------------------------------------------------------------------------------

def _base_with_text(tmp_path):
    """The HYPIR fixture's base plus a tiny seeded ``text_encoder/`` (transformers ``CLIPTextModel``, width 24):
    the whole prompt → embedding path of a diffusers base."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    base = tmp_path / "base"
    shutil.copytree(HYPIR / "base", base)
    torch.manual_seed(0)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=24, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, hidden_act="gelu")).eval()
    text.save_pretrained(base / "text_encoder")
    return base, text


@needs_fixtures("hypir", "base")
def test_restorer_text_and_sample_keys(tmp_path):
    """``python -m checkpoints_conversion hypir`` → the registered ``hypir`` restorer: the prompt embedding equals
    transformers' ``last_hidden_state``; sample b's result depends on its own id only (noise from ``fold_in``)."""
    import torch

    from checkpoints_conversion.__main__ import main as convert_main
    from jaxir.checkpoints import load
    from jaxir.degradations.pipeline import Degradation
    from jaxir.models.tokenizer import CLIPTokenizer
    from jaxir.restorers import get

    base, text = _base_with_text(tmp_path)
    out = tmp_path / "hypir_ckpt"
    assert convert_main(["hypir", "--base", str(base), "--weights", str(HYPIR / "HYPIR_tiny.pth"),
                         "--out", str(out)]) == 0
    model, params = load(out)
    prompt = "a photo of a cat"
    with torch.no_grad():
        ref = text(torch.from_numpy(np.asarray(CLIPTokenizer()([prompt]), np.int64))).last_hidden_state.numpy()
    check("text embedding (diffusers text_encoder)", model.encode_text(params, prompt), ref)
    restorer = get("hypir").configure(checkpoint=str(out), patch_size=64, patch_stride=32, prompt=prompt)
    assert restorer.unavailable_reason() is None
    lq = np.random.default_rng(1).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    key = jax.random.key(4)
    both = restorer.restore(lq, Degradation(scale=2), key, [5, 9])
    swapped = restorer.restore(lq[::-1], Degradation(scale=2), key, [9, 5])   # one batch shape: one compilation
    assert both.shape == (2, 64, 64, 3)
    # the same sample at another batch position: float32 rounding of XLA's batched kernels only (measured 3.5e-6)
    np.testing.assert_allclose(both, swapped[::-1], atol=1e-5)
    other_id = restorer.restore(lq, Degradation(scale=2), key, [6, 9])
    np.testing.assert_allclose(other_id[1], both[1], atol=1e-5)
    assert rel_err(other_id[0], both[0]) > 1e-4


def test_unconverted_restorers_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path))
    from jaxir.restorers import get

    for name, weights in (("hypir", "HYPIR_sd2.pth"), ("osediff", "osediff.pkl"), ("pisa_sr", "pisa_sr.pkl")):
        reason = get(name).unavailable_reason()
        assert f"python -m checkpoints_conversion {name} --base" in reason and weights in reason, reason


@needs_fixtures("hypir", "base")
def test_fig8_and_fig4_place_a_converted_one_step_restorer(tmp_path, monkeypatch):
    """``jaxir experiment fig8`` with HYPIR converted where the registered restorer looks for it: its cells are the
    restorer's restorations computed by hand with the study's keys, placed at its UNet timestep (t = 200); fig4
    counts its checkpoint's parameters; the verdict's evidence names it."""
    import experiments
    from checkpoints_conversion.__main__ import main as convert_main
    from helpers import close, direct
    from jaxir.checkpoints import parameter_count
    from jaxir.data import bundled_photos
    from jaxir.degradations.levels import parse_level
    from jaxir.study.experiment import Options, run_experiment

    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path / "weights"))
    base, _ = _base_with_text(tmp_path)
    assert convert_main(["hypir", "--base", str(base), "--weights", str(HYPIR / "HYPIR_tiny.pth"),
                         "--out", str(tmp_path / "weights" / "hypir")]) == 0
    images = (experiments.centre_crop(bundled_photos(["astronaut"])[0], 96),)
    sr2 = parse_level("sr2")
    options = Options(images, models=("hypir",), levels=(sr2,))
    fig8 = run_experiment(experiments.get("fig8"), options, tmp_path / "exp", progress=False)
    (row,) = fig8.rows
    assert row["model"] == "hypir" and row["t_start"] == 200 and row["evaluations"] == 1
    close(row, direct("hypir", images[0].image, sr2))
    assert "hypir SR x2 SSIM" in fig8.summary.evidence
    fig4 = run_experiment(experiments.get("fig4"), options, tmp_path / "exp", progress=False)
    assert fig4.computed == 0 and fig4.rows[0]["parameters"] == parameter_count(tmp_path / "weights" / "hypir")
