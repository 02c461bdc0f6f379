"""Stripformer (jaxir.models.stripformer), its key map (checkpoints_conversion.stripformer_keys) and restorer.

Reference: the ``stripformer`` fixture, made by the original ``models/Stripformer.py`` (pp00704831/Stripformer-ECCV-
2022-) with seeded float32 weights that are regenerated here from the stored keys, shapes and seed (recipe in
``shared/fixtures/README.md``), written as the released file is (``module.``-prefixed ``DataParallel`` keys) and
converted with the command line. Errors are max |ours − reference| / max |reference|.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import FIXTURES, needs_fixtures
from checkpoints_conversion.__main__ import main as convert_main
from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.stripformer_keys import convert_stripformer
from jaxir.checkpoints import load
from jaxir.errors import JaxirInputError
from jaxir.models.stripformer import Stripformer, StripformerConfig, StripformerModel, param_shapes
from jaxir.restorers import get as get_restorer
from jaxir.batches import pad_to_multiple
from jaxir.restorers.stripformer import make_restore

pytestmark = pytest.mark.slow   # compiles whole models or runs training / pipelines

FIXTURE = FIXTURES / "stripformer" / "stripformer.npz"
needs_fixture = needs_fixtures("stripformer", "stripformer.npz")
TOL = 1e-4
CASES = ("a", "b", "c")   # 16×16 (square: the original's batched branch), 16×24, 24×12


def rel_err(ours, ref) -> float:
    ref = np.asarray(ref)
    return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


@functools.cache
def fixture_arrays() -> dict:
    return dict(np.load(FIXTURE))


@functools.cache
def _seeded_state() -> tuple[tuple[str, np.ndarray], ...]:
    arrays = fixture_arrays()
    rng = np.random.default_rng(int(arrays["seed"]))
    state = []
    for key, shape in zip(arrays["keys"].tolist(), json.loads(str(arrays["shapes"]))):
        if len(shape) > 1:
            w = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        elif key.endswith("weight"):
            w = 1 + 0.1 * rng.standard_normal(shape)
        else:
            w = 0.1 * rng.standard_normal(shape)
        state.append((key, w.astype(np.float32)))
    return tuple(state)


def seeded_state() -> dict[str, np.ndarray]:
    """The fixture's ``Stripformer`` state dict (bare keys, float32), a fresh dict per call."""
    return dict(_seeded_state())


@functools.cache
def _network(config: StripformerConfig):
    return jax.jit(lambda params, x: Stripformer(config).apply({"params": params}, x))


def run(config: StripformerConfig, params, x):
    with jax.default_matmul_precision("highest"):
        return np.asarray(_network(config)(params, x))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The seeded weights saved like ``Stripformer_gopro.pth`` (``module.`` keys), converted by the CLI, loaded."""
    if not FIXTURE.is_file():
        pytest.skip(f"Stripformer fixture not found at {FIXTURE}")
    root = tmp_path_factory.mktemp("stripformer")
    pth = root / "Stripformer_gopro.pth"
    torch.save({f"module.{k}": torch.from_numpy(v) for k, v in seeded_state().items()}, pth)
    assert convert_main(["stripformer", str(pth), "--out", str(root / "ckpt")]) == 0
    model, params = load(root / "ckpt")
    return root / "ckpt", model, params


def test_config_and_shapes():
    config = StripformerConfig.gopro()
    assert config == StripformerConfig() and hash(config) == hash(StripformerConfig())
    shapes = param_shapes(config)
    assert shapes["decoder"]["de_layer3_1_0"]["kernel"].shape == (4, 4, 192, 320)
    assert shapes["Trans_block_2"]["conv_h"]["kernel"].shape == (160, 480)
    assert shapes["decoder"]["de_block_6"]["PEG"]["PEG"]["kernel"].shape == (3, 3, 1, 192)
    assert "Trans_block_12" in shapes and "Trans_block_13" not in shapes
    small = StripformerConfig(channels=(8, 16, 20), residual_pairs=1, encoder_heads=2, encoder_pairs=1,
                              decoder_channels=12, decoder_heads=2, decoder_pairs=1)
    small_shapes = param_shapes(small)
    assert small_shapes["decoder"]["de_layer2_2_0"]["kernel"].shape == (12 + 16, 12)
    assert small_shapes["decoder"]["de_layer1_3_0"]["kernel"].shape == (16, 8)
    with pytest.raises(JaxirInputError, match="heads"):
        StripformerConfig(encoder_heads=3)
    with pytest.raises(JaxirInputError, match="multiples of 4"):
        jax.eval_shape(lambda x: Stripformer(small).init(jax.random.key(0), x), jnp.zeros((1, 8, 6, 3)))


@needs_fixture
@pytest.mark.parametrize("case", CASES)
def test_parity_with_original(converted, case):
    """The forward pass of what ``jaxir.load`` returns, a plain call ``model.forward(params, x)``; and
    ``model.deblur`` on the same images in [0, 1] is the original script's clamped ``output + 0.5``."""
    _, model, params = converted
    arrays = fixture_arrays()
    with jax.default_matmul_precision("highest"):
        out = np.asarray(model.forward(params, arrays[f"input_{case}"]))
        deblurred = np.asarray(model.deblur(params, arrays[f"input_{case}"] + 0.5))
    err = rel_err(out, arrays[f"output_{case}"])
    print(f"stripformer {case} {arrays[f'input_{case}'].shape[1:3]}: max abs error / output scale = {err:.2e}")
    assert out.shape == arrays[f"output_{case}"].shape
    assert err < TOL
    np.testing.assert_allclose(deblurred, np.clip(arrays[f"output_{case}"] + 0.5, 0, 1), rtol=0, atol=TOL)


