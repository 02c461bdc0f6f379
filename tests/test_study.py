"""The main job: sweep planning, resumption after an interruption, report/plots, and the CLI."""

from __future__ import annotations

import csv
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import photo
from jaxir.cli import main
from jaxir.data import ImageRecord
from jaxir.degradations import Degradation, parse_level
from jaxir.errors import JaxirInputError
from jaxir.metrics import niqe, psnr, ssim
from jaxir.restorers import get
from jaxir.restorers.base import Restorer, deterministic
from jaxir.study.results import read_results
from jaxir.study.cells import evaluate_cell
from jaxir.study.runner import StudyConfig, run_study

pytestmark = pytest.mark.slow   # compiles whole models or runs training / pipelines

LEVELS = (Degradation(scale=2), Degradation(blur_sigma=2.0))


def _images():
    return [ImageRecord("chelsea", photo("chelsea")[:98, :101], "test"),
            ImageRecord("coffee", photo("coffee")[:96, :96], "test")]


class _CountingRestorer:
    """Bicubic, counting calls and optionally interrupting (as Ctrl-C would) at a given call."""

    def __init__(self, interrupt_at: int | None = None):
        self.calls = 0
        self.interrupt_at = interrupt_at

    def __call__(self, lq, degradation):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return get("bicubic").restore(lq, degradation, jax.random.key(0))


def _restorer(fn):
    return Restorer("counting", lambda settings: deterministic(fn), ("sr", "deblur"), "classical", "test double")


def test_interrupted_sweep_resumes_without_recomputing(tmp_path):
    config = StudyConfig(images=("chelsea", "coffee"), levels=LEVELS, restorers=("counting",))
    first = _CountingRestorer(interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, _images(), [_restorer(first)], tmp_path, progress=False)
    assert len(read_results(tmp_path / "results.csv")) == 2
    second = _CountingRestorer()
    rows = run_study(config, _images(), [_restorer(second)], tmp_path, progress=False).rows
    assert second.calls == 2 and len(rows) == 4
    fresh = run_study(config, _images(), [_restorer(_CountingRestorer())], tmp_path / "fresh", progress=False).rows
    key = lambda r: (r["image"], r["level"])  # noqa: E731
    assert {key(r): r["psnr"] for r in rows} == pytest.approx({key(r): r["psnr"] for r in fresh}, abs=1e-6)


def test_partial_last_line_is_ignored_and_repaired(tmp_path):
    config = StudyConfig(images=("chelsea", "coffee"), levels=LEVELS[:1], restorers=("bicubic",))
    run_study(config, _images(), [get("bicubic")], tmp_path, progress=False)
    path = tmp_path / "results.csv"
    text = path.read_text()
    path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1] + "coffee,SR x2,sr,2.0")  # cut mid-row
    assert len(read_results(path)) == 1
    rows = run_study(config, _images(), [get("bicubic")], tmp_path, progress=False).rows
    assert len(rows) == 2
    with open(path, newline="") as f:
        assert len([r for r in csv.DictReader(f) if r["seconds"]]) == 2


def test_other_settings_in_same_folder_refused(tmp_path):
    config = StudyConfig(images=("chelsea",), levels=LEVELS[:1], restorers=("bicubic",))
    run_study(config, _images()[:1], [get("bicubic")], tmp_path, progress=False)
    with pytest.raises(JaxirInputError, match="other settings"):
        run_study(dataclasses.replace(config, seed=1), _images()[:1], [get("bicubic")], tmp_path, progress=False)


def test_cell_metrics_are_the_library_metrics():
    gt = photo("chelsea")[:96, :128]
    level = Degradation(blur_sigma=2.0, noise=0.02)
    key = jax.random.key(3)
    row, out, _ = evaluate_cell(gt, level, get("wiener"), key)
    expected = get("wiener").restore(level(gt[None], key), level, key)
    expected = np.floor(np.clip(np.asarray(expected), 0, 1) * 255 + 0.5) / 255
    np.testing.assert_allclose(out, expected[0], atol=1e-6)
    assert row["psnr"] == pytest.approx(float(psnr(out, gt, y_channel=True)), abs=1e-9)
    assert row["ssim"] == pytest.approx(float(ssim(out, gt, y_channel=True)), abs=1e-9)
    assert row["niqe"] == pytest.approx(float(niqe(out)), abs=1e-9)


def test_parse_level():
    assert parse_level("sr4") == Degradation(scale=4)
    assert parse_level("blur2+noise0.05") == Degradation(blur_sigma=2.0, noise=0.05)
    assert parse_level("sr2+torch+jpeg40") == Degradation(scale=2, resize="torch", jpeg_quality=40)
    with pytest.raises(JaxirInputError, match="unknown part"):
        parse_level("sharpen3")
    with pytest.raises(JaxirInputError, match="cannot read"):
        parse_level("srX")


