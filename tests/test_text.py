"""CLIP tokenizer and text encoder: DiffBIR's OpenCLIP fixture, parity with transformers' CLIPTokenizer and
CLIPTextModel (random weights), open_clip's pre-tokenisation pattern, and strict checkpoint conversion."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from helpers import DIFFBIR_FIXTURES, needs_fixtures
from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.text_keys import convert_text_encoder
from jaxir.errors import JaxirInputError
from jaxir.models import text
from jaxir.models.text import TextEncoderConfig, TextTransformer
from jaxir.models.text import param_shapes as text_param_shapes
from jaxir.models.tokenizer import EOT, SOT, CLIPTokenizer, pre_tokenize, vocabulary

DIFFBIR = DIFFBIR_FIXTURES
needs_diffbir = needs_fixtures("diffbir")
PROMPTS = ["", "a photo of an astronaut, high quality"]   # the prompts of fixtures.npz (see its README)

# Strings that exercise the cleaning, the pre-tokenisation classes and the BPE (no HTML entities: transformers'
# tokenizer does not unescape them; see jaxir.models.tokenizer).
TRICKY = [
    "Hello, World!!! It's 2024 -- isn't it? I'll 'quote' the dog's bone",
    "  leading\tand\ntrailing   whitespace  ",
    "café naïve façade Ωμέγα Привет мир 日本語のテキスト 한국어 e\u0301",
    "emoji 🚀🔥 👍🏽 and symbols ©®™ € $5.99 ½ Ⅻ ٣٤ ²",
    "under_score x86-64 1e-5 3.14159 !!'s ''s 'RE",
    "ß ﬁ İstanbul ǅ nbsp\u00a0emsp\u2003ideo\u3000end",
    "a" * 200,
]


@functools.cache
def tokenizer(pad_token: int = 0) -> CLIPTokenizer:
    return CLIPTokenizer(pad_token=pad_token)


# --- tokenizer ---------------------------------------------------------------------------------------------------

@needs_diffbir
def test_tokenizer_reproduces_diffbir_tokens():
    np.testing.assert_array_equal(tokenizer()(PROMPTS), np.load(DIFFBIR / "fixtures.npz")["tokens"])


def test_vocabulary_layout():
    encoder, ranks = vocabulary()
    assert len(encoder) == 49408 and len(ranks) == 48894
    assert encoder["!"] == 0 and encoder[chr(256)] == 188          # first printable byte; byte 0x00
    assert encoder["a</w>"] == 320 and encoder["in"] == 512         # 256 + ord("a") − 33; the first merge
    assert encoder["<start_of_text>"] == SOT and encoder["<end_of_text>"] == EOT


def test_pre_tokenize_matches_open_clip_pattern():
    regex = pytest.importorskip("regex")
    pattern = regex.compile(r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
                            r"[^\s\p{L}\p{N}]+", regex.IGNORECASE)
    for s in [*TRICKY, "x<start_of_text>y !<end_of_text> a'sb 're've'm'll'd'x"]:
        s = " ".join(s.split()).lower()
        assert pre_tokenize(s) == pattern.findall(s), s


@pytest.mark.parametrize("text", TRICKY)
def test_tokenizer_matches_transformers(text):
    transformers = pytest.importorskip("transformers")
    encoder, ranks = vocabulary()
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    reference = transformers.CLIPTokenizer(vocab={rename.get(k, k): v for k, v in encoder.items()},
                                           merges=sorted(ranks, key=ranks.get))
    expected = reference(text, padding="max_length", truncation=True, max_length=77)["input_ids"]
    np.testing.assert_array_equal(tokenizer(EOT)(text)[0], expected)


def test_tokenizer_hand_checked():
    tok = tokenizer()
    encoder, _ = vocabulary()
    assert tok.encode("2024") == [encoder[d + "</w>"] for d in "2024"]        # every digit is a word
    assert tok.encode("A  Photo\n") == tok.encode("a photo")
    assert tok.encode("salt &amp;amp; pepper") == tok.encode("salt & pepper")  # unescaped twice, as open_clip
    long = "a very long prompt, " * 40
    row = tok(long)[0]
    assert row.shape == (77,) and row.dtype == np.int32
    assert row[0] == SOT and row[-1] == EOT and list(row[1:-1]) == tok.encode(long)[:75]
    short = tokenizer(EOT)(["a cat", "a cat"])
    np.testing.assert_array_equal(short[:, :4], [[SOT, encoder["a</w>"], encoder["cat</w>"], EOT]] * 2)
    assert (short[:, 4:] == EOT).all() and (tok("a cat")[0, 4:] == 0).all()


def encode(config, params, tokens):
    with jax.default_matmul_precision("highest"):
        hidden, pooled = jax.jit(TextTransformer(config).apply)({"params": params}, tokens)
    return np.asarray(hidden), None if pooled is None else np.asarray(pooled)


# --- encoder vs DiffBIR's FrozenOpenCLIPEmbedder --------------------------------------------------------------------

@functools.cache
def diffbir_state() -> dict:
    from checkpoints_conversion.sources import read_state_dict

    return read_state_dict(DIFFBIR / "sd_tiny.ckpt")


@functools.cache
def diffbir_config() -> TextEncoderConfig:
    yaml = pytest.importorskip("yaml")
    return text.from_open_clip_cfg(yaml.safe_load((DIFFBIR / "cldm_tiny.yaml").read_text())["params"]["clip_cfg"])


@needs_diffbir
def test_encoder_reproduces_diffbir_c_txt():
    config = diffbir_config()
    assert (config.width, config.layers, config.output_layer, config.blocks_used) == (64, 3, "penultimate", 2)
    params = convert_text_encoder(diffbir_state(), config, "sd2")
    fixtures = np.load(DIFFBIR / "fixtures.npz")
    hidden, pooled = encode(config, params, tokenizer()(PROMPTS))
    assert pooled is None
    error = np.abs(np.asarray(hidden) - fixtures["c_txt"]).max()
    assert error < 1e-5, f"max abs error {error:.3g}"


# --- encoder vs transformers' CLIPTextModel ------------------------------------------------------------------------

LAYERS, VOCAB = 3, 1000


def transformers_reference(act: str):
    """A tiny ``CLIPTextModelWithProjection`` with every parameter random (not its near-identity init)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPTextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=256,
                                         num_hidden_layers=LAYERS, num_attention_heads=4, projection_dim=48,
                                         hidden_act=act, bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1,
                                         pad_token_id=VOCAB - 1)
    torch.manual_seed(0)
    model = transformers.CLIPTextModelWithProjection(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / (p.shape[-1] ** 0.5 if "embedding" not in name else 1))
    rng = np.random.default_rng(0)
    tokens = np.full((3, 77), VOCAB - 1, np.int64)          # end-of-text pads, as transformers' tokenizer does
    for row, end in zip(tokens, (5, 40, 76), strict=True):
        row[0], row[1:end] = VOCAB - 2, rng.integers(0, VOCAB - 2, end - 1)
    with torch.no_grad():
        ids = torch.from_numpy(tokens)
        inner = model.text_model(ids, output_hidden_states=True)
        outputs = {"hidden_states": [h.numpy() for h in inner.hidden_states],
                   "last": inner.last_hidden_state.numpy(), "pooled": inner.pooler_output.numpy(),
                   "projected": model(ids).text_embeds.numpy()}
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return state, tokens.astype(np.int32), outputs




