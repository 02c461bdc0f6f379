"""The SUPIR restoration pipeline (jaxir.pipelines.supir), its restorer registration and ``jaxir restore`` options.

The model is test_supir's tiny SUPIR (the fixture's diffusion network with seeded VAE / text-tower stand-ins),
converted once per module. The stand-in text towers have a 1000-token vocabulary, so the tokenizers' ids are taken
modulo it here (real ids would index past the embedding table). Runs: a 32×40 input at ×2 (clean 64×80) with
``min_size`` 64 → sampled at 64×64 (latent 32×32: the stand-in VAE downsamples by 2), 3 steps, restoration scale 4
so that ``x_center`` matters (its weight is 1 at σ_max whatever the scale and 0 in the last step: the middle step
is where the scale shows).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from helpers import compiled_functions
import test_supir as tiny_supir   # the tiny config and the seeded SDXL + SUPIR source files
from checkpoints_conversion import supir_keys
from jaxir import checkpoints
from jaxir.cli import main
from jaxir.data import load_image, save_image
from jaxir.degradations.pipeline import Degradation
from jaxir.degradations.resize import resize_torch
from jaxir import tiling
from jaxir.diffusion import restore_edm
from jaxir.diffusion.edm import sample_euler
from jaxir.diffusion.guidance import guided
from jaxir.errors import JaxirInputError
from jaxir.models import supir
from jaxir.pipelines import supir as P
from jaxir.pipelines.colorfix import COLOR_FIXES
from jaxir.restorers import cldm_family, get

pytestmark = pytest.mark.slow   # compiles whole models or runs training / pipelines

STEPS = 3
DEG = Degradation(scale=2)
CLEAN, SAMPLED = (64, 80), (64, 64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(checkpoint dir, model, params)``: test_supir's seeded SDXL + SUPIR state dicts through the converter's
    ``merge_sources``/``convert_state`` (the files, the command line and ``jaxir.load`` are test_supir's business);
    the directory only stands for a checkpoint path on the command line."""
    if not tiny_supir.NPZ.is_file():
        pytest.skip(f"SUPIR fixture not found at {tiny_supir.FIXTURES}")
    config = tiny_supir.tiny_config()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(supir, "network_param_shapes", functools.cache(supir.network_param_shapes))
        params = supir_keys.convert_state(supir_keys.merge_sources(*tiny_supir.source_files_state()), config)
    params = jax.tree.map(jnp.asarray, params)
    model = supir.SUPIR(config)
    for name, vocab in (("tokenizer_l", config.clip_l.vocab_size), ("tokenizer_g", config.clip_g.vocab_size)):
        tokenizer = getattr(model, name)
        setattr(model, name, lambda prompts, t=tokenizer, v=vocab: np.asarray(t(prompts)) % v)
    folder = tmp_path_factory.mktemp("supir_ckpt")
    (folder / "config.json").write_text("{}")   # what makes a folder a checkpoint to a restorer's availability check
    return folder, model, params


def settings(**overrides) -> P.SUPIRSettings:
    return P.SUPIRSettings.preset("v0Q", **{"steps": STEPS, "min_size": 64, "restoration_scale": 4.0, **overrides})


def pipeline(tiny, **overrides) -> P.SUPIRPipeline:
    _, model, params = tiny
    return P.SUPIRPipeline(model, params, settings(**overrides))


def _lq(n=2):
    return jnp.asarray(np.round(np.random.default_rng(5).random((n, 32, 40, 3)) * 255) / 255, jnp.float32)


@pytest.fixture(scope="module")
def base(tiny):
    """Image 2 alone (sample id 1) through the untiled sampler, and the batch of two through the tiled sampler with
    one 32-pixel tile covering the 32×32 latent. Sampler compilations dominate this module's time (≈ 15 s each
    here); this pairing covers batch independence and one-tile = untiled with two of them."""
    with jax.default_matmul_precision("highest"):
        lq = _lq()
        alone = np.asarray(pipeline(tiny)(lq[1:], DEG, jax.random.key(0), sample_ids=[1]))
        batch = np.asarray(pipeline(tiny, tile_size=32, tile_stride=16)(lq, DEG, jax.random.key(0)))
    return {"lq": lq, "batch": batch, "alone": alone}


# ---- settings, sizes, resizing, tiles (no model) ---------------------------------------------------------------------

