"""``jaxir experiment``: the cell store (jaxir.study.store), the shared runner (jaxir.study.experiment) and every
experiment module end to end on a micro configuration (one 96² crop of a bundled photo, the shipped models),
each checked against a direct computation with the library: degrade with the study's cell key, restore with the
registered restorer, quantise, score — not through the runner's own code.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import zlib

import jax
import numpy as np
import pytest
from helpers import close, compilations, direct

import experiments
import experiments.table1_alignment  # noqa: F401  (its model cache is cleared in a test)
from experiments import fig6_start_timestep
from jaxir.checkpoints import load, save
from jaxir.cli import main
from jaxir.data import bundled_photos
from jaxir.degradations.levels import parse_level, parse_levels
from jaxir.errors import JaxirInputError
from jaxir.metrics import alignment as A
from jaxir.metrics import niqe, psnr
from jaxir.metrics.color import quantize_uint8
from jaxir.pipelines.autoencoder import load_autoencoder, reconstruct
from jaxir.restorers import registered
from jaxir.study.experiment import Cell, Options, run_experiment
from jaxir.study.main import run_main_study
from jaxir.study.store import CellStore
from jaxir.weights import SHIPPED

pytestmark = pytest.mark.slow   # compiles the shipped CLDM

SR2 = parse_level("sr2")


@pytest.fixture(scope="module")
def images():
    return (experiments.centre_crop(bundled_photos(["astronaut"])[0], 96),)


# ---- the store ---------------------------------------------------------------------------------------------------

def test_store_keeps_the_first_result_of_a_key_and_survives_a_second_writer(tmp_path):
    path = tmp_path / "cells.sqlite"
    with CellStore(path) as a, CellStore(path) as b:
        assert a.put("k1", "restore", {"model": "m"}, {"psnr": 1.0})
        assert not b.put("k1", "restore", {"model": "m"}, {"psnr": 2.0})
        assert b.finished(["k1", "k2"]) == {"k1"}
        assert a.rows(["k2", "k1"]) == [{"key": "k1", "model": "m", "psnr": 1.0}]

    def writer(index: int):   # two threads, each with its own connection, racing over the same keys
        with CellStore(path) as store:
            for k in range(50):
                store.put(f"race{k}", "restore", {"writer": index}, {"value": k})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    count = sqlite3.connect(path).execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM cells").fetchone()
    assert count == (51, 51)


def test_a_file_that_is_not_a_store_is_one_line(tmp_path):
    bad = tmp_path / "cells.sqlite"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(JaxirInputError, match=r"cells\.sqlite: not a jaxir cell store .*use another --out") as info:
        CellStore(bad)
    assert "\n" not in str(info.value)


def test_cell_keys_follow_the_effective_settings():
    """Two experiments that reach the same settings by different overrides share the cell; another seed, level,
    image content or setting is another cell."""
    cldm = registered()["jaxir_cldm"]
    default = Cell("restore", "jaxir_cldm", SR2, "astronaut", 0)
    same = Cell("restore", "jaxir_cldm", SR2, "astronaut", 0, (("t_start", cldm.settings.t_start),),
                (("t_start", 250),))
    assert default.key("d1") == same.key("d1")
    others = [dataclasses.replace(default, seed=1), dataclasses.replace(default, level=parse_level("sr4")),
              dataclasses.replace(default, settings=(("t_start", 400),)), dataclasses.replace(default, measure="x")]
    keys = {default.key("d1"), default.key("d2"), *(c.key("d1") for c in others)}
    assert len(keys) == 6


# ---- experiments end to end ------------------------------------------------------------------------------------

def test_fig6_rows_equal_direct_restorations_and_traced_values_do_not_recompile(tmp_path, images):
    """The start-timestep sweep: every row is the restorer run by hand with that t_start; after the first value,
    a new t_start compiles nothing (``run.compilations``, from jax.monitoring); a rerun computes no cell and
    exports the same table."""
    gt = images[0].image
    sweep = dataclasses.replace(fig6_start_timestep.SWEEP, values=(100,))
    options = Options(images, levels=(SR2,))
    first = run_experiment(sweep.experiment(), options, tmp_path, progress=False)
    assert first.computed == 1 and first.compilations > 0
    sweep = dataclasses.replace(sweep, values=(100, 700))
    second = run_experiment(sweep.experiment(), options, tmp_path, progress=False)
    assert second.computed == 1 and second.compilations == 0
    assert [r["t_start"] for r in second.rows] == [100, 700]
    for row in second.rows:
        close(row, direct("jaxir_cldm", gt, SR2, start_from_condition=True, t_start=row["t_start"]))
    assert second.rows[0]["ssim"] != second.rows[1]["ssim"]
    table = (tmp_path / "fig6" / "results.csv").read_text()
    third = run_experiment(sweep.experiment(), options, tmp_path, progress=False)
    assert third.computed == 0 and (tmp_path / "fig6" / "results.csv").read_text() == table
    summary = json.loads((tmp_path / "fig6" / "summary.json").read_text())
    assert summary["verdict"] in ("holds", "partly holds", "does not hold") and summary["cells"] == 2
    assert "t_start ∈ [100, 700]" in (tmp_path / "fig6" / "report.md").read_text()


def test_an_interrupted_experiment_resumes_with_the_missing_cells(tmp_path, images, monkeypatch):
    sweep = dataclasses.replace(fig6_start_timestep.SWEEP, values=(100, 300, 500))
    experiment = sweep.experiment()
    calls = []

    def fails_on_second(cell, gt):
        calls.append(cell)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return experiment.evaluate(cell, gt)

    options = Options(images, levels=(SR2,))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(dataclasses.replace(experiment, evaluate=fails_on_second), options, tmp_path, progress=False)
    run = run_experiment(experiment, options, tmp_path, progress=False)
    assert run.computed == 2 and [r["t_start"] for r in run.rows] == [100, 300, 500]


def test_fig8_one_step_rows_are_single_step_restorations(tmp_path, images):
    gt = images[0].image
    experiment = experiments.get("fig8")
    run = run_experiment(experiment, Options(images, levels=(SR2,)), tmp_path, progress=False)
    steps = registered()["jaxir_cldm"].settings.steps
    assert {(r["t_start"], r["evaluations"]) for r in run.rows} == {(t, e) for t in (100, 250, 400, 600, 800)
                                                                     for e in (1, steps)}
    one = next(r for r in run.rows if r["t_start"] == 400 and r["evaluations"] == 1)
    close(one, direct("jaxir_cldm", gt, SR2, start_from_condition=True, t_start=400, steps=1))
    assert run.summary.verdict in ("holds", "partly holds", "does not hold")
    assert (tmp_path / "fig8" / "fig8.png").stat().st_size > 10_000


def test_fig9_final_is_the_restoration_cell(tmp_path, images):
    """The trajectory run is the restoration itself: its final scores are the direct restoration's, and it has
    one x0 score per sampling step."""
    gt = images[0].image
    run = run_experiment(experiments.get("fig9"), Options(images, levels=(SR2,)), tmp_path, progress=False)
    (row,) = run.rows
    want = direct("jaxir_cldm", gt, SR2)
    assert {m: row[f"final_{m}"] for m in want} == pytest.approx(want, abs=1e-9)
    assert len(row["ssim"]) == len(row["psnr"]) == registered()["jaxir_cldm"].settings.steps


def test_table2_vae_row_is_the_round_trip(tmp_path, images):
    gt = images[0].image
    run = run_experiment(experiments.get("table2"), Options(images, levels=(SR2,)), tmp_path, progress=False)
    vae_row = next(r for r in run.rows if r["measure"].startswith("vae_round_trip"))
    model, params = load_autoencoder(SHIPPED / "jaxir_cldm")
    decoded = jax.jit(reconstruct, static_argnums=0)(model, params, gt[None])   # one program, as the study runs it
    out = np.asarray(quantize_uint8(decoded), np.float32) / 255.0
    assert vae_row["psnr"] == pytest.approx(float(psnr(out, gt[None], y_channel=True)[0]), abs=1e-9)
    restored = next(r for r in run.rows if r["measure"] == "restore")
    close(restored, direct("jaxir_cldm", gt, SR2))
    assert run.summary.verdict == ("holds" if restored["psnr"] < vae_row["psnr"] else "does not hold")
    assert "LPIPS not computed" in (tmp_path / "table2" / "report.md").read_text()


def test_table2_lpips_with_random_weight_network(tmp_path, images, monkeypatch):
    """With an LPIPS (AlexNet) checkpoint where the metric looks for it (random weights here), table2's round trip
    and restoration rows carry LPIPS: the metric applied by hand to the direct restoration and round trip."""
    from jaxir.metrics import lpips as lpips_metric
    from jaxir.models.lpips_backbones import LPIPSConfig, LPIPSNetwork
    from jaxir.pipelines.autoencoder import roundtrip

    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path / "weights"))
    config = LPIPSConfig("alex")
    params = LPIPSNetwork(config).init(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32),
                                       method=lambda network, x: network.heads(network(x)))["params"]
    save(lpips_metric.checkpoint_dir("alex"), "lpips", config, params)
    run = run_experiment(experiments.get("table2"), Options(images, levels=(SR2,)), tmp_path / "exp", progress=False)
    rows = {r["measure"]: r for r in run.rows}
    assert set(rows) == {"vae_round_trip+lpips", "restore+lpips"}
    gt = images[0].image
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), zlib.crc32(b"SR x2")), zlib.crc32(b"astronaut"))
    out = registered()["jaxir_cldm"].restore(SR2(gt[None], key), SR2, jax.random.fold_in(key, zlib.crc32(b"restore")),
                                             [0])
    out = np.asarray(quantize_uint8(out), np.float32) / 255.0
    restored = rows["restore+lpips"]
    close(restored, direct("jaxir_cldm", gt, SR2))
    assert restored["lpips"] == pytest.approx(float(lpips_metric.lpips(out, gt[None], "alex")[0]), abs=1e-6)
    model, vae_params = load_autoencoder(SHIPPED / "jaxir_cldm")
    trip = np.asarray(quantize_uint8(roundtrip(model, vae_params, gt[None])), np.float32) / 255.0
    assert rows["vae_round_trip+lpips"]["lpips"] == pytest.approx(float(lpips_metric.lpips(trip, gt[None])[0]),
                                                                  abs=1e-6)
    assert "| LPIPS |" in run.summary.table


def test_fig1_fig2_share_cells_with_each_other_and_match_the_study(tmp_path, images):
    """fig2 and fig1 plan the same cells (fig1 computes none after fig2), and their rows are ``jaxir study``'s
    numbers for the same images, levels and seed."""
    levels = parse_levels("sr2,blur2")
    options = Options(images, models=("bicubic", "wiener", "jaxir_cnn"), levels=levels)
    fig2 = run_experiment(experiments.get("fig2"), options, tmp_path / "exp", progress=False)
    fig1 = run_experiment(experiments.get("fig1"), options, tmp_path / "exp", progress=False)
    assert fig2.computed == len(fig2.rows) == 5 and fig1.computed == 0 and len(fig1.rows) == 5
    study, _ = run_main_study(tmp_path / "study", images, levels, ["bicubic", "wiener", "jaxir_cnn"],
                              progress=False)
    by_cell = {(r["restorer"], r["level"]): r for r in study.rows}
    for row in fig2.rows:
        close(row, {m: by_cell[row["model"], row["level"]][m] for m in ("psnr", "ssim", "niqe")})
    assert fig2.summary.verdict == "cannot be tested"   # no CLDM among the models
    assert (tmp_path / "exp" / "fig2" / "fig2.png").is_file() and (tmp_path / "exp" / "fig1" / "fig1.png").is_file()


def test_the_command_line_runs_sweeps_lists_unavailable_models_and_refuses_unknown_names(tmp_path, capsys):
    """``jaxir experiment`` with a model that lacks the swept setting (bicubic has no cfg_scale) and one that is
    not registered: both listed with the reason, nothing crashes; the overview gathers the experiment."""
    out = tmp_path / "exp"
    assert main(["experiment", "cfg", "--out", str(out), "--models", "bicubic,nonesuch", "--photos", "astronaut",
                 "--crop", "96", "--levels", "sr2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "cfg: cannot be tested — 0 cells" in printed
    report = (out / "report.md").read_text()
    assert "`bicubic`: has no setting cfg_scale (this sweep needs it)" in report
    assert "`nonesuch`: unknown restorer" in report
    assert main(["experiment", "fig99", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown experiment 'fig99'; choose from fig1, fig2" in err


def test_fig4_counts_the_checkpoints_parameters(tmp_path, images):
    """Parameters per restorer: what the loaded checkpoints hold (the CLDM's own plus its stage 1's), 0 for a
    classical restorer; latency is each cell's net seconds."""
    run = run_experiment(experiments.get("fig4"), Options(images, models=("bicubic", "jaxir_cnn", "jaxir_cldm"),
                                                          levels=(SR2,)), tmp_path, progress=False)
    count = lambda path: sum(x.size for x in jax.tree.leaves(load(path)[1]))  # noqa: E731
    cnn = count(SHIPPED / "jaxir_cnn_sr2")
    assert {r["model"]: r["parameters"] for r in run.rows} == {
        "bicubic": 0, "jaxir_cnn": cnn, "jaxir_cldm": cnn + count(SHIPPED / "jaxir_cldm")}
    assert all(r["seconds"] >= 0 for r in run.rows)
    assert run.summary.verdict in ("holds", "partly holds", "does not hold")