def tiny(act: str, **kw) -> TextEncoderConfig:
    return TextEncoderConfig(vocab_size=VOCAB, width=64, heads=4, layers=LAYERS, act=act, **kw)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_encoder_matches_transformers(act):
    state, tokens, want = transformers_reference(act)
    tol = dict(atol=2e-5, rtol=1e-5)

    config = tiny(act, output_layer="last", pooled=True)
    hidden, pooled = encode(config, convert_text_encoder(state, config, "transformers"), tokens)
    np.testing.assert_allclose(hidden, want["last"], **tol)
    np.testing.assert_allclose(pooled, want["pooled"], **tol)

    config = tiny(act, output_layer="last", pooled=True, projection_dim=48)
    _, projected = encode(config, convert_text_encoder(state, config, "transformers"), tokens)
    np.testing.assert_allclose(projected, want["projected"], **tol)

    # SDXL's CLIP ViT-L: a hidden state, no final norm; the checkpoint layout of sgm (position_ids buffer kept, no
    # projection); the last block and ln_final are unused and must not be asked for.
    sdxl = {f"conditioner.embedders.0.transformer.{k}": v for k, v in state.items() if "projection" not in k}
    sdxl["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = np.arange(77)[None]
    config = tiny(act, output_layer=2)
    params = convert_text_encoder(sdxl, config, "sdxl_clip_l")
    assert "ln_final" not in params and set(params["transformer"]) == {"resblocks_0", "resblocks_1"}
    hidden, pooled = encode(config, params, tokens)
    np.testing.assert_allclose(hidden, want["hidden_states"][2], **tol)
    assert pooled is None


def open_clip_layout(state: dict, prefix: str) -> dict:
    """The transformers tensors under open_clip's names (fused in_proj, projection as an (W, E) parameter)."""
    out = {f"{prefix}token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
           f"{prefix}positional_embedding": state["text_model.embeddings.position_embedding.weight"],
           f"{prefix}ln_final.weight": state["text_model.final_layer_norm.weight"],
           f"{prefix}ln_final.bias": state["text_model.final_layer_norm.bias"],
           f"{prefix}text_projection": state["text_projection.weight"].T,
           f"{prefix}logit_scale": np.float32(4.6), f"{prefix}visual.conv1.weight": np.zeros((8, 3, 14, 14))}
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for i in range(LAYERS):
        src, dst = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for a, b in names.items():
            for leaf in ("weight", "bias"):
                out[f"{dst}{b}.{leaf}"] = state[f"{src}{a}.{leaf}"]
        for leaf in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{leaf}"] = np.concatenate([state[f"{src}self_attn.{p}_proj.{leaf}"]
                                                               for p in "qkv"])
    return out