def test_presets_and_settings():
    """test.py / gradio defaults: v0Q = quality (s_cfg 7.5 from 4.0, s_noise 1.003), v0F = fidelity (4.0 from 1.0,
    1.01); everything else shared. SUPIR's colour-fix spellings are accepted; bad values stop with one line."""
    q, f = P.SUPIRSettings.preset("v0Q"), P.SUPIRSettings.preset("v0F")
    assert (q.steps, q.s_churn, q.restoration_scale, q.control_scale, q.min_size) == (50, 5, -1, 1.0, 1024)
    assert (q.cfg_scale, q.cfg_scale_start, q.s_noise) == (7.5, 4.0, 1.003)
    assert (f.cfg_scale, f.cfg_scale_start, f.s_noise) == (4.0, 1.0, 1.01)
    assert q.use_linear_cfg and not q.use_linear_control_scale and q.control_scale_start == 0.0
    assert q.color_fix == "wavelet" and q.a_prompt.startswith("Cinematic") and q.n_prompt.endswith("over-smooth")
    assert q.values() == restore_edm.RestoreEDMSettings(s_churn=5, s_noise=1.003, restore_cfg=-1, cfg_scale=7.5,
                                                        cfg_scale_start=4.0, control_scale=1.0, control_scale_start=1.0)
    assert P.SUPIRSettings(color_fix="AdaIn").color_fix == "adain"
    assert P.SUPIRSettings(color_fix="None").color_fix == "none"
    for bad, match in ((dict(color_fix="Sepia"), "color_fix"), (dict(tile_size=16, tile_stride=32), "tile_stride"),
                       (dict(steps=0), "steps"), (dict(vae_tile=64, vae_tile_overlap=64), "vae_tile_overlap")):
        with pytest.raises(JaxirInputError, match=match):
            P.SUPIRSettings(**bad)
    with pytest.raises(JaxirInputError, match="unknown SUPIR version"):
        P.SUPIRSettings.preset("v1")


def test_sampling_size_follows_pil2tensor():
    """×upscale, the short side up to min_size, each side to the nearest multiple of 64 (halves to even)."""
    assert P.sampling_size(32, 40, 2, 64) == (64, 64)
    assert P.sampling_size(333, 500, 1) == (1024, 1536)        # 1024 × 1537.5 → 24 × 64
    assert P.sampling_size(512, 768, 4) == (2048, 3072)
    assert P.sampling_size(96, 160, 1, 0) == (128, 128)        # 1.5 → 2, 2.5 → 2
    assert P.sampling_size(20, 20, 1, 0) == (64, 64)           # never empty


@pytest.mark.parametrize("size_in, size_out", [((32, 40), (64, 64)), ((200, 136), (192, 128)), ((50, 70), (256, 320))])
def test_pil_bicubic_matches_pillow(size_in, size_out):
    """``pil_bicubic`` vs ``PIL.Image.resize(BICUBIC)`` of a random 8-bit image (up, down, ×5): ≤ 1 grey level, on
    < 1 % of the values (PIL's fixed-point weights); a single float pass differs far more on such an image."""
    img = np.round(np.random.default_rng(1).random((*size_in, 3)) * 255).astype(np.uint8)
    want = np.asarray(Image.fromarray(img).resize(size_out[::-1], Image.BICUBIC), np.float64)
    got = np.asarray(P.pil_bicubic(jnp.asarray(img[None] / 255.0, jnp.float32), size_out))[0] * 255
    diff = np.abs(got - want)
    print(f"{size_in} → {size_out}: max {diff.max():.3f} levels, {np.mean(diff > 0.5):.4%} differ")
    assert diff.max() <= 1.0 + 1e-3 and np.mean(diff > 0.5) < 0.01
    one_pass = np.asarray(resize_torch(jnp.asarray(img[None] / 255.0, jnp.float32), size=size_out, mode="bicubic_aa"))
    assert np.abs(np.clip(one_pass[0], 0, 1) * 255 - want).max() > 5


def _supir_starts(n: int, tile: int, stride: int) -> list[int]:
    """SUPIR ``_sliding_windows`` along one axis: every stride up to n − tile, plus n − tile if missed."""
    starts = list(range(0, n - tile + 1, stride))
    return starts + ([n - tile] if (n - tile) % stride else [])