def test_alignment_tables_with_random_weight_dinov2(tmp_path, images, monkeypatch):
    """table1 and table3 on a random-weight DINOv2 saved where the metric looks for its weights: S against the GT
    and against the re-degraded input equal the metric applied by hand to the direct restoration; the LQ row is
    S(I_x, I_y); the two tables share their cells."""
    from jaxir.metrics import alignment as A
    from jaxir.models.dinov2 import DINOv2, DINOv2Config

    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path / "weights"))
    config = DINOv2Config(embed_dim=48, depth=2, num_heads=3, img_size=56)
    params = DINOv2(config).init(jax.random.key(0), np.zeros((1, 56, 56, 3), np.float32))["params"]
    save(A.alignment_checkpoint(), "dinov2", config, params)
    experiments.table1_alignment._model.cache_clear()
    options = Options(images, models=("bicubic",), levels=(SR2,))
    table1 = run_experiment(experiments.get("table1"), options, tmp_path / "exp", progress=False)
    table3 = run_experiment(experiments.get("table3"), options, tmp_path / "exp", progress=False)
    assert table1.computed == 2 and table3.computed == 0
    model = A.load_alignment_model()
    gt = images[0].image
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), zlib.crc32(b"SR x2")), zlib.crc32(b"astronaut"))
    lq = SR2(gt[None], key)
    out = registered()["bicubic"].restore(lq, SR2, jax.random.fold_in(key, zlib.crc32(b"restore")), [0])
    out = np.asarray(quantize_uint8(out), np.float32) / 255.0
    rows = {r["model"]: r for r in table1.rows}
    assert rows["LQ input"]["s_gt"] == pytest.approx(float(A.alignment(model, gt[None], lq)[0]), abs=1e-6)
    assert rows["bicubic"]["s_gt"] == pytest.approx(float(A.alignment(model, gt[None], out)[0]), abs=1e-6)
    redegraded = SR2(out, key)
    assert rows["bicubic"]["s_lq"] == pytest.approx(float(A.alignment(model, redegraded, lq)[0]), abs=1e-6)
    assert rows["bicubic"]["s_gt"] > 0 and table1.summary.verdict == "cannot be tested"   # no CLDM in this run


