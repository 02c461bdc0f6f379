"""``jaxir restore``: a folder in, restored PNGs out, resumable; CLDM sampler options reach the DiffBIR pipeline;
bad requests end in one line."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxir
from helpers import needs_fixtures
from jaxir.cli import main
from jaxir.data import load_image, save_image
from jaxir.degradations.pipeline import Degradation
from jaxir.pipelines.diffbir import DiffBIR, DiffBIRSettings
from jaxir.restorers import get


def _folder(tmp_path, sizes=((24, 32), (20, 20))):
    folder = tmp_path / "lq"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate(sizes):
        save_image(folder / f"img{i}.png", rng.random((*size, 3)))
    return folder


def test_bicubic_folder_and_resume(tmp_path, capsys):
    folder, out = _folder(tmp_path), tmp_path / "out"
    argv = ["restore", str(folder), "--out", str(out), "--restorer", "bicubic", "--level", "sr2", "--quiet"]
    assert main(argv) == 0
    for i, size in enumerate(((24, 32), (20, 20))):
        restored = load_image(out / f"img{i}.png")
        assert restored.shape == (2 * size[0], 2 * size[1], 3)
        lq = jnp.asarray(load_image(folder / f"img{i}.png"))[None]
        expected = np.clip(np.asarray(get("bicubic").restore(lq, Degradation(scale=2), jax.random.key(0))[0]), 0, 1)
        assert np.abs(restored - np.round(expected * 255) / 255).max() <= 1 / 255 + 1e-6
    (out / "img1.png").unlink()
    capsys.readouterr()
    assert main(argv) == 0
    assert "restored 1 of 2 images" in capsys.readouterr().out
    assert not list(out.glob(".*partial*"))


@pytest.mark.parametrize("extra, message", [
    (["--restorer", "bicubic", "--steps", "4"], "bicubic: unknown setting 'steps'; its settings: none"),
    (["--restorer", "jaxir_cldm", "--sampler", "euler"], "jaxir_cldm: setting 'sampler' must be one of spaced, ddim"),
    (["--restorer", "jaxir_cldm", "--set", "steps=many"], "jaxir_cldm: setting 'steps' must be int, got 'many'"),
    (["--restorer", "jaxir_cldm", "--set", "stepz=3"], "jaxir_cldm: unknown setting 'stepz'; its settings:"),
    (["--restorer", "nope"], "unknown restorer 'nope'"),
    (["--restorer", "diffbir_v2"], "restorer diffbir_v2 unavailable: no checkpoint at"),
    (["--restorer", "bicubic", "--level", "sr4+blurx"], "bad degradation level"),
])
def test_bad_requests_are_one_line(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path / "none"))
    assert main(["restore", str(_folder(tmp_path)), "--out", str(tmp_path / "o"), "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxir: error:") and message in err and "\n" not in err


@needs_fixtures("diffbir")
def test_cldm_options_reach_the_pipeline(tmp_path, tiny_diffbir_dir):
    """The tiny DiffBIR checkpoint through the CLI with bicubic stage 1, DDIM 2 steps, CFG 2, from t=600: image i
    equals the pipeline run directly with key(seed) and sample id i (to 8-bit rounding)."""
    folder, out = _folder(tmp_path, sizes=((16, 24),)), tmp_path / "out"
    assert main(["restore", str(folder), "--out", str(out), "--restorer", "diffbir_v2", "--checkpoint",
                 str(tiny_diffbir_dir), "--stage1", "bicubic", "--level", "sr2", "--sampler", "ddim", "--steps", "2",
                 "--cfg-scale", "2", "--start-from-condition", "--t-start", "600", "--min-short-edge", "0",
                 "--seed", "3", "--quiet"]) == 0
    model, params = jaxir.load(tiny_diffbir_dir)
    settings = DiffBIRSettings.preset("v2", sampler="ddim", steps=2, cfg_scale=2.0, start_from_condition=True,
                                      t_start=600, min_short_edge=0)
    pipeline = DiffBIR(model, params, settings, stage1=get("bicubic").restore)
    lq = jnp.asarray(load_image(folder / "img0.png"))[None]
    expected = np.asarray(pipeline(lq, Degradation(scale=2), jax.random.key(3), sample_ids=[0])[0])
    restored = load_image(out / "img0.png")
    assert restored.shape == (32, 48, 3)
    assert np.abs(restored - expected).max() <= 0.5 / 255 + 1e-4
