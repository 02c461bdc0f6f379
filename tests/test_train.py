"""Training: procedural data, a falling loss, bit-identical resumption, checkpoints jaxir.load can read, and the
evaluation photos kept out of the training data."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxir
from jaxir.data.dead_leaves import DeadLeavesConfig, dead_leaves_batch
from jaxir.degradations.resize import imresize
from jaxir.errors import JaxirInputError
from jaxir.models.restorer_cnn import ResidualCNN, ResidualCNNConfig
from jaxir.train.loop import TrainConfig, train
from jaxir.train.restorer import (TASKS, RestorerData, check_not_evaluation_photos, make_batch_fn, restorer_loss,
                                  train_restorer)

pytestmark = pytest.mark.slow   # compiles whole models or runs training / pipelines

SMALL = DeadLeavesConfig(num_shapes=40)
TINY_DATA = RestorerData(batch=4, crop=16, validation_images=2, validation_size=32)


def test_dead_leaves_are_deterministic_images():
    a = dead_leaves_batch(jax.random.key(0), 3, 32, SMALL)
    b = dead_leaves_batch(jax.random.key(0), 2, 32, SMALL, sample_ids=[1, 2])
    assert a.shape == (3, 32, 32, 3) and float(a.min()) >= 0 and float(a.max()) <= 1
    np.testing.assert_array_equal(np.asarray(a[1:]), np.asarray(b))
    assert float(jnp.std(a)) > 0.1   # not flat
    assert np.abs(np.asarray(a[0]) - np.asarray(a[1])).mean() > 0.05


def test_dead_leaves_chroma_cap_and_grain():
    """max_chroma 0 with no gradient/texture tint gives grey images; grain has its own key stream (shapes stay
    where they were) and, averaged over 2×2 render pixels, an rms near (grain_max/√3)/2 = 0.029 (clipping lowers
    it)."""
    plain = dataclasses.replace(SMALL, gradient_amplitude=0.0, texture_amplitude=0.0, saturated_fraction=0.0,
                                dark_fraction=0.0)
    grey = np.asarray(dead_leaves_batch(jax.random.key(0), 2, 32, dataclasses.replace(plain, max_chroma=0.0)))
    np.testing.assert_allclose(grey, grey[..., :1].repeat(3, -1), atol=1e-6)
    colour = np.asarray(dead_leaves_batch(jax.random.key(0), 2, 32, dataclasses.replace(plain, max_chroma=1.0)))
    assert np.abs(colour - colour.mean(-1, keepdims=True)).mean() > 0.05
    clean = np.asarray(dead_leaves_batch(jax.random.key(0), 2, 32, plain))
    unused = dataclasses.replace(plain, grain_max=0.1, grain_fraction=0.0)
    np.testing.assert_array_equal(np.asarray(dead_leaves_batch(jax.random.key(0), 2, 32, unused)), clean)
    grainy = dataclasses.replace(plain, grain_max=0.1, grain_fraction=1.0)
    noise = np.asarray(dead_leaves_batch(jax.random.key(0), 2, 32, grainy)) - clean
    assert 0.015 < float(np.sqrt(np.mean(noise ** 2))) < 0.032


def test_dead_leaves_soft_edges():
    """Soft edges have their own key stream (with none drawn soft, the hard images come back) and ramp across the
    outline: the mean absolute step between neighbouring pixels, which the edges dominate, falls."""
    flat = dataclasses.replace(SMALL, gradient_amplitude=0.0, texture_amplitude=0.0)
    hard = np.asarray(dead_leaves_batch(jax.random.key(0), 2, 32, flat))
    none_soft = dataclasses.replace(flat, soft_edge_max=0.2, soft_edge_fraction=0.0)
    np.testing.assert_allclose(np.asarray(dead_leaves_batch(jax.random.key(0), 2, 32, none_soft)), hard, atol=1e-6)
    soft = np.asarray(dead_leaves_batch(jax.random.key(0), 2, 32, dataclasses.replace(none_soft,
                                                                                       soft_edge_fraction=1.0)))
    step = lambda x: np.abs(np.diff(x, axis=2)).mean()
    assert step(soft) < 0.8 * step(hard), (step(soft), step(hard))


def test_untrained_sr_model_is_bicubic():
    model = ResidualCNN(ResidualCNNConfig(scale=2, features=8, blocks=1))
    x = jax.random.uniform(jax.random.key(1), (1, 12, 10, 3))
    params = model.init(jax.random.key(0), x)["params"]
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, x)), np.asarray(imresize(x, scale=2)),
                               atol=1e-6)


@pytest.mark.parametrize("scale", [1, 2])
def test_flat_preserving_model_returns_flat_regions_unchanged(scale):
    """With random (trained-like) weights, ``flat_preserving`` returns the base ``B(I_y)`` to rounding inside a
    flat patch (beyond the 2·(2·blocks + 2) + 1 = 9 px receptive field from its edge), and departs from it on the
    textured rest; the default tail (with bias) does not keep the patch flat."""
    x = jax.random.uniform(jax.random.key(1), (1, 40, 40, 3))
    x = x.at[:, 8:32, 8:32].set(jnp.array([0.02, 0.5, 0.9]))
    base = np.asarray(imresize(x, scale=scale)) if scale > 1 else np.asarray(x)
    inner = slice(scale * 13, scale * 27)
    errors = []
    for flat in (True, False):
        model = ResidualCNN(ResidualCNNConfig(scale=scale, features=8, blocks=1, flat_preserving=flat))
        params = model.init(jax.random.key(0), x)["params"]
        params = jax.tree.map(lambda a: 0.2 * jax.random.normal(jax.random.key(2), a.shape), params)
        assert ("bias" in params["tail"]) is not flat
        with jax.default_matmul_precision("highest"):
            out = np.asarray(model.apply({"params": params}, x))
        errors.append((np.abs(out - base)[0, inner, inner].max(), np.abs(out - base).max()))
    (flat_patch, flat_all), (default_patch, _) = errors
    assert flat_patch < 1e-5 and flat_all > 0.1 and default_patch > 0.01, errors


MODEL = ResidualCNNConfig(scale=2, features=8, blocks=1)


def _tiny_run(out, steps, batch_fn=None, lr=3e-3):
    model = ResidualCNN(MODEL)
    init = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    batch_fn = batch_fn or make_batch_fn(TASKS["sr2"], TINY_DATA, seed=0, dead_leaves=SMALL)
    train_config = TrainConfig(steps=steps, learning_rate=lr, warmup_steps=2, log_every=1, eval_every=1000,
                               checkpoint_every=5)
    return train(restorer_loss(model, "l2"), init, batch_fn, train_config, out, progress=False)


def test_loss_falls_on_a_fixed_batch(tmp_path):
    """30 steps on one batch: the L2 loss drops below 90 % of the bicubic start (the untrained model; measured
    83 %)."""
    batch = make_batch_fn(TASKS["sr2"], TINY_DATA, seed=0, dead_leaves=SMALL)(0)
    _, _, history = _tiny_run(tmp_path, 30, batch_fn=lambda step: batch, lr=1e-2)
    losses = [r["loss"] for r in history]
    assert np.mean(losses[-3:]) < 0.9 * losses[0]


def test_resume_is_bit_identical(tmp_path):
    """A run interrupted after step 12 (last checkpoint: step 10) and started again in its folder ends with the
    parameters of an uninterrupted run, bit for bit."""
    params, _, _ = _tiny_run(tmp_path / "full", 20)
    data = make_batch_fn(TASKS["sr2"], TINY_DATA, seed=0, dead_leaves=SMALL)

    def interrupted(step):
        if step == 12:
            raise KeyboardInterrupt
        return data(step)

    with pytest.raises(KeyboardInterrupt):
        _tiny_run(tmp_path / "split", 20, batch_fn=interrupted)
    resumed, _, later = _tiny_run(tmp_path / "split", 20)          # same folder: resumes at step 10
    assert later[0]["step"] == 11
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    log = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13)) + list(range(11, 21))   # steps 11, 12 run twice


def test_train_restorer_writes_a_loadable_checkpoint(tmp_path):
    path = train_restorer("sr2", tmp_path, model_config=ResidualCNNConfig(scale=2, features=8, blocks=1),
                          train_config=TrainConfig(steps=6, warmup_steps=1, log_every=3, eval_every=3,
                                                   checkpoint_every=3),
                          data=TINY_DATA, dead_leaves=dataclasses.replace(SMALL, max_chroma=1.0, grain_max=0.02),
                          progress=False, command="test")
    model, params = jaxir.load(path)
    provenance = json.loads((path / "provenance.json").read_text())
    assert provenance["command"] == "test" and provenance["validation_psnr_y"] > 10
    assert provenance["dead_leaves"] == dataclasses.asdict(SMALL) | {"max_chroma": 1.0, "grain_max": 0.02}
    out = model.apply({"params": params}, jnp.zeros((1, 8, 8, 3)))
    assert out.shape == (1, 16, 16, 3)


def test_train_command_builds_the_flat_preserving_model_unless_told_not_to(tmp_path, capsys):
    """``jaxir train --task blur2`` trains the flat-preserving model (no tail bias); ``--no-flat-preserving`` the
    plain one; either checkpoint records its configuration and loads."""
    from jaxir.cli import main

    tiny = ["--steps", "2", "--batch", "2", "--crop", "16", "--features", "4", "--blocks", "1", "--eval-every", "2",
            "--quiet"]
    for flag, flat in (([], True), (["--no-flat-preserving"], False)):
        out = tmp_path / str(flat)
        assert main(["train", "--task", "blur2", *tiny, *flag, "--out", str(out)]) == 0
        config = json.loads((out / "model" / "config.json").read_text())["config"]
        assert config["flat_preserving"] is flat
        model, params = jaxir.load(out / "model")
        assert model.config.flat_preserving is flat and ("bias" in params["tail"]) is not flat
    assert "trained restorer written to" in capsys.readouterr().out


def test_evaluation_photos_are_refused_as_training_data():
    from jaxir.data import bundled_photos

    photo = bundled_photos(["chelsea"])[0].image
    with pytest.raises(JaxirInputError, match="evaluation photo 'chelsea'"):
        check_not_evaluation_photos([np.zeros((8, 8, 3)), photo])
    check_not_evaluation_photos([np.asarray(dead_leaves_batch(jax.random.key(0), 1, 32, SMALL)[0])])
    with pytest.raises(JaxirInputError, match="unknown task"):
        train_restorer("sr3", "/nonexistent")


@pytest.mark.parametrize("name, degradation", [("jaxir_cnn_sr2", "sr2"), ("jaxir_cnn_sr4", "sr4"),
                                               ("jaxir_cnn_blur2", "blur2")])
def test_shipped_checkpoints_restore_a_photo_better_than_the_baseline(name, degradation):
    """Each shipped model loads, was trained by the recorded command on dead leaves, and beats bicubic (SR) or
    the degraded input (deblurring) in Y-PSNR on a 128² crop of a bundled photo."""
    from jaxir.data import bundled_photos
    from jaxir.metrics import psnr
    from jaxir.restorers import get
    from jaxir.restorers.trained import model_for
    from jaxir.weights import SHIPPED as WEIGHTS

    provenance = json.loads((WEIGHTS / name / "provenance.json").read_text())
    assert provenance["command"].startswith(f"jaxir train --task {degradation}")
    assert "dead leaves" in provenance["training_data"]
    d = TASKS[degradation]
    assert model_for(d) == name
    hq = jnp.asarray(bundled_photos(["coffee"])[0].image[:128, 128:256])[None]
    lq = d(hq, jax.random.key(0))
    restored = get("jaxir_cnn").restore(lq, d, jax.random.key(0))
    baseline = get("bicubic").restore(lq, d, jax.random.key(0))
    border = int(d.scale) if d.scale > 1 else 0
    ours = float(psnr(restored, hq, crop_border=border, y_channel=True)[0])
    reference = float(psnr(jnp.clip(baseline, 0, 1), hq, crop_border=border, y_channel=True)[0])
    assert restored.shape == hq.shape
    assert ours > reference + 0.2, (ours, reference)


@pytest.mark.parametrize("degradation", ["sr2", "sr4", "blur2"])
def test_shipped_checkpoints_beat_the_classical_baseline_on_retina(degradation):
    """The hardest bundled photo for the shipped models (saturated orange fundus on a noisy black background): the
    whole 1408² photo scored as the study scores it (8-bit, Y-PSNR, border = scale). Measured (jaxir_cnn vs
    bicubic / Wiener): SR ×2 52.93 vs 51.50, SR ×4 46.78 vs 43.55, blur σ 2 53.16 vs 51.65 dB. Models trained
    without saturated colours lost here (SR ×2 51.33 dB, blur σ 2 50.39 dB), and so did the blur σ 2 model without
    the flat-preserving tail (51.14 dB: a constant offset on the black background; README, *Training*)."""
    from jaxir.data import bundled_photos
    from jaxir.metrics import psnr
    from jaxir.restorers import get
    from jaxir.study.cells import to_8bit

    d = TASKS[degradation]
    hq = jnp.asarray(bundled_photos(["retina"])[0].image[:1408, :1408])[None]
    lq = d(hq, jax.random.key(0))
    border = int(d.scale) if d.scale > 1 else 0
    scores = [float(psnr(to_8bit(get(name).restore(lq, d, jax.random.key(0))), hq, crop_border=border, y_channel=True)[0])
              for name in ("jaxir_cnn", "wiener" if d.task == "deblur" else "bicubic")]
    assert scores[0] > scores[1] + 1.0, scores


def test_shipped_restorer_takes_only_what_it_was_trained_for():
    from jaxir.degradations import parse_level
    from jaxir.restorers import get

    restorer = get("jaxir_cnn")
    assert [restorer.handles(parse_level(s)) for s in ("sr2", "sr4", "blur2", "sr3", "blur1", "blur2+noise0.01")] \
        == [True, True, True, False, False, False]
    with pytest.raises(JaxirInputError, match="no model for blur σ=1"):
        restorer.restore(jnp.zeros((1, 16, 16, 3)), parse_level("blur1"), jax.random.key(0))


def test_ema_follows_ldm_litema_and_resumes_bit_identically(tmp_path):
    """``ema_decay``: on ½‖θ − c‖² with plain SGD the raw weights are θ_n = c + (θ_0 − c)(1 − lr)^n, so the average
    LDM's LitEma keeps (d_n = min(decay, (1 + n)/(10 + n))) is computed here independently; the run returns it,
    validates it (the raw weights' score logged beside it) and resumes bit for bit."""
    import optax

    target, theta0, lr, decay, steps = np.array([1.0, -2.0, 0.5]), np.array([3.0, 0.0, -1.0]), 0.1, 0.9, 12
    loss = lambda p, batch: 0.5 * jnp.sum((p["w"] - batch) ** 2)  # noqa: E731
    config = TrainConfig(steps=steps, log_every=1, eval_every=4, checkpoint_every=4, ema_decay=decay)
    validate = lambda p: -float(jnp.sum((p["w"] - target) ** 2))  # noqa: E731

    def run(out, batch_fn=lambda step: jnp.asarray(target, jnp.float32)):
        return train(loss, {"w": jnp.asarray(theta0, jnp.float32)}, batch_fn, config, out, validate=validate,
                     progress=False, optimizer=optax.sgd(lr))

    params, _, history = run(tmp_path / "full")
    ema = theta0.copy()
    for n in range(1, steps + 1):
        d = min(decay, (1 + n) / (10 + n))
        ema = d * ema + (1 - d) * (target + (theta0 - target) * (1 - lr) ** n)
    np.testing.assert_allclose(np.asarray(params["w"]), ema, rtol=1e-5)
    raw = target + (theta0 - target) * (1 - lr) ** steps
    assert history[-1]["score"] == pytest.approx(-np.sum((ema - target) ** 2), rel=1e-5)
    assert history[-1]["score_raw"] == pytest.approx(-np.sum((raw - target) ** 2), rel=1e-5)

    def interrupted(step):
        if step == 6:
            raise KeyboardInterrupt
        return jnp.asarray(target, jnp.float32)

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split", interrupted)
    resumed, _, _ = run(tmp_path / "split")          # resumes at step 4 with its average
    np.testing.assert_array_equal(np.asarray(resumed["w"]), np.asarray(params["w"]))