def test_every_registered_experiment_plans_offline(images):
    """Each experiment's default plan on the shipped models: cells only for restorers that can run, every other
    requested model listed with a reason; without DINOv2 weights the Alignment tables plan nothing and say how
    to get them."""
    for name in experiments.names():
        plan = experiments.get(name).plan(Options(images))
        if name in ("table1", "table3") and A.check():
            assert not plan.cells and "checkpoints_conversion dinov2" in plan.notes[0]
            continue
        assert plan.cells, name
        assert all(registered()[c.model].unavailable_reason() is None for c in plan.cells), name
    full = experiments.get("fig6").plan(Options(images, full=True))
    assert "diffbir_v2" in full.unavailable and "no checkpoint" in full.unavailable["diffbir_v2"]


def test_radial_power_spectrum_against_direct_sums():
    """A horizontal cosine of 6 cycles puts all its power at k = 6: |F|² = (A·H·W/2)² at (0, ±6), so P(6) is
    2·(A·H·W/2)²/(H·W) over the bin's count; a constant image has none."""
    from jaxir.metrics.spectrum import radial_power_spectrum

    h = w = 32
    x = np.arange(w)
    luma = 0.5 + 0.25 * np.cos(2 * np.pi * 6 * x / w)
    image = np.repeat(np.broadcast_to(luma, (h, w))[..., None], 3, axis=-1)   # grey: Y = 16/255 + 219/255·value
    k, power = radial_power_spectrum(image)
    amplitude = 0.25 * 219.0 / 255.0
    radius = np.floor(np.hypot(*np.meshgrid(np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w, indexing="ij")))
    count = int((radius == 6).sum())
    assert k[0] == 1 and k[-1] == 16
    assert power[5] == pytest.approx(2 * (amplitude * h * w / 2) ** 2 / (h * w) / count, rel=1e-9)
    assert np.delete(power, 5).max() < 1e-20
    assert radial_power_spectrum(np.full((h, w, 3), 0.3))[1].max() < 1e-25