def _supir_weights(h: int, w: int) -> np.ndarray:
    """sgm ``gaussian_weights`` (var 0.01 of the tile size², columns centred at (w−1)/2, rows at h/2)."""
    gauss = lambda i, mid, n: np.exp(-((i - mid) ** 2) / (n * n) / 0.02) / np.sqrt(0.02 * np.pi)  # noqa: E731
    return np.outer(gauss(np.arange(h), h / 2, h), gauss(np.arange(w), (w - 1) / 2, w))


def test_tile_windows_and_weights_are_supirs():
    for n, tile, stride in ((256, 128, 64), (200, 128, 64), (128, 128, 64), (22, 8, 4), (30, 8, 3)):
        (th, _), rows, _ = tiling.tile_windows(n, n, tile, stride)
        assert th == tile and list(rows) == _supir_starts(n, tile, stride), (n, tile, stride)
    assert tiling.tile_windows(20, 300, 128, 64) == ((20, 128), (0,), (0, 64, 128, 172))   # clamped to the latent
    for h, w in ((128, 128), (8, 8), (20, 128)):
        np.testing.assert_allclose(tiling.supir_tile_weights(h, w), _supir_weights(h, w), rtol=1e-12)


def test_blending_denoiser_outputs_equals_supirs_per_tile_steps():
    """The design claim of the tiled sampler: :func:`jaxir.tiling.tiled_blend` of the denoiser inside the restore-EDM
    sampler (Euler with the x_center guidance hook) equals SUPIR's ``TiledRestoreEDMSampler`` loop — churn with the
    image-wide noise, denoise, restoration guidance and Euler step per tile, stepped tiles blended — for a denoiser
    that is not local (it uses each tile's mean):
    3 steps on a 22×30 latent, tiles 8, stride 4 (5 × 7 tiles, the last ones shifted), churn 5, guidance 2."""
    rng = np.random.default_rng(0)
    b, h, w, c, steps, tile, stride = 2, 22, 30, 4, 3, 8, 4
    x_init, x_center = rng.standard_normal((b, h, w, c)), rng.standard_normal((b, h, w, c))
    noise = rng.standard_normal((steps, b, h, w, c))
    sigmas = restore_edm.legacy_ddpm_sigmas(num_steps=steps).astype(np.float64)
    s = restore_edm.RestoreEDMSettings(s_churn=5.0, s_noise=1.003, restore_cfg=2.0)

    def toy(x, sigma):   # (B, t, t, C): depends on the whole tile
        return 0.6 * x + 0.3 * jnp.tanh(x.mean(axis=(1, 2), keepdims=True)) / (1.0 + sigma)

    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731

    def denoise(x, sigma, step):
        return tiling.tiled_blend(lambda t: toy(t, sigma), x, tile, stride)

    def sample(x_init, sigmas, noise, x_center):
        return sample_euler(guided(denoise, restore_edm.center_guidance(x_center, sigmas, s)),
                            x_init * jnp.sqrt(1.0 + sigmas[0] ** 2), sigmas, noise, s_churn=s.s_churn,
                            s_noise=s.s_noise)

    ours = jax.jit(sample)(f32(x_init), f32(sigmas), f32(noise), f32(x_center))

    gamma = min(s.s_churn / steps, 2 ** 0.5 - 1)
    weights = _supir_weights(tile, tile)[None, :, :, None]
    x = x_init * np.sqrt(1 + sigmas[0] ** 2)
    for i in range(steps):
        sigma, nxt = sigmas[i], sigmas[i + 1]
        sigma_hat = sigma * (1 + gamma)
        total, count = np.zeros_like(x), np.zeros_like(x)
        for r in _supir_starts(h, tile, stride):
            for q in _supir_starts(w, tile, stride):
                win = (slice(None), slice(r, r + tile), slice(q, q + tile))
                xt = x[win] + noise[i][win] * s.s_noise * np.sqrt(sigma_hat ** 2 - sigma ** 2)
                d = np.asarray(toy(jnp.asarray(xt), sigma_hat))
                if nxt > s.restore_cfg_s_tmin:
                    d = d - (d - x_center[win]) * (sigma / s.sigma_max) ** s.restore_cfg
                total[win] += (xt + (xt - d) / sigma_hat * (nxt - sigma_hat)) * weights
                count[win] += weights
        x = total / count
    err = float(np.abs(np.asarray(ours) - x).max() / np.abs(x).max())
    print(f"tiled blend vs per-tile steps: {err:.2e}")
    assert err < 1e-5


# ---- the pipeline ----------------------------------------------------------------------------------------------------

