"""SUPIR (jaxir.models.supir), the restore-EDM sampler (jaxir.diffusion.restore_edm) and the key map
(checkpoints_conversion.supir_keys).

Reference: the ``supir`` fixture, made by the original code (Fanghua-Yu/SUPIR at commit bda91af: ``SUPIR_v0.py``
``GLVControl``/``LightGLVUNet``/``ZeroSFT``/``ZeroCrossAttn``, sgm's ``DiscreteDenoiserWithControl`` and
``RestoreEDMSampler``) with seeded float32 weights, regenerated here from the stored keys, shapes and seed (recipe in
``shared/fixtures/README.md``). The fixture holds the diffusion part only; the SDXL VAE (with SUPIR's
``denoise_encoder``) and the two CLIP text towers of the converted checkpoint are tiny seeded stand-ins (written in
the sgm layout, ``conditioner.embedders.*``), so that the whole ``python -m checkpoints_conversion supir`` →
``jaxir.load`` path runs. Errors are max |ours − reference| / max |reference|.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from helpers import FIXTURES as SHARED_FIXTURES
from helpers import needs_fixtures
from checkpoints_conversion import supir_keys
from checkpoints_conversion.__main__ import main as convert_main
from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.keymap import apply_rules, strip_prefix
from jaxir.checkpoints import load
from jaxir.diffusion import restore_edm
from jaxir.diffusion.schedule import sigma_to_timestep
from jaxir.models import supir
from jaxir.models.text import TextEncoderConfig
from jaxir.models.unet import UNetConfig
from jaxir.models.vae import VAEConfig
from jaxir.models.vae import param_shapes as vae_param_shapes
from jaxir.pipelines import supir as pipeline

pytestmark = pytest.mark.slow   # compiles whole models or runs training / pipelines

FIXTURES = SHARED_FIXTURES / "supir"
NPZ, YAML = FIXTURES / "supir.npz", FIXTURES / "supir_tiny.yaml"
needs_fixture = needs_fixtures("supir", "supir.npz")
TOL = 1e-5
STAND_IN_SEED = 7      # the VAE / text-encoder stand-ins (not part of the fixture)


def rel_err(ours, ref) -> float:
    ref = np.asarray(ref)
    return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


def ulps(ours, ref) -> int:
    """Largest distance in float32 units in the last place (positive finite values)."""
    a, b = np.asarray(ours, np.float32).view(np.int32), np.asarray(ref, np.float32).view(np.int32)
    return int(np.abs(a.astype(np.int64) - b).max())


@functools.cache
def fixture_arrays() -> dict:
    return dict(np.load(NPZ))


def seeded(keys, shapes, seed: int) -> dict[str, np.ndarray]:
    """The fixture README's recipe (stripformer section): one random stream over the keys in order."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in zip(keys, shapes, strict=True):
        if len(shape) > 1:
            w = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        elif key.endswith("weight"):
            w = 1 + 0.1 * rng.standard_normal(shape)
        else:
            w = 0.1 * rng.standard_normal(shape)
        state[key] = np.asarray(w, np.float32)
    return state


@functools.cache
def _fixture_state(name: str) -> tuple[tuple[str, np.ndarray], ...]:
    a = fixture_arrays()
    return tuple(seeded(a[f"keys_{name}"].tolist(), json.loads(str(a[f"shapes_{name}"])), int(a["seed"])).items())


def network_state() -> dict[str, np.ndarray]:
    """``ControlWrapper``'s state dict (``diffusion_model.*``, ``control_model.*``), a fresh dict per call."""
    return dict(_fixture_state("model"))


@functools.cache
def diffusion_config() -> supir.SUPIRDiffusionConfig:
    yaml = pytest.importorskip("yaml")
    return supir.SUPIRDiffusionConfig.from_options(yaml.safe_load(YAML.read_text())["model"]["params"])


def sigma_table(config: supir.SUPIRDiffusionConfig) -> np.ndarray:
    return restore_edm.legacy_ddpm_sigmas(config.num_timesteps, config.linear_start, config.linear_end)


def sampling_options() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(YAML.read_text())["sampling"]