def test_open_clip_layout_sdxl_bigg_outputs():
    """SDXL's OpenCLIP bigG use: penultimate hidden state without final norm, ``ln_final(last)[EOT] @ proj``."""
    state, tokens, want = transformers_reference("gelu")
    config = tiny("gelu", output_layer=LAYERS - 1, pooled=True, projection_dim=48)
    params = convert_text_encoder(open_clip_layout(state, "conditioner.embedders.1.model."), config, "sdxl_bigg")
    hidden, pooled = encode(config, params, tokens)
    np.testing.assert_allclose(hidden, want["hidden_states"][LAYERS - 1], atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(pooled, want["projected"], atol=2e-5, rtol=1e-5)


def test_transformers_5_unprefixed_state():
    """transformers 5 saves ``CLIPTextModel`` without the ``text_model.`` prefix; both spellings convert alike."""
    state, _, _ = transformers_reference("quick_gelu")
    config = tiny("quick_gelu", output_layer="last")
    bare = {k.removeprefix("text_model."): v for k, v in state.items() if "projection" not in k}
    a, b = (convert_text_encoder(s, config, "transformers") for s in (state, bare))
    jax.tree.map(np.testing.assert_array_equal, a, b)


# --- strict conversion ---------------------------------------------------------------------------------------------

@needs_diffbir
@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias"),
     r"parameters not filled: transformer/resblocks_0/attn/in_proj/bias"),
    (lambda s: s.update({"cond_stage_model.model.transformer.resblocks.0.attn.extra": np.zeros(3)}),
     r"unused source tensors: transformer\.resblocks\.0\.attn\.extra"),
    (lambda s: s.update({"cond_stage_model.model.transformer.resblocks.3.ln_1.weight": np.zeros(64)}),
     r"resblocks\.3\.ln_1\.weight \(64,\) \(→ transformer/resblocks_3/ln_1/scale, no such parameter\)"),
    (lambda s: s.update({"cond_stage_model.model.positional_embedding": np.zeros((76, 64), np.float32)}),
     r"shape mismatch: positional_embedding \(76, 64\) → positional_embedding \(77, 64\)"),
])
def test_conversion_is_strict(edit, message):
    state = dict(diffbir_state())
    edit(state)
    with pytest.raises(ConversionError, match=message):
        convert_text_encoder(state, diffbir_config(), "sd2")