def test_restore_shape_range_determinism_and_batch_independence(tiny, base):
    """Clean size in [0, 1]; the same key gives bit-identical output. Row 1 of the batch of two (tiled sampler, one
    tile covering the latent) equals image 2 alone with sample id 1 (untiled sampler): batch independence and the
    one-tile = untiled equivalence in one comparison (the two samplers share only the restore-EDM step, the two
    runs share no compiled program, so neither difference could hide the other)."""
    batch, alone = base["batch"], base["alone"]
    assert batch.shape == (2, *CLEAN, 3) and alone.shape == (1, *CLEAN, 3)
    assert np.isfinite(batch).all() and batch.min() >= 0.0 and batch.max() <= 1.0 and batch.std() > 0.01
    again = np.asarray(pipeline(tiny)(base["lq"][1:], DEG, jax.random.key(0), sample_ids=[1]))
    np.testing.assert_array_equal(again, alone)
    err = float(np.abs(alone[0] - batch[1]).max())
    print(f"alone (untiled) vs batch row (one tile): {err:.2e}")
    assert err <= 1e-5
    assert np.abs(batch[0] - batch[1]).max() > 1e-2


def test_new_key_and_scales_do_not_recompile(tiny, base):
    """A new key, CFG, restoration scale, (linear) control scale, churn and noise reuse every compiled program
    (jit cache sizes unchanged) and each changes the result."""
    lq = base["lq"][1:]
    for key, overrides in ((1, {}), (0, dict(cfg_scale=3.0, restoration_scale=2.0)),
                           (0, dict(control_scale=0.7, use_linear_control_scale=True, s_churn=1.0, s_noise=1.0,
                                    use_linear_cfg=False))):
        with compiled_functions() as compiled:
            out = np.asarray(pipeline(tiny, **overrides)(lq, DEG, jax.random.key(key), sample_ids=[1]))
        assert not compiled, (overrides, compiled)
        assert np.abs(out - base["alone"]).max() > 1e-4, overrides


@functools.partial(jax.jit, static_argnums=0)
def _fix_and_resize(kind, decoded, x_stage1):
    """SUPIR's last steps, written out: colour fix in [−1, 1], to [0, 1], ``F.interpolate`` bicubic, clip."""
    restored = (COLOR_FIXES[kind](decoded, x_stage1) + 1) / 2
    return jnp.clip(resize_torch(restored, size=CLEAN, mode="bicubic"), 0, 1)