@functools.cache
def tiny_config() -> supir.SUPIRConfig:
    """The fixture's diffusion network with a tiny VAE and text towers whose sizes fit it: CLIP-L stand-in (32 wide,
    hidden state 1 of 2, no final norm) + bigG stand-in (64 wide, pooled and projected to 16) → context 96, and
    16 + 6 size embeddings of 4 → adm 40."""
    vae = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=64, scale_factor=0.13025)
    clip_l = TextEncoderConfig(vocab_size=1000, width=32, heads=2, layers=2, act="quick_gelu", output_layer=1)
    clip_g = TextEncoderConfig(vocab_size=1000, width=64, heads=4, layers=2, act="gelu", output_layer=1, pooled=True,
                               projection_dim=16)
    return supir.SUPIRConfig(diffusion_config(), vae, clip_l, clip_g, size_embed_dim=4)


# ---- the stand-ins, written in the sgm layout ------------------------------------------------------------------------

def _flat(tree) -> dict[str, tuple[int, ...]]:
    return {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(tree).items()}


def _torch_shape(path: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch tensor shape of a flax leaf: conv (O, I, kH, kW), linear (O, I), the rest as they are."""
    if path.endswith("/kernel") and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if path.endswith("/kernel") and len(shape) == 2:
        return shape[::-1]
    return shape


def vae_key_shapes(config: VAEConfig) -> dict[str, tuple[int, ...]]:
    """The LDM ``AutoencoderKL`` names (``encoder.down.0.block.1.conv1.weight``; jaxir's paths mirror them)."""
    out = {}
    for path, shape in _flat(vae_param_shapes(config)).items():
        key = re.sub(r"(?<!mid/)\b(down|up|block|attn)_(\d+)", r"\1.\2", path)
        key = re.sub(r"/(kernel|scale)$", "/weight", key).replace("/", ".")
        out[key] = _torch_shape(path, shape)
    return out


def text_key_shapes(config: TextEncoderConfig, style: str) -> dict[str, tuple[int, ...]]:
    """open_clip names (``transformer.resblocks.0.attn.in_proj_weight``), or transformers' CLIPTextModel names
    (``text_model.encoder.layers.0.self_attn.q_proj.weight``); every block and the final norm, as released files
    hold them whether the configured output uses them or not."""
    w, out = config.width, {}
    if style == "open_clip":
        out = {"token_embedding.weight": (config.vocab_size, w), "positional_embedding": (config.context_length, w),
               "ln_final.weight": (w,), "ln_final.bias": (w,), "text_projection": (w, config.projection_dim),
               "logit_scale": ()}
        for i in range(config.layers):
            b = f"transformer.resblocks.{i}."
            out.update({b + "ln_1.weight": (w,), b + "ln_1.bias": (w,), b + "attn.in_proj_weight": (3 * w, w),
                        b + "attn.in_proj_bias": (3 * w,), b + "attn.out_proj.weight": (w, w),
                        b + "attn.out_proj.bias": (w,), b + "ln_2.weight": (w,), b + "ln_2.bias": (w,),
                        b + "mlp.c_fc.weight": (4 * w, w), b + "mlp.c_fc.bias": (4 * w,),
                        b + "mlp.c_proj.weight": (w, 4 * w), b + "mlp.c_proj.bias": (w,)})
        return out
    t = "text_model."
    out = {t + "embeddings.token_embedding.weight": (config.vocab_size, w),
           t + "embeddings.position_embedding.weight": (config.context_length, w),
           t + "final_layer_norm.weight": (w,), t + "final_layer_norm.bias": (w,)}
    for i in range(config.layers):
        b = f"{t}encoder.layers.{i}."
        for name, shape in (("layer_norm1", (w,)), ("layer_norm2", (w,)), ("self_attn.q_proj", (w, w)),
                            ("self_attn.k_proj", (w, w)), ("self_attn.v_proj", (w, w)),
                            ("self_attn.out_proj", (w, w)), ("mlp.fc1", (4 * w, w)), ("mlp.fc2", (w, 4 * w))):
            out[f"{b}{name}.weight"] = shape
            out[f"{b}{name}.bias"] = shape[:1]
    return out


@functools.cache
def _source_files_state(config: supir.SUPIRConfig) -> tuple[dict, dict]:
    """``(sdxl, supir)`` state dicts as the released files split them: SDXL holds the UNet without
    ``project_modules``, the VAE and both text towers; the SUPIR file holds GLVControl, the connectors and
    ``denoise_encoder`` (and, like sgm checkpoints, the denoiser's σ table)."""
    network = {f"model.{k}": v for k, v in network_state().items()}
    stand_in = {f"first_stage_model.{k}": s for k, s in vae_key_shapes(config.vae).items()}
    stand_in.update({f"first_stage_model.denoise_encoder.{k[len('encoder.'):]}": s
                     for k, s in vae_key_shapes(config.vae).items() if k.startswith("encoder.")})
    stand_in.update({supir_keys.CLIP_L_PREFIX + k: s for k, s in text_key_shapes(config.clip_l, "hf").items()})
    stand_in.update({supir_keys.CLIP_G_PREFIX + k: s for k, s in text_key_shapes(config.clip_g, "open_clip").items()})
    stand_in = seeded(list(stand_in), list(stand_in.values()), STAND_IN_SEED)
    stand_in[supir_keys.CLIP_L_PREFIX + "text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
    merged = {**network, **stand_in}
    is_supir = lambda k: k.startswith(("model.control_model.", "model.diffusion_model.project_modules.",  # noqa: E731
                                       "first_stage_model.denoise_encoder."))
    sdxl = {k: v for k, v in merged.items() if not is_supir(k)}
    supir_state = {k: v for k, v in merged.items() if is_supir(k)}
    supir_state["denoiser.sigmas"] = sigma_table(config.diffusion)
    return sdxl, supir_state


def source_files_state() -> tuple[dict, dict]:
    sdxl, supir_state = _source_files_state(tiny_config())
    return dict(sdxl), dict(supir_state)


def write_sources(root: Path, sdxl: dict, supir_state: dict) -> tuple[Path, Path]:
    """Both files as ``.safetensors`` (reading ``.ckpt`` files is the shared reader's business, tested elsewhere;
    importing PyTorch would cost seconds here)."""
    from safetensors.numpy import save_file

    save_file(sdxl, str(root / "sdxl_tiny.safetensors"))
    save_file(supir_state, str(root / "supir_tiny.safetensors"))
    return root / "sdxl_tiny.safetensors", root / "supir_tiny.safetensors"


@pytest.fixture(scope="module", autouse=True)
def _network_shapes_traced_once():
    """Every conversion traces the whole network for its parameter shapes (seconds on a small CPU): trace it once
    per config in this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(supir, "network_param_shapes", functools.cache(supir.network_param_shapes))
        yield


def write_option_file(root: Path) -> Path:
    """:func:`tiny_config` as a SUPIR option file: the fixture's ``supir_tiny.yaml`` plus the VAE
    (``first_stage_config``) and SDXL's conditioner whose towers are local configs, as SUPIR's code would load
    stand-ins (a transformers ``config.json`` folder as the CLIP-L ``version``, an open_clip model-config JSON as
    the bigG ``arch``)."""
    yaml = pytest.importorskip("yaml")
    (root / "clip_l").mkdir()
    (root / "clip_l" / "config.json").write_text(json.dumps({
        "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}))
    (root / "bigg.json").write_text(json.dumps({"embed_dim": 16, "text_cfg": {
        "context_length": 77, "vocab_size": 1000, "width": 64, "heads": 4, "layers": 2}}))
    options = yaml.safe_load(YAML.read_text())
    embedder = "sgm.modules.encoders.modules."
    options["model"]["params"].update(scale_factor=0.13025, conditioner_config={"params": {"emb_models": [
        {"input_key": "txt", "target": embedder + "FrozenCLIPEmbedder",
         "params": {"version": "clip_l", "layer": "hidden", "layer_idx": 1}},
        {"input_key": "txt", "target": embedder + "FrozenOpenCLIPEmbedder2",
         "params": {"arch": "bigg.json", "layer": "penultimate", "always_return_pooled": True, "legacy": False}},
        *({"input_key": key, "target": embedder + "ConcatTimestepEmbedderND", "params": {"outdim": 4}}
          for key in ("original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple"))]}},
        first_stage_config={"params": {"embed_dim": 4, "ddconfig": {
            "double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
            "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}})
    path = root / "supir_tiny_full.yaml"
    path.write_text(yaml.safe_dump(options))
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The seeded weights written as an SDXL + SUPIR pair and converted by the command line with the tiny option
    file (:func:`write_option_file`), loaded with ``jaxir.load``."""
    if not NPZ.is_file():
        pytest.skip(f"SUPIR fixture not found at {FIXTURES}")
    root = tmp_path_factory.mktemp("supir")
    sdxl, supir_file = write_sources(root, *source_files_state())
    option_file = write_option_file(root)
    assert convert_main(["supir", "--sdxl", str(sdxl), "--supir", str(supir_file), "--config", str(option_file),
                         "--out", str(root / "ckpt")]) == 0
    model, params = load(root / "ckpt")
    assert model.config == tiny_config()
    return root / "ckpt", model, params


def fixture_cond(prefix: str = "") -> dict:
    a = fixture_arrays()
    return {"crossattn": a[f"{prefix}context"], "vector": a[f"{prefix}y"], "control": a["control"]}


# ---- layout ----------------------------------------------------------------------------------------------------------

def supir_project_modules(mc: int, project_channel_scale: float = 2.0) -> list[supir.ProjectSpec]:
    """``LightGLVUNet(mode="XL-base").project_modules`` as SUPIR builds them, its lists written for model_channels
    ``mc`` (at 320 they are the hard-coded ones): a ZeroSFT per control feature, then a ZeroCrossAttn inserted at 6,
    then at 3."""
    cond_output = [mc] * 4 + [2 * mc] * 3 + [4 * mc] * 3
    project = [int(c * project_channel_scale) for c in [mc // 2] * 4 + [mc] * 3 + [2 * mc] * 3]
    concat = [mc] * 2 + [2 * mc] * 3 + [4 * mc] * 4 + [0]
    modules = [supir.ProjectSpec("sft", i, project[i], cond_output[i], concat[i]) for i in range(10)]
    for i in (6, 3):
        modules.insert(i, supir.ProjectSpec("cross_attn", i, cond_output[i], concat[i]))
    return modules


def test_channel_lists_equal_supir_xl_base():
    """The lists derived from the SDXL config (model_channels 320) are SUPIR's hard-coded XL-base ones
    (``cond_output_channels``, ``project_channels``, ``concat_channels``, ZeroCrossAttn at 6 then 3)."""
    config = supir.SUPIRDiffusionConfig.supir_v0()
    assert list(config.projects) == supir_project_modules(320)
    assert config.num_controls == 10 and [i for i, s in enumerate(config.projects) if s.kind == "cross_attn"] == [3, 7]
    assert [s.norm_nc for s in config.projects if s.kind == "sft"] == [320] * 4 + [640] * 3 + [1280] * 3
    assert [s.label_nc for s in config.projects if s.kind == "sft"] == [320] * 4 + [640] * 3 + [1280] * 3
    assert [s.concat_channels for s in config.projects if s.kind == "sft"] == [320] * 2 + [640] * 3 + [1280] * 4 + [0]
    assert list(supir.project_layout(UNetConfig.sdxl_base(), 1.0)) == supir_project_modules(320, 1.0)


@needs_fixture
def test_fixture_config():
    """``supir_tiny.yaml`` through ``SUPIRDiffusionConfig.from_options``: the README's lists at model_channels 64,
    and the parameter tree has exactly the fixture's tensors' shapes, in count."""
    config = diffusion_config()
    assert config.unet == config.control and config.unet.model_channels == 64 and config.project_channel_scale == 2
    assert list(config.projects) == supir_project_modules(64)
    shapes = supir.network_param_shapes(config)
    assert len(jax.tree.leaves(shapes)) == len(fixture_arrays()["keys_model"])


# ---- network parity --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def network_outputs(converted):
    """GLVControl's features of the fixture inputs, and LightGLVUNet's output on the recorded features at control
    scale 1 and 0.5, through what ``jaxir.load`` returns (``model.control_features``, ``model.unet``), traced
    into one jitted program (one compilation: the slow part on a CPU)."""
    _, model, params = converted
    a = fixture_arrays()

    @jax.jit   # the loaded model's plain calls, traced into one program
    def run(params, x, timesteps, cond, control, control_scale):
        features = model.control_features(params, x, timesteps, cond)
        return features, model.unet(params, x, timesteps, cond, control, control_scale)

    control = [a[f"control_feat_{i}"] for i in range(10)]
    with jax.default_matmul_precision("highest"):
        features, out = run(params, a["x_t"], a["timesteps"], fixture_cond(), control, jnp.float32(1.0))
        _, out_cs05 = run(params, a["x_t"], a["timesteps"], fixture_cond(), control, jnp.float32(0.5))
    return features, {"unet_out": out, "unet_out_cs05": out_cs05}


@needs_fixture
def test_glvcontrol_features(network_outputs):
    """GLVControl's 10 features (9 input blocks + middle, hint added after ``input_blocks.0``): errors ≤ 2e-6
    (reached 1.9e-6; tolerance 1e-5)."""
    a = fixture_arrays()
    features, _ = network_outputs
    assert len(features) == 10
    for i, feature in enumerate(features):
        err = rel_err(feature, a[f"control_feat_{i}"])
        print(f"control_feat_{i} {feature.shape}: {err:.2e}")
        assert feature.shape == a[f"control_feat_{i}"].shape and err < TOL


@needs_fixture
@pytest.mark.parametrize("name", ["unet_out", "unet_out_cs05"])
def test_lightglvunet_output(network_outputs, name):
    """LightGLVUNet on the recorded control features at control scale 1 and 0.5: errors 9.5e-7 and 1.6e-6
    (tolerance 1e-5)."""
    err = rel_err(network_outputs[1][name], fixture_arrays()[name])
    print(f"{name}: {err:.2e}")
    assert err < TOL


def _standalone(module, name: str, *inputs):
    """A connector's own seeded weights (fixture keys without the ``project_modules.{k}.`` prefix) through the
    converter's rules."""
    a = fixture_arrays()
    state = {f"project_modules.0.{k}": v for k, v in _fixture_state(name)}
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs))["params"]
    params = apply_rules(state, supir_keys.project_module_rules(), {"project_modules_0": shapes}, what=name)
    assert len(traverse_util.flatten_dict(params)) == len(a[f"keys_{name}"])
    return params["project_modules_0"]


@needs_fixture
def test_zerosft():
    """ZeroSFT (the shape of ``project_modules[4]``) at control scale 1 and 0.7: errors 3.2e-7 and 2.8e-7
    (tolerance 1e-5)."""
    a = fixture_arrays()
    label_nc, norm_nc, concat = a["zerosft_dims"].tolist()
    assert diffusion_config().projects[4] == supir.ProjectSpec("sft", 3, label_nc, norm_nc, concat)
    module = supir.ZeroSFT(norm_nc, concat)
    inputs = a["zerosft_c"], a["zerosft_h"], a["zerosft_h_ori"]
    params = _standalone(module, "zerosft", *inputs)
    apply = jax.jit(module.apply)
    for scale, name in ((1.0, "zerosft_out"), (0.7, "zerosft_out_cs07")):
        err = rel_err(apply({"params": params}, *inputs, jnp.float32(scale)), a[name])
        print(f"{name}: {err:.2e}")
        assert err < TOL


@needs_fixture
def test_zerocrossattn():
    """ZeroCrossAttn (the shape of ``project_modules[7]``: query_dim // 64 heads) at control scale 1 and 0.7:
    errors 2.2e-7 and 1.6e-7 (tolerance 1e-5)."""
    a = fixture_arrays()
    context_dim, query_dim, heads = a["zerocrossattn_dims"].tolist()
    assert diffusion_config().projects[7] == supir.ProjectSpec("cross_attn", 6, context_dim, query_dim)
    assert heads == query_dim // supir.CROSS_ATTN_HEAD_DIM
    module = supir.ZeroCrossAttn()
    inputs = a["zerocrossattn_context"], a["zerocrossattn_x"]
    params = _standalone(module, "zerocrossattn", *inputs)
    apply = jax.jit(module.apply)
    for scale, name in ((1.0, "zerocrossattn_out"), (0.7, "zerocrossattn_out_cs07")):
        err = rel_err(apply({"params": params}, *inputs, jnp.float32(scale)), a[name])
        print(f"{name}: {err:.2e}")
        assert err < TOL


# ---- denoiser and sampler --------------------------------------------------------------------------------------------

@needs_fixture
def test_sigma_tables():
    """LegacyDDPM σ's: the 1000-entry snapping table and the 8-step schedule equal the reference to 1 ulp (the
    reference took ``** 0.5`` of the float32 ratio with torch's pow; we take the square root)."""
    a = fixture_arrays()
    table = sigma_table(diffusion_config())
    np.testing.assert_array_equal(table, pipeline.sigma_table(supir.SUPIR(tiny_config())))
    assert table.dtype == np.float32 and table.shape == (1000,) and ulps(table, a["denoiser_sigmas"]) <= 1
    sigmas = restore_edm.legacy_ddpm_sigmas(1000, num_steps=8)
    assert sigmas[-1] == 0 and ulps(sigmas, a["sampler_sigmas"]) <= 1


@needs_fixture
def test_discrete_denoiser(converted):
    """``DiscreteDenoiserWithControl`` at off-grid σ (2.5, 0.3), control scale 0.8: snapped σ and timestep exact
    (σ to 1 ulp, see test_sigma_tables), output error 7.4e-7 (tolerance 1e-5)."""
    _, model, params = converted
    a = fixture_arrays()
    table = pipeline.sigma_table(model)
    index = np.asarray(sigma_to_timestep(a["den_sigma"], table))
    np.testing.assert_array_equal(index, a["den_timestep"])
    assert ulps(table[index], a["den_sigma_snapped"]) <= 1
    with jax.default_matmul_precision("highest"):
        out = jax.jit(lambda x, sigma, cs: pipeline.supir_denoiser(model, params, fixture_cond(), lambda step: cs)(
            x, sigma, 0))(a["den_x"], a["den_sigma"], a["den_control_scale"])
    err = rel_err(out, a["den_out"])
    print(f"den_out: {err:.2e}")
    assert err < TOL


def fixture_settings() -> restore_edm.RestoreEDMSettings:
    s = sampling_options()
    return restore_edm.RestoreEDMSettings.from_batchify_sample(
        restoration_scale=s["restoration_scale"], s_churn=s["s_churn"], s_noise=s["s_noise"],
        cfg_scale=s["cfg_scale"], control_scale=s["control_scale"], use_linear_CFG=s["use_linear_CFG"],
        use_linear_control_scale=s["use_linear_control_scale"], cfg_scale_start=s["cfg_scale_start"],
        control_scale_start=s["control_scale_start"])


@pytest.fixture(scope="module")
def sampler_runs(converted):
    """``jaxir.pipelines.supir.sample_restore_edm`` with the fixture's inputs, then with new noise, a new σ schedule
    and new settings, counting how often the jitted sampler is traced."""
    _, model, params = converted
    a = fixture_arrays()
    traces = []
    original = pipeline.sample_euler

    def counting(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    assert sampling_options()["num_steps"] == 8
    sigmas = restore_edm.legacy_ddpm_sigmas(diffusion_config().num_timesteps, num_steps=8)
    runs = {}
    with pytest.MonkeyPatch.context() as mp, jax.default_matmul_precision("highest"):
        mp.setattr(pipeline, "sample_euler", counting)
        sample = functools.partial(pipeline.sample_restore_edm, model, params, cond=fixture_cond(),
                                   uncond=fixture_cond("neg_"), trajectory=True)
        runs["fixture"] = sample(a["sampler_noise_init"], sigmas, a["sampler_noise"], a["x_center"],
                                 settings=fixture_settings())
        # new noise, a new schedule of the same length and new settings, some of them ints (batchify_sample's
        # defaults and YAML files give ints: s_churn 5, cfg_scale 7)
        noise = np.random.default_rng(3).standard_normal(a["sampler_noise"].shape).astype(np.float32)
        karras = np.append(np.geomspace(10.0, 0.1, 8), 0).astype(np.float32)
        other = restore_edm.RestoreEDMSettings.from_batchify_sample(
            restoration_scale=2.5, s_churn=2, s_noise=1.0, cfg_scale=7, control_scale=1)
        runs["changed"] = sample(a["sampler_noise_init"], karras, noise, a["x_center"], settings=other)
        runs["changed_inputs"] = karras, noise
    return runs, len(traces)


@needs_fixture
def test_restore_edm_sampler(sampler_runs):
    """The whole 8-step RestoreEDM run (churn 5, restoration guidance 4 towards ``x_center``, linear CFG 1 → 4 and
    control scale 1 → 0.9): σ̂ = σ(1 + γ) and the guidance and control scales of :mod:`jaxir.diffusion.restore_edm`
    per step to 1e-6 relative, snapped timesteps exact; latent after every step ≤ 1.3e-6, the result 1.2e-6
    (tolerance 1e-5)."""
    runs, _ = sampler_runs
    a = fixture_arrays()
    out, record = runs["fixture"]
    s = fixture_settings()
    sigmas = restore_edm.legacy_ddpm_sigmas(diffusion_config().num_timesteps, num_steps=8)
    sigma_hat = sigmas[:-1] * np.float32(1 + min(s.s_churn / 8, 2 ** 0.5 - 1))
    np.testing.assert_allclose(sigma_hat, a["sampler_sigma_hat"], rtol=1e-6)
    table = sigma_table(diffusion_config())
    np.testing.assert_array_equal(np.asarray(sigma_to_timestep(sigma_hat, table)), a["sampler_timestep"])
    np.testing.assert_allclose(restore_edm.cfg_scale(s)(sigma_hat, None), a["sampler_cfg_scale"], rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(restore_edm.control_scale(s, sigmas, np.arange(8)), a["sampler_control_scale"],
                               rtol=1e-6)
    assert a["sampler_cfg_scale"][0] < 0          # LinearCFG extrapolates beyond σ_max at the churned first step
    for i in range(8):
        err = rel_err(record.x[i], a["sampler_x_steps"][i])
        print(f"sampler step {i} (σ̂ {a['sampler_sigma_hat'][i]:.4f}): {err:.2e}")
        assert err < TOL
    err = rel_err(out, a["sampler_out"])
    print(f"sampler_out: {err:.2e}")
    assert err < TOL


@needs_fixture
def test_sampler_compiles_once(sampler_runs):
    """New noise, a new σ schedule (same length) and new settings (ints among them) reuse the compiled sampler: one
    trace for both runs, and the second run did take the new values."""
    runs, traces = sampler_runs
    assert traces == 1
    (out, record), (base, _) = runs["changed"], runs["fixture"]
    assert np.isfinite(np.asarray(out)).all() and np.abs(np.asarray(out) - np.asarray(base)).max() > 1e-2
    # the first step by hand with the new σ's, churn and s_noise: churn to σ̂₀, then the Euler step
    karras, noise = runs["changed_inputs"]
    sigma_hat = float(karras[0]) * (1 + 2 / 8)
    x_hat = fixture_arrays()["sampler_noise_init"] * np.sqrt(1 + float(karras[0]) ** 2) + noise[0] * np.sqrt(
        sigma_hat ** 2 - float(karras[0]) ** 2)
    first = x_hat + (x_hat - np.asarray(record.denoised[0])) / sigma_hat * (float(karras[1]) - sigma_hat)
    assert rel_err(record.x[0], first) < TOL


# ---- conversion --------------------------------------------------------------------------------------------------

@needs_fixture
def test_round_trip(converted):
    """``jaxir.load`` gives back the config and the tensors: the network part is exactly the fixture's tensors, one
    parameter each (the parity tests above run on these loaded parameters); spot checks of every part's layout."""
    path, model, loaded = converted
    assert isinstance(model, supir.SUPIR) and model.config == tiny_config()
    assert json.loads((path / "config.json").read_text())["kind"] == "supir"
    assert set(json.loads((path / "provenance.json").read_text())["sources"]) == {"sdxl", "supir", "config"}
    assert set(loaded) == {"model", "first_stage_model", "clip_l", "clip_g"}
    net = network_state()   # every fixture tensor fills one parameter, and every parameter is filled
    assert len(jax.tree.leaves(loaded["model"])) == len(net)
    want = supir.network_param_shapes(diffusion_config())
    assert jax.tree.map(np.shape, loaded["model"]) == jax.tree.map(lambda s: s.shape, want)
    sdxl, supir_state = source_files_state()
    src = {**sdxl, **supir_state}
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(loaded).items()}
    conv = lambda w: w.transpose(2, 3, 1, 0)     # noqa: E731  (O, I, kH, kW) → (kH, kW, I, O)
    dense = lambda w: w.reshape(w.shape[:2]).T   # noqa: E731  (O, I) or a 1×1 conv → (I, O)
    pairs = {
        "model/control_model/input_hint_block_0/kernel": conv(src["model.control_model.input_hint_block.0.weight"]),
        "model/diffusion_model/project_modules_3/attn/to_k/kernel":
            dense(src["model.diffusion_model.project_modules.3.attn.to_k.weight"]),
        "model/diffusion_model/project_modules_4/zero_conv/kernel":
            dense(src["model.diffusion_model.project_modules.4.zero_conv.weight"]),
        "model/diffusion_model/project_modules_11/param_free_norm/scale":
            src["model.diffusion_model.project_modules.11.param_free_norm.weight"],
        "model/diffusion_model/output_blocks_8_0/skip_connection/kernel":
            dense(src["model.diffusion_model.output_blocks.8.0.skip_connection.weight"]),
        "first_stage_model/denoise_encoder/conv_in/kernel":
            conv(src["first_stage_model.denoise_encoder.conv_in.weight"]),
        "first_stage_model/decoder/up_1/upsample/conv/bias": src["first_stage_model.decoder.up.1.upsample.conv.bias"],
        "clip_g/text_projection": src[supir_keys.CLIP_G_PREFIX + "text_projection"],
    }
    for path, want in pairs.items():
        np.testing.assert_array_equal(np.asarray(flat[path]), want, err_msg=path)
    in_proj = np.asarray(flat["clip_l/transformer/resblocks_0/attn/in_proj/kernel"])    # [q | k | v] columns
    np.testing.assert_array_equal(in_proj[:, 32:64], src[supir_keys.CLIP_L_PREFIX + "text_model.encoder.layers.0."
                                                          "self_attn.k_proj.weight"].T)
    # the unused parts of the text towers are not carried: CLIP-L's last block and final norm, bigG's last block
    assert set(loaded["clip_l"]["transformer"]) == {"resblocks_0"} and "ln_final" not in loaded["clip_l"]
    assert set(loaded["clip_g"]["transformer"]) == {"resblocks_0", "resblocks_1"} and "ln_final" in loaded["clip_g"]


@needs_fixture
@pytest.mark.parametrize("edit, match", [
    ("extra", r"unused source tensors: diffusion_model\.project_modules\.12\.zero_conv\.bias \(4,\)"),
    ("missing", r"parameters not filled: control_model/input_hint_block_0/kernel \(3, 3, 4, 64\)"),
    ("shape", r"shape mismatch: diffusion_model\.project_modules\.7\.attn\.to_k\.weight \(256, 64\) → "
              r"diffusion_model/project_modules_7/attn/to_k/kernel \(128, 256\)"),
])
def test_network_conversion_is_strict(edit, match):
    """The released layout (``model.diffusion_model.*``, ``model.control_model.*``): an extra key, a missing key
    and a wrong shape each stop the conversion with one line naming the key (and both shapes)."""
    state = {f"model.{k}": v for k, v in network_state().items()}
    if edit == "extra":
        state["model.diffusion_model.project_modules.12.zero_conv.bias"] = np.zeros(4, np.float32)
    elif edit == "missing":
        del state["model.control_model.input_hint_block.0.weight"]
    else:
        state["model.diffusion_model.project_modules.7.attn.to_k.weight"] = np.zeros((256, 64), np.float32)
    with pytest.raises(ConversionError, match=match) as info:
        supir_keys.convert_network(strip_prefix(state, supir_keys.NETWORK_PREFIX), diffusion_config())
    assert "\n" not in str(info.value)


@needs_fixture
def test_cli_errors_are_one_line(tmp_path, capsys):
    """Through the command line: a stray tensor in the SUPIR file, and the two files swapped."""
    sdxl, supir_state = source_files_state()
    supir_state["model.diffusion_model.project_modules.3.zero_conv.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    sdxl_file, supir_file = write_sources(tmp_path, sdxl, supir_state)
    config = ["--config", str(write_option_file(tmp_path))]
    args = ["supir", "--sdxl", str(sdxl_file), "--supir", str(supir_file)]
    assert convert_main([*args, *config, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "project_modules.3.zero_conv.weight (64, 64, 1, 1)" in err
    assert not (tmp_path / "out").exists()
    swapped = ["supir", "--sdxl", args[4], "--supir", args[2], *config, "--out", str(tmp_path / "out2")]
    assert convert_main(swapped) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not an SDXL checkpoint" in err