def test_visual_and_fig5_write_their_pictures_from_the_cells(tmp_path, images):
    """The visual comparison's saved outputs are the restorations its rows score (PSNR recomputed from the PNG);
    fig5's round trip is table 2's (same PSNR) and its spectra are those of the saved images."""
    from PIL import Image

    from jaxir.metrics.spectrum import radial_power_spectrum

    gt = images[0].image
    options = Options(images, models=("bicubic", "jaxir_cldm"), levels=(parse_level("sr4"),))
    visual = run_experiment(experiments.get("visual"), options, tmp_path, progress=False)
    read = lambda p: np.asarray(Image.open(tmp_path / p), np.float32) / 255.0  # noqa: E731
    for row in visual.rows:
        restored = read(row["images"]["restored"])
        assert float(psnr(restored[None], gt[None], crop_border=4, y_channel=True)[0]) == pytest.approx(row["psnr"])
        assert read(row["images"]["lq"]).shape == gt.shape
    assert (tmp_path / "visual" / "visual_astronaut_SR_x4.png").stat().st_size > 10_000
    fig5 = run_experiment(experiments.get("fig5"), Options(images), tmp_path, progress=False)
    table2 = run_experiment(experiments.get("table2"), Options(images, levels=(SR2,)), tmp_path, progress=False)
    (row,) = fig5.rows
    assert row["psnr"] == pytest.approx(next(r for r in table2.rows if r["measure"] != "restore")["psnr"], abs=1e-9)
    np.testing.assert_allclose(row["power_vae"], radial_power_spectrum(read(row["images"]["round_trip"]))[1])
    assert fig5.summary.verdict in ("holds", "partly holds", "does not hold")