def test_cli_study_writes_csv_report_plots(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    from jaxir.data import save_image

    save_image(folder / "a.png", photo("astronaut")[:100, :104])
    out = tmp_path / "out"
    argv = ["study", "--images", str(folder), "--levels", "sr2,blur1", "--out", str(out), "--quiet", "--save-images"]
    assert main(argv) == 0
    rows = read_results(out / "results.csv")
    assert {(r["level"], r["restorer"]) for r in rows} == {("SR x2", "bicubic"), ("SR x2", "jaxir_cnn"),
                                                           ("SR x2", "jaxir_cldm"), ("blur σ=1", "bicubic"),
                                                           ("blur σ=1", "wiener")}
    assert all(r["height"] == 100 and r["width"] == 104 for r in rows)
    report = (out / "report.md").read_text()
    assert "| SR x2 | 0.5 |" in report and "wiener" in report
    for name in ("fig1_perception_distortion.png", "fig2_metrics_vs_degradation.png"):
        assert (out / name).stat().st_size > 10_000
    assert (out / "images" / "SR_x2" / "bicubic" / "a.png").exists()
    assert main(argv) == 0  # resumes: nothing to do, same rows
    assert len(read_results(out / "results.csv")) == 5


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["study", "--images", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxir: error:") and "holds no images" in err and "\n" not in err


class _NoisyRestorer:
    """Bicubic plus noise drawn from the restorer's key and sample id, as a CLDM draws its start noise; records the
    noise of every call."""

    def __init__(self):
        self.noise = []

    def __call__(self, lq, degradation, key, sample_ids):
        out = get("bicubic").restore(lq, degradation, key)
        noise = 0.02 * jax.random.normal(jax.random.fold_in(key, int(sample_ids[0])), out.shape)
        self.noise.append(np.asarray(noise))
        return jnp.clip(out + noise, 0, 1)


def _noisy(fn):
    return Restorer("noisy", lambda settings: fn, ("sr", "deblur"), "cldm", "test double")


def _by_cell(rows, restorer):
    return {(r["image"], r["level"]): (r["psnr"], r["ssim"], r["niqe"]) for r in rows if r["restorer"] == restorer}


def test_cell_keys_reach_the_restorer(tmp_path):
    """Each cell's restorer gets its own key: two images draw different noise, the same seed reruns bit-identical,
    another seed changes the stochastic rows and leaves the classical rows bit-identical, and a cell's result does
    not depend on the order or the subset of the cells run with it."""
    config = StudyConfig(images=("chelsea", "coffee"), levels=LEVELS, restorers=("noisy", "bicubic"))
    first = _NoisyRestorer()
    rows = run_study(config, _images(), [_noisy(first), get("bicubic")], tmp_path / "a", progress=False).rows
    assert not np.array_equal(first.noise[0][..., :96, :96, :], first.noise[1][..., :96, :96, :])
    again = run_study(config, _images(), [_noisy(_NoisyRestorer()), get("bicubic")], tmp_path / "b",
                      progress=False).rows
    assert _by_cell(rows, "noisy") == _by_cell(again, "noisy") and _by_cell(rows, "bicubic") == _by_cell(again, "bicubic")
    seed1 = run_study(dataclasses.replace(config, seed=1), _images(), [_noisy(_NoisyRestorer()), get("bicubic")],
                      tmp_path / "c", progress=False).rows
    assert _by_cell(seed1, "bicubic") == _by_cell(rows, "bicubic")
    changed = _by_cell(seed1, "noisy")
    assert all(changed[cell][0] != value[0] for cell, value in _by_cell(rows, "noisy").items())
    subset = run_study(dataclasses.replace(config, images=("coffee",), levels=LEVELS[::-1]), _images()[1:],
                       [_noisy(_NoisyRestorer())], tmp_path / "d", progress=False).rows
    assert _by_cell(subset, "noisy") == {cell: v for cell, v in _by_cell(rows, "noisy").items() if cell[0] == "coffee"}


def test_study_records_settings_and_cost(tmp_path):
    """study.json holds every restorer's effective settings (a study with other settings is refused), and the
    report states compilations and the time spent compiling apart from the cells' seconds."""
    import json

    from jaxir.study.main import run_main_study

    run, report = run_main_study(tmp_path, _images()[:1], LEVELS[:1], ["bicubic", "jaxir_cnn"],
                                 assignments={}, progress=False)
    stored = json.loads((tmp_path / "study.json").read_text())
    assert stored["settings"] == {"bicubic": {}, "jaxir_cnn": {}}
    text = report.read_text()
    assert f"{run.totals.compilations} compilations" in text and "| jaxir_cnn | 1 |" in text
    assert run.costs["jaxir_cnn"].compilations > 0 and run.totals.compilations >= run.costs["jaxir_cnn"].compilations
    with pytest.raises(JaxirInputError, match="unknown setting 'steps'"):
        run_main_study(tmp_path / "x", _images()[:1], LEVELS[:1], ["bicubic"], assignments={"bicubic:steps": "3"})
    with pytest.raises(JaxirInputError, match="no restorer of this run has a setting 'steps'"):
        run_main_study(tmp_path / "x", _images()[:1], LEVELS[:1], ["bicubic"], assignments={"steps": "3"})