def test_pipeline_equals_manual_composition(tiny, base):
    """The pipeline's wiring against SUPIR's ``batchify_sample`` composed by hand from the model's operations: PIL
    resize, the normal stream of ``fold_in(key, 1)`` cut into (x_center, start, step) noise, stage1 →
    condition(a_prompt / n_prompt) → ``sample_restore_edm`` → decode → wavelet fix against x_stage1 → bicubic back to
    the clean size."""
    _, model, params = tiny
    s = settings()
    image = P.pil_bicubic(base["lq"][1:], SAMPLED)
    latent = (SAMPLED[0] // 2, SAMPLED[1] // 2, 4)         # the stand-in VAE downsamples by 2
    n = int(np.prod(latent))
    stream = jax.random.normal(jax.random.fold_in(jax.random.key(0), 1), ((STEPS + 2) * n,))
    center, start, step_noise = stream[:n], stream[n:2 * n], stream[2 * n:]
    z_lq, x_stage1, x_center = model.stage1(params, image, center.reshape(1, *latent))
    cond = model.condition(params, [s.a_prompt], z_lq)
    uncond = model.condition(params, [s.n_prompt], z_lq)
    values = restore_edm.RestoreEDMSettings.from_batchify_sample(
        restoration_scale=4.0, s_churn=5, s_noise=1.003, cfg_scale=7.5, control_scale=1.0, use_linear_CFG=True,
        cfg_scale_start=4.0)
    sigmas = restore_edm.legacy_ddpm_sigmas(num_steps=STEPS)
    z = P.sample_restore_edm(model, params, start.reshape(1, *latent), sigmas, step_noise.reshape(STEPS, 1, *latent),
                             x_center, cond, uncond, values)
    expected = np.asarray(_fix_and_resize("wavelet", model.decode(params, z), x_stage1))
    err = float(np.abs(base["alone"] - expected).max())
    print(f"pipeline vs manual composition: {err:.2e}")
    assert err <= 1e-6
    # the pipeline encoded both prompts when built and holds no text tower afterwards
    assert set(params) - set(pipeline(tiny).params) == set(P.TEXT_TOWERS) == {"clip_l", "clip_g"}


def test_x0_trajectory_ends_in_the_restoration(tiny, base):
    """Fig. 9 for SUPIR: ``x0_trajectory`` returns the restoration itself (the same run) and one decoded,
    colour-fixed x0 prediction per step at the clean size; Euler's last step lands on its x0 prediction, so the
    last one is the restoration."""
    with jax.default_matmul_precision("highest"):
        final, x0s = pipeline(tiny).x0_trajectory(base["lq"][1:], DEG, jax.random.key(0), sample_ids=[1])
    assert len(x0s) == STEPS and all(x0.shape == (1, *CLEAN, 3) for x0 in x0s)
    np.testing.assert_allclose(np.asarray(final), base["alone"], atol=1e-6)
    last = float(np.abs(np.asarray(x0s[-1]) - base["alone"]).max())
    first = float(np.abs(np.asarray(x0s[0]) - base["alone"]).max())
    print(f"x0 trajectory: first step {first:.3e}, last step {last:.3e} from the restoration")
    assert last <= 1e-5 < first


def test_latent_and_vae_tiling(tiny, base):
    """24-pixel latent tiles with stride 8 (2 × 2 tiles on the 32×32 latent) and a 32-pixel tiled VAE (overlap 16)
    give a finite image of the clean size, different from the untiled one; tiles must suit the UNet. (One tile
    covering the latent equals the untiled sampler: test_restore_shape_range_determinism_and_batch_independence.)"""
    tiled = np.asarray(pipeline(tiny, tile_size=24, tile_stride=8, vae_tile=32, vae_tile_overlap=16)(
        base["lq"][1:], DEG, jax.random.key(0), sample_ids=[1]))
    assert tiled.shape == (1, *CLEAN, 3) and np.isfinite(tiled).all() and 0 <= tiled.min() and tiled.max() <= 1
    assert np.abs(tiled - base["alone"]).mean() > 1e-4
    with pytest.raises(JaxirInputError, match="tile_size 6 is not a multiple of 4"):
        pipeline(tiny, tile_size=6, tile_stride=3)


def test_color_fix_choice_is_honoured(tiny, base):
    """color_fix None / AdaIn / Wavelet: each output is the uncorrected decoding fixed by that method against
    x_stage1 (in [−1, 1]); the three differ."""
    plain = pipeline(tiny, color_fix="None")
    image = plain.sampling_image(base["lq"][1:], 2)
    raw = plain.restore_image(image, jax.random.key(0), [1])
    _, x_stage1, _ = plain.stage1(image, plain.noise(jax.random.key(0), image.shape[:3], [1])[0])
    outputs = {"none": np.asarray(jnp.clip(resize_torch(raw, size=CLEAN, mode="bicubic"), 0, 1)),
               "adain": np.asarray(pipeline(tiny, color_fix="AdaIn")(base["lq"][1:], DEG, jax.random.key(0), [1])),
               "wavelet": base["alone"]}
    for name in ("adain", "wavelet"):
        err = float(np.abs(outputs[name] - np.asarray(_fix_and_resize(name, 2 * raw - 1, x_stage1))).max())
        print(f"{name}: {err:.2e}")
        assert err <= 1e-5
    assert min(np.abs(outputs[a] - outputs[b]).max() for a, b in (("none", "adain"), ("none", "wavelet"),
                                                                  ("adain", "wavelet"))) > 1e-3


# ---- registration and the command line -------------------------------------------------------------------------------

def test_restorers_name_the_conversion_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path))
    for version in ("v0Q", "v0F"):
        restorer = get(f"supir_{version}")
        reason = restorer.unavailable_reason()
        assert restorer.family == "cldm" and str(tmp_path / f"supir_{version}") in reason
        assert (f"python -m checkpoints_conversion supir --sdxl sd_xl_base_1.0_0.9vae.safetensors --supir "
                f"SUPIR-{version}.ckpt --out $JAXIR_CHECKPOINTS/supir_{version}") in reason
    assert main(["restorers"]) == 0
    assert "supir_v0F" in capsys.readouterr().out


def _folder(tmp_path):
    folder = tmp_path / "lq"
    folder.mkdir()
    save_image(folder / "img0.png", np.random.default_rng(0).random((32, 40, 3)))
    return folder