def test_gamma_rule_starts_where_the_schedule_keeps_gamma(tmp_path, images):
    """The γ-chosen start: √ᾱ_t closest to γ on the shipped CLDM's own schedule; its row is the direct
    restoration from that t_start, next to the fixed starts."""
    from experiments.future_gamma_start import FIXED, gamma_t_start
    from jaxir.pipelines.diffbir import process_alphas_cumprod

    model, _ = load(SHIPPED / "jaxir_cldm")
    alphas = process_alphas_cumprod(model.config.process)
    t = gamma_t_start(alphas, 0.5)
    assert abs(np.sqrt(alphas[t]) - 0.5) <= np.abs(np.sqrt(alphas) - 0.5).min() + 1e-12
    run = run_experiment(experiments.get("gamma"), Options(images, levels=(SR2,)), tmp_path, progress=False)
    rule = next(r for r in run.rows if r["rule"] == "γ")
    assert rule["t_start"] == t and len(run.rows) == 1 + len([f for f in FIXED if f != t])
    close(rule, direct("jaxir_cldm", images[0].image, SR2, start_from_condition=True, t_start=t))


def test_batched_cells_equal_the_cells_run_alone(tmp_path):
    """Three images of one size restored by the CLDM as one padded batch of 4 (each sample its own cell key):
    the rows equal those of the cells run one by one, up to float rounding of the batched arithmetic (noise
    identical; 8-bit outputs may differ in a rare pixel), and the batch compiles its program once."""
    crops = tuple(experiments.centre_crop(r, 96) for r in bundled_photos(["astronaut", "coffee", "chelsea"]))
    options = Options(crops, models=("jaxir_cldm",), levels=(SR2,))
    alone = run_experiment(experiments.get("fig2"), options, tmp_path / "alone", progress=False)
    with compilations() as cost:
        batched = run_experiment(experiments.get("fig2"), dataclasses.replace(options, batch=4), tmp_path / "batch",
                                 progress=False)
    assert batched.computed == 3 and cost().compilations > 0
    for a, b in zip(alone.rows, batched.rows, strict=True):
        assert a["key"] == b["key"]
        assert abs(a["psnr"] - b["psnr"]) < 0.01 and abs(a["ssim"] - b["ssim"]) < 1e-4 and a["psnr"] != 0