@needs_fixture
def test_save_load_round_trip(converted):
    path, model, loaded = converted
    assert isinstance(model, StripformerModel) and model.config == StripformerConfig.gopro()
    assert json.loads((path / "config.json").read_text())["kind"] == "stripformer"
    direct = convert_stripformer(seeded_state())
    flat_loaded, tree_loaded = jax.tree.flatten(loaded)
    flat_direct, tree_direct = jax.tree.flatten(direct)
    assert tree_loaded == tree_direct and len(flat_direct) == len(seeded_state())
    for a, b in zip(flat_loaded, flat_direct):
        np.testing.assert_array_equal(np.asarray(a), b)


@needs_fixture
@pytest.mark.parametrize("edit, match", [
    ("missing", r"parameters not filled: decoder/de_block_2/conv_h/bias \(288,\)"),
    ("extra", r"unused source tensors: Trans_block_13\.conv_input\.bias \(320,\)"),
    ("shape", r"shape mismatch: Trans_block_1\.qkv_local_h\.weight \(480, 161\) → Trans_block_1/qkv_local_h/kernel"),
])
def test_converter_is_strict(edit, match):
    state = seeded_state()
    if edit == "missing":
        del state["decoder.de_block_2.conv_h.bias"]
    elif edit == "extra":
        state["Trans_block_13.conv_input.bias"] = np.zeros(320, np.float32)
    else:
        state["Trans_block_1.qkv_local_h.weight"] = np.zeros((480, 161), np.float32)
    with pytest.raises(ConversionError, match=match) as info:
        convert_stripformer(state)
    assert "\n" not in str(info.value)


def test_foreign_checkpoint_is_one_line_error(tmp_path, capsys):
    pth = tmp_path / "vae.pth"
    torch.save({"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3), "decoder.conv_out.bias": torch.zeros(3)}, pth)
    assert convert_main(["stripformer", str(pth), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a Stripformer state dict" in err and "encoder.en_layer1_1.0.weight" in err
    with pytest.raises(ConversionError, match="not a Stripformer state dict"):
        convert_stripformer({"conv.weight": np.zeros((1, 1, 3, 3), np.float32)})
    assert not (tmp_path / "out").exists()


def test_pad_to_multiple_reflects_bottom_right():
    x = jnp.arange(5 * 6, dtype=jnp.float32).reshape(1, 5, 6, 1)
    padded = pad_to_multiple(x, 4, mode="reflect")
    assert padded.shape == (1, 8, 8, 1)
    expected = torch.nn.functional.pad(torch.from_numpy(np.array(x)).permute(0, 3, 1, 2), (0, 2, 0, 3), "reflect")
    np.testing.assert_array_equal(np.asarray(padded), expected.permute(0, 2, 3, 1).numpy())


@needs_fixture
def test_restorer_keeps_size_and_matches_padded_network(converted):
    _, model, params = converted
    rng = np.random.default_rng(1)
    lq = rng.uniform(size=(1, 13, 10, 3)).astype(np.float32)
    restore = make_restore(model, params)
    with jax.default_matmul_precision("highest"):
        out = np.asarray(restore(lq))
    assert out.shape == lq.shape and out.min() >= 0 and out.max() <= 1
    padded = np.pad(lq, ((0, 0), (0, 3), (0, 2), (0, 0)), mode="reflect")
    expected = np.clip(run(model.config, params, padded - 0.5)[:, :13, :10] + 0.5, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-3)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(np.asarray(model.deblur(params, lq)), expected, atol=1e-3)
    tiled = make_restore(model, params, tile=8, overlap=4)      # padded 16×12 → 8×8 tiles
    with jax.default_matmul_precision("highest"):
        assert np.asarray(tiled(lq)).shape == lq.shape
    with pytest.raises(JaxirInputError, match="multiples of 4"):
        make_restore(model, params, tile=10)


def test_restorer_registered_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path))
    restorer = get_restorer("stripformer")
    assert restorer.tasks == ("deblur",) and restorer.family == "learned"
    reason = restorer.unavailable_reason()
    assert "Stripformer_gopro.pth" in reason and "python -m checkpoints_conversion stripformer" in reason
    assert "github.com/pp00704831/Stripformer-ECCV-2022-" in reason