@pytest.mark.parametrize("extra, message", [
    (["--restorer", "supir_v0Q", "--sampler", "ddim"], "supir_v0Q: unknown setting 'sampler'; its settings:"),
    (["--restorer", "supir_v0F", "--t-start", "500"], "supir_v0F: unknown setting 't_start'"),
    (["--restorer", "diffbir_v2", "--restoration-scale", "2"], "diffbir_v2: unknown setting 'restoration_scale'"),
    (["--restorer", "bicubic", "--s-stage2", "0.9"], "bicubic: unknown setting 'control_scale'; its settings: none"),
    (["--restorer", "supir_v0Q", "--set", "cfg_scale=high"], "supir_v0Q: setting 'cfg_scale' must be float"),
    (["--restorer", "supir_v0Q"], "restorer supir_v0Q unavailable: no checkpoint at"),
    (["--restorer", "supir_v0Q", "--checkpoint", "nowhere", "--color-fix", "sepia"], "color_fix must be wavelet"),
])
def test_bad_requests_are_one_line(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path / "none"))
    assert main(["restore", str(_folder(tmp_path)), "--out", str(tmp_path / "o"), "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxir: error:") and message in err and "\n" not in err


def test_cli_options_reach_the_pipeline(tiny, tmp_path, monkeypatch):
    """``jaxir restore --restorer supir_v0F`` with SUPIR's options (the tiny model stands in for the loaded
    checkpoint): the pipeline gets exactly the expected settings and image 0 equals the pipeline run directly
    (8-bit rounding)."""
    ckpt, model, params = tiny
    monkeypatch.setattr(checkpoints, "load", lambda path, dtype=None: (model, params))
    monkeypatch.setattr(checkpoints, "verify", lambda path: None)   # the folder only stands for a checkpoint
    monkeypatch.setenv("JAXIR_CACHE_DIR", str(tmp_path / "xla"))
    seen = []

    class Spy(P.SUPIRPipeline):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.settings)

    monkeypatch.setattr(cldm_family, "SUPIRPipeline", Spy)
    folder, out = _folder(tmp_path), tmp_path / "out"
    assert main(["restore", str(folder), "--out", str(out), "--restorer", "supir_v0F", "--checkpoint", str(ckpt),
                 "--level", "sr2", "--steps", str(STEPS), "--min-short-edge", "64", "--restoration-scale", "4",
                 "--s-stage2", "0.9", "--cfg-scale", "3", "--no-linear-cfg", "--linear-control-scale",
                 "--control-scale-start", "0.5", "--color-fix", "AdaIn", "--prompt", "a cat, ", "--pos-prompt",
                 "sharp", "--seed", "3", "--quiet"]) == 0
    expected = cldm_family.SUPIRRestorerSettings.preset(
        "v0F", steps=STEPS, min_size=64, restoration_scale=4.0, control_scale=0.9, cfg_scale=3.0,
        use_linear_cfg=False, use_linear_control_scale=True, control_scale_start=0.5, color_fix="adain",
        prompt="a cat, ", a_prompt="sharp", checkpoint=str(ckpt))
    assert seen == [expected]
    lq = jnp.asarray(load_image(folder / "img0.png"))[None]
    direct = np.asarray(P.SUPIRPipeline(model, params, expected)(lq, DEG, jax.random.key(3), sample_ids=[0]))[0]
    restored = load_image(out / "img0.png")
    assert restored.shape == (*CLEAN, 3)
    assert np.abs(restored - direct).max() <= 0.5 / 255 + 1e-4


def test_latent_tile_option_is_converted_to_latent_pixels(tiny, monkeypatch):
    """``--latent-tile`` is in image pixels: 64 → 32 latent pixels at the stand-in's VAE factor 2, the stride half
    the tile unless given; pixels that do not divide by the factor are refused."""
    ckpt, model, params = tiny
    monkeypatch.setattr(checkpoints, "load", lambda path, dtype=None: (model, params))
    def pipeline(**overrides):
        return cldm_family.supir_pipeline(get("supir_v0Q").configure(checkpoint=str(ckpt), **overrides).settings)

    settings = pipeline(latent_tile=64).settings
    assert (settings.tile_size, settings.tile_stride) == (32, 16)
    assert pipeline(latent_tile=64, latent_tile_stride=24).settings.tile_stride == 12
    with pytest.raises(JaxirInputError, match="multiples of the VAE factor 2"):
        pipeline(latent_tile=63)