def test_cells_that_differ_in_traced_settings_run_as_one_batch(tmp_path, images):
    """A start-timestep sweep with --batch: the three t_start cells (η too in a second sweep) run as one padded
    batch through one compiled sampler; every row equals the restoration run by hand with its own settings (up to
    the float rounding of batched arithmetic), and a batch of new values compiles nothing."""
    gt = images[0].image
    sweep = dataclasses.replace(fig6_start_timestep.SWEEP, values=(100, 400, 700))
    options = Options(images, levels=(SR2,), batch=4)
    first = run_experiment(sweep.experiment(), options, tmp_path, progress=False)
    assert first.computed == 3 and first.compilations > 0
    for row in first.rows:
        want = direct("jaxir_cldm", gt, SR2, start_from_condition=True, t_start=row["t_start"])
        assert abs(row["psnr"] - want["psnr"]) < 0.01 and abs(row["ssim"] - want["ssim"]) < 1e-4
    assert len({row["ssim"] for row in first.rows}) == 3
    second = run_experiment(dataclasses.replace(sweep, values=(200, 300, 500)).experiment(), options, tmp_path,
                            progress=False)
    assert second.computed == 3 and second.compilations == 0
    restorer = registered()["jaxir_cldm"]
    with pytest.raises(JaxirInputError, match="differ only in traced settings"):
        restorer.restore_per_sample(np.zeros((2, 48, 48, 3), np.float32), SR2, jax.random.key(0), None,
                                    [restorer.settings, restorer.configure(steps=3).settings])


BATCH_ON_8_DEVICES = """
import sys
from jaxir.cli import main
code = main(["experiment", "fig2", "--out", sys.argv[1], "--models", "bicubic", "--levels", "sr2+noise0.05",
             "--crop", "96", "--batch", "3", "--quiet"])
sys.exit(code or main(["experiment", "fig6", "--out", sys.argv[1], "--models", "jaxir_cldm", "--levels", "sr2",
                       "--photos", "astronaut", "--crop", "96", "--batch", "8", "--quiet"]))
"""