@needs_diffbir
def test_conversion_ignores_vision_tower_and_checks_layout():
    state = dict(diffbir_state())
    state["cond_stage_model.model.visual.conv1.weight"] = np.zeros((64, 3, 14, 14), np.float32)  # as SD 2.x
    convert_text_encoder(state, diffbir_config(), "sd2")       # logit_scale, text_projection, block 2: unused
    with pytest.raises(ConversionError, match=r"no tensors under 'conditioner\.embedders\.1\.model\.'"):
        convert_text_encoder(state, diffbir_config(), "sdxl_bigg")
    with pytest.raises(ConversionError, match="unknown text-encoder layout"):
        convert_text_encoder(state, diffbir_config(), "sd3")
    with pytest.raises(ConversionError, match=r"unused source tensors: cond_stage_model\."):
        convert_text_encoder(state, diffbir_config(), "open_clip")    # the LDM prefix is not stripped


def test_incomplete_qkv_is_reported():
    state, _, _ = transformers_reference("gelu")
    del state["text_model.encoder.layers.1.self_attn.k_proj.bias"]
    with pytest.raises(ConversionError, match=r"layers\.1\.self_attn\.q_proj\.bias.*"
                                              r"parameters not filled: transformer/resblocks_1/attn/in_proj/bias"):
        convert_text_encoder(state, tiny("gelu", output_layer="last"), "transformers")


# --- configs -------------------------------------------------------------------------------------------------------

def test_presets_parameter_shapes():
    def shapes(config):
        return text_param_shapes(config)

    vit_h = shapes(text.openclip_vit_h())
    assert len(vit_h["transformer"]) == 23 and "text_projection" not in vit_h      # penultimate: 23 blocks run
    assert vit_h["transformer"]["resblocks_0"]["attn"]["in_proj"]["kernel"].shape == (1024, 3072)
    clip_l = shapes(text.openai_clip_l())
    assert len(clip_l["transformer"]) == 11 and "ln_final" not in clip_l
    bigg = shapes(text.openclip_bigg())
    assert len(bigg["transformer"]) == 32 and bigg["text_projection"].shape == (1280, 1280)
    assert bigg["transformer"]["resblocks_31"]["mlp"]["c_fc"]["kernel"].shape == (1280, 5120)


@pytest.mark.parametrize("kwargs, message", [
    (dict(output_layer=4), "output_layer"), (dict(output_layer=True), "output_layer"),
    (dict(output_layer="pooled"), "output_layer"), (dict(act="relu"), "act"), (dict(heads=5), "divisible"),
    (dict(projection_dim=8), "pooled=True"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(JaxirInputError, match=message):
        TextEncoderConfig(**{**dict(width=64, heads=4, layers=3), **kwargs})


def test_from_open_clip_cfg_refuses_unsupported_options():
    cfg = {"embed_dim": 64, "layer": "last", "text_cfg": {"width": 64, "heads": 4, "layers": 3, "ls_init_value": 0.1}}
    with pytest.raises(JaxirInputError, match="ls_init_value"):
        text.from_open_clip_cfg(cfg)
    del cfg["text_cfg"]["ls_init_value"]
    with pytest.raises(JaxirInputError, match="quick_gelu"):
        text.from_open_clip_cfg({**cfg, "quick_gelu": True})
    assert text.from_open_clip_cfg(cfg) == TextEncoderConfig(width=64, heads=4, layers=3, output_layer="last")