def test_a_batch_sharded_over_8_devices_equals_one_device(tmp_path, images):
    """Noisy degradations (per-sample keys) restored as one batch sharded over 8 forced host devices, against the
    same cells run one at a time on one device: equal rows. Then fig6's seven start timesteps as one CLDM batch
    over the 8 devices (per-sample settings): the rows of the cells run alone, up to the float rounding of batched
    arithmetic (an 8-bit pixel may flip)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    done = subprocess.run([sys.executable, "-c", BATCH_ON_8_DEVICES, str(tmp_path / "mesh")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    crops = tuple(experiments.centre_crop(r, 96) for r in bundled_photos(list(experiments.DEFAULT_PHOTOS)))
    alone = run_experiment(experiments.get("fig2"), Options(crops, models=("bicubic",),
                                                            levels=parse_levels("sr2+noise0.05")),
                           tmp_path / "one", progress=False)
    with CellStore(tmp_path / "mesh" / "cells.sqlite") as store:
        sharded = {r["key"]: r for r in store.rows([r["key"] for r in alone.rows])}
    assert len(sharded) == len(experiments.DEFAULT_PHOTOS) and jax.device_count() == 1
    for row in alone.rows:
        for metric in ("psnr", "ssim", "niqe"):
            assert sharded[row["key"]][metric] == pytest.approx(row[metric], abs=1e-6)
    sweep = run_experiment(experiments.get("fig6"), Options(images, models=("jaxir_cldm",), levels=(SR2,)),
                           tmp_path / "one", progress=False)
    with CellStore(tmp_path / "mesh" / "cells.sqlite") as store:
        sharded = {r["key"]: r for r in store.rows([r["key"] for r in sweep.rows])}
    assert len(sharded) == len(sweep.rows) == len(fig6_start_timestep.SWEEP.values)
    for row in sweep.rows:
        got = sharded[row["key"]]
        assert abs(got["psnr"] - row["psnr"]) < 0.01 and abs(got["ssim"] - row["ssim"]) < 1e-4
        assert abs(got["niqe"] - row["niqe"]) < 0.05


def test_gopro_pairs_are_a_captured_level_of_their_own(tmp_path):
    """``--gopro DIR`` (GoPro's <scene>/{sharp,blur} layout): each pair is restored at the captured level
    'GoPro (captured deblur)' beside the synthetic levels — by restorers of its task, not by the non-blind Wiener
    (no kernel) — scored against its own sharp frame (bicubic is the identity here: the row is the LQ's own
    PSNR/SSIM/NIQE); visual shows it; fig2 plots it as a panel of its own."""
    from jaxir.data import save_image
    from jaxir.data.images import load_image

    crops = [experiments.centre_crop(r, 96) for r in bundled_photos(["coffee", "chelsea"])]
    blur = parse_level("blur3")
    for scene, record in zip(("GOPR0001_00_00", "GOPR0002_00_00"), crops):
        save_image(tmp_path / "gopro" / scene / "sharp" / "000001.png", record.image)
        save_image(tmp_path / "gopro" / scene / "blur" / "000001.png", np.asarray(blur(record.image[None]))[0])
    code = main(["experiment", "fig2", "visual", "--gopro", str(tmp_path / "gopro"), "--models", "bicubic,wiener",
                 "--levels", "blur2", "--photos", "astronaut", "--crop", "96", "--out", str(tmp_path / "out"),
                 "--quiet"])
    assert code == 0
    import csv

    rows = [{**r, "psnr": float(r["psnr"]), "niqe": float(r["niqe"])}
            for r in csv.DictReader((tmp_path / "out" / "fig2" / "results.csv").open(encoding="utf-8"))]
    captured = [r for r in rows if r["level"] == "GoPro (captured deblur)"]
    assert sorted(r["image"] for r in captured) == ["GOPR0001_00_00/000001", "GOPR0002_00_00/000001"]
    assert {r["model"] for r in captured} == {"bicubic"}
    assert {(r["model"], r["level"]) for r in rows if r["level"] != "GoPro (captured deblur)"} == {
        ("bicubic", "blur σ=2"), ("wiener", "blur σ=2")}
    for row in captured:
        gt = load_image(tmp_path / "gopro" / (row["image"].replace("/", "/sharp/") + ".png"))
        lq = load_image(tmp_path / "gopro" / (row["image"].replace("/", "/blur/") + ".png"))
        assert row["psnr"] == pytest.approx(float(psnr(lq[None], gt[None], y_channel=True)[0]), abs=1e-9)
        assert row["niqe"] == pytest.approx(float(niqe(lq[None])[0]), abs=1e-6)
    visual = list((tmp_path / "out" / "visual").glob("*.png"))
    assert any("GOPR0001" in p.name for p in visual), visual
    assert "GoPro (captured deblur)" in (tmp_path / "out" / "fig2" / "report.md").read_text()


def test_one_failing_experiment_never_costs_the_others(tmp_path, images, monkeypatch):
    """``jaxir experiment a b``: when a refuses its input (one-line JaxirInputError), b still runs and the
    overview holds b; the error is returned by name."""
    def refuse(options):
        raise JaxirInputError("a setting the model refuses")

    broken = dataclasses.replace(experiments.get("fig5"), name="fig6", plan=refuse)
    real = experiments.get
    monkeypatch.setattr(experiments, "get", lambda name: broken if name == "fig6" else real(name))
    runs, failed = experiments.run(["fig6", "fig5"], Options(images), tmp_path)
    assert [r.experiment.name for r in runs] == ["fig5"] and failed == {"fig6": "a setting the model refuses"}
    assert "## fig5" in (tmp_path / "report.md").read_text()
