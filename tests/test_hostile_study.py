"""Hostile inputs and damaged run state through the study and the ``jaxir`` command (issue 15): every bad image
found before anything is computed (or skipped and reported), the documented conversions seen working in a study,
killed runs with ``--save-images``, and state files cut at every byte.

Studies here run the bicubic restorer on one deblurring level (bicubic is the identity there) over images just
above NIQE's 96×96 block, so each cell costs little more than its metrics.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from hostile_corpus import bomb_png, broken_files, converted_files, rgb_noise
from jaxir.cli import main
from jaxir.data import ImageRecord
from jaxir.degradations import Degradation
from jaxir.errors import JaxirInputError
from jaxir.restorers import get
from jaxir.study import runner
from jaxir.study.inputs import screen_images
from jaxir.study.results import HEADER, ResultsWriter, scan_results
from jaxir.study.runner import StudyConfig, image_path, run_study
from jaxir.study.store import CellStore

BLUR = Degradation(blur_sigma=2.0)   # label "blur σ=2": a two-byte character in every row of results.csv
SIZE = 100


def _record(name: str, seed: int) -> ImageRecord:
    return ImageRecord(name, rgb_noise(SIZE, SIZE, seed).astype(np.float32) / 255.0, f"{name}.png")


RECORDS = [_record("a", 1), _record("b", 2), _record("c", 3)]
CONFIG = StudyConfig(images=tuple(r.name for r in RECORDS), levels=(BLUR,), restorers=("bicubic",))


@pytest.fixture
def counted(monkeypatch):
    """The number of cells computed (evaluate_cell calls)."""
    calls = []
    evaluate = runner.evaluate_cell
    monkeypatch.setattr(runner, "evaluate_cell", lambda *a, **k: calls.append(a[0].shape) or evaluate(*a, **k))
    return calls


def _study(out: pathlib.Path, save_images: bool = False) -> list[dict]:
    return run_study(CONFIG, RECORDS, [get("bicubic")], out, save_images=save_images, progress=False).rows


# ------------------------------------------------------------------------------------ up-front checks of images

def _folder(tmp_path: pathlib.Path) -> tuple[pathlib.Path, set[str], set[str]]:
    """A folder of the whole corpus: (folder, the files a study can use, the files it cannot)."""
    folder = tmp_path / "photos"
    bad = set(broken_files(folder))
    good = set(converted_files(folder, SIZE, SIZE)) - {"one_pixel.png"}
    Image.fromarray(rgb_noise(SIZE, 40)).save(folder / "narrow.png")
    return folder, good, bad | {"one_pixel.png", "narrow.png"}


def test_study_lists_every_bad_image_before_computing_anything(tmp_path, capsys, counted):
    folder, _, bad = _folder(tmp_path)
    out = tmp_path / "out"
    assert main(["study", "--images", str(folder), "--levels", "blur2", "--restorers", "bicubic", "--out", str(out),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"jaxir: error: {len(bad)} of {len(bad) + 5} images cannot be used, nothing was computed")
    assert "\n" not in err and "--skip-bad-images" in err
    for name in bad:
        assert str(folder / name) in err
    assert "1x1 pixels is smaller than 96x96" in err and "100x40 pixels is smaller than 96x96" in err
    assert counted == [] and not out.exists()


def test_study_skips_bad_images_and_the_conversions_take_part(tmp_path, capsys):
    folder, good, bad = _folder(tmp_path)
    out = tmp_path / "out"
    argv = ["study", "--images", str(folder), "--levels", "blur2", "--restorers", "bicubic", "--out", str(out),
            "--quiet", "--skip-bad-images"]
    assert main(argv) == 0
    rows = scan_results(out / "results.csv")[0]
    assert sorted(r["image"] for r in rows) == sorted(pathlib.Path(n).stem for n in good)
    err = capsys.readouterr().err
    assert sorted(line.split(": ")[0].removeprefix(f"skipped {folder}/") for line in err.splitlines()
                  if line.startswith("skipped")) == sorted(bad)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Images skipped" in report and all(f"`{folder / name}`" in report for name in bad)


def test_bomb_in_a_study_names_it_and_how_to_raise_the_limit(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(rgb_noise(SIZE, SIZE)).save(folder / "fine.png")
    bomb_png(folder / "bomb.png", side=10_000)   # 10⁸ pixels, over the default limit
    argv = ["study", "--images", str(folder), "--levels", "blur2", "--restorers", "bicubic", "--out",
            str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert f"{folder / 'bomb.png'}: 10000x10000 pixels is more than the limit" in err and "--max-pixels" in err
    assert main([*argv, "--max-pixels", str(10**9)]) == 2   # raised: the file's missing pixels are what fail
    assert f"{folder / 'bomb.png'}: not a readable image" in capsys.readouterr().err


def test_library_study_refuses_a_small_image_before_any_cell(tmp_path, counted):
    tiny = ImageRecord("tiny", np.zeros((1, 1, 3), np.float32), "tiny.png")
    config = StudyConfig(images=("a", "tiny"), levels=(Degradation(scale=2),), restorers=("bicubic",))
    with pytest.raises(JaxirInputError, match=r"tiny\.png: 1x1 pixels .* smaller than 96x96"):
        run_study(config, [RECORDS[0], tiny], [get("bicubic")], tmp_path, progress=False)
    assert counted == [] and not (tmp_path / "results.csv").exists()


def test_size_rule_counts_the_crop_multiple_and_border():
    """×4 crops 98 → 96 and needs 96 (NIQE); an SSIM border of 45 at ×45 needs 11 + 90 = 101."""
    ok = ImageRecord("ok", np.zeros((98, 99, 3), np.float32), "ok.png")
    usable, bad = screen_images([ok], [], [Degradation(scale=4)], 4)
    assert usable == [ok] and bad == []
    with pytest.raises(JaxirInputError, match=r"98x99 pixels \(cropped to a multiple of 45: 90x90\) is smaller than "
                                              r"101x101"):
        screen_images([ok], [], [Degradation(scale=45)], 45)


def test_restore_lists_unreadable_files_or_skips_them(tmp_path, capsys):
    folder = tmp_path / "lq"
    folder.mkdir()
    Image.fromarray(rgb_noise(8, 8)).save(folder / "fine.png")
    (folder / "zero.png").write_bytes(b"")
    bomb_png(folder / "bomb.png")
    argv = ["restore", str(folder), "--out", str(tmp_path / "out"), "--restorer", "bicubic", "--level", "sr2",
            "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxir: error: 2 images cannot be read, nothing was restored") and "\n" not in err
    assert str(folder / "zero.png") in err and str(folder / "bomb.png") in err
    assert not (tmp_path / "out").exists()
    assert main([*argv, "--skip-bad-images"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fine.png"]


# ------------------------------------------------------------------------------------------- killed runs, images

def test_kill_after_the_image_before_the_row_recomputes_that_cell(tmp_path, monkeypatch, counted):
    put = CellStore.put
    seen = []

    def killed_on_second_row(self, key, measure, config, result, replace=False):
        seen.append(config["image"])
        if len(seen) == 2:
            raise KeyboardInterrupt
        return put(self, key, measure, config, result, replace)

    monkeypatch.setattr(CellStore, "put", killed_on_second_row)
    with pytest.raises(KeyboardInterrupt):
        _study(tmp_path, save_images=True)
    assert image_path(tmp_path, BLUR.label, "bicubic", "b").is_file()   # written, but its row is not
    assert [r["image"] for r in scan_results(tmp_path / "results.csv")[0]] == ["a"]
    monkeypatch.setattr(CellStore, "put", put)
    counted.clear()
    rows = _study(tmp_path, save_images=True)
    assert len(counted) == 2 and sorted(r["image"] for r in rows) == ["a", "b", "c"]


def test_row_without_its_image_is_not_done(tmp_path, counted):
    _study(tmp_path, save_images=True)
    image_path(tmp_path, BLUR.label, "bicubic", "b").unlink()
    counted.clear()
    rows = _study(tmp_path, save_images=True)
    assert len(counted) == 1 and image_path(tmp_path, BLUR.label, "bicubic", "b").is_file()
    assert sorted(r["image"] for r in rows) == ["a", "b", "c"]
    assert sorted(r["image"] for r in scan_results(tmp_path / "results.csv")[0]) == ["a", "b", "c"]


def test_kill_inside_the_image_write_leaves_no_image_and_no_row(tmp_path, monkeypatch):
    save = Image.Image.save

    def killed_mid_write(self, fp, *args, **kwargs):
        pathlib.Path(fp).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        _study(tmp_path, save_images=True)
    monkeypatch.setattr(Image.Image, "save", save)
    folder = image_path(tmp_path, BLUR.label, "bicubic", "a").parent
    assert list(folder.iterdir()) == [] and scan_results(tmp_path / "results.csv")[0] == []


# ----------------------------------------------------------------------------------- state files cut at every byte

def _complete_rows(data: bytes, cut: int) -> int:
    """Rows of a whole results file ``data`` that end (with their newline) within its first ``cut`` bytes."""
    return max(data[:cut].count(b"\n") - 1, 0)


def test_results_cut_at_every_byte_are_repaired_from_the_intact_rows(tmp_path, capsys):
    _study(tmp_path / "whole")
    data = (tmp_path / "whole" / "results.csv").read_bytes()
    assert "σ".encode() in data and data.startswith(HEADER.encode())
    path = tmp_path / "results.csv"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        rows, damaged = scan_results(path)
        assert len(rows) == _complete_rows(data, cut), cut
        assert damaged == int(cut > 0 and data[cut - 1:cut] != b"\n"), cut
        ResultsWriter(path)
        if damaged:   # rewritten from what was intact: whole lines only, readable again
            whole = data[: data.rindex(b"\n", 0, cut) + 1] if b"\n" in data[:cut] else HEADER.encode() + b"\n"
            assert path.read_bytes() == whole, cut
    assert "dropped 1 damaged line(s)" in capsys.readouterr().err


@pytest.mark.parametrize("inside", [0, 1, 2])
def test_results_cut_inside_sigma_are_written_again_without_recomputing(tmp_path, counted, capsys, inside):
    """results.csv is the store's export: cut anywhere (here before, inside and after the two bytes of a σ), it is
    written again whole from the store and no cell runs again."""
    _study(tmp_path)
    path = tmp_path / "results.csv"
    data = path.read_bytes()
    sigma = data.rindex("σ".encode())   # in the last row; cut before it, between its two bytes, after it
    path.write_bytes(data[: sigma + inside])
    counted.clear()
    rows = _study(tmp_path)
    assert counted == [] and sorted(r["image"] for r in rows) == ["a", "b", "c"]
    assert path.read_bytes() == data
    assert "written again from the cell store" in capsys.readouterr().err


def test_results_header_cut_or_file_deleted_is_written_again(tmp_path, counted):
    _study(tmp_path)
    path = tmp_path / "results.csv"
    data = path.read_bytes()
    path.write_bytes(HEADER.encode()[:20])
    counted.clear()
    _study(tmp_path)
    assert counted == [] and path.read_bytes() == data
    path.unlink()
    _study(tmp_path)
    assert counted == [] and path.read_bytes() == data


def test_damaged_cell_store_is_one_line_naming_it(tmp_path, capsys):
    _study(tmp_path)
    (tmp_path / "cells.sqlite").write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"cells.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(JaxirInputError, match=r"cells\.sqlite: not a jaxir cell store") as info:
        _study(tmp_path)
    assert "\n" not in str(info.value)


def test_foreign_results_file_is_refused_with_what_to_do(tmp_path, capsys):
    _study(tmp_path)
    (tmp_path / "results.csv").write_text("name,score\nx,1\n")
    with pytest.raises(JaxirInputError, match=r"results\.csv: not a jaxir results table .*move it away, or delete it"):
        _study(tmp_path)


def test_study_json_cut_at_every_byte_is_refused_with_what_to_delete(tmp_path, capsys, counted):
    _study(tmp_path)
    counted.clear()
    path = tmp_path / "study.json"
    data = path.read_bytes()
    assert json.loads(data) and data.endswith(b"}\n")
    for cut in range(len(data) - 1):   # the last byte is the newline after the JSON: without it, still whole
        path.write_bytes(data[:cut])
        with pytest.raises(JaxirInputError, match=rf"{path} is damaged .*delete {path} to keep those cells"):
            _study(tmp_path)
    assert counted == []
    path.write_bytes(data[: len(data) // 2])
    images = tmp_path / "photos"
    images.mkdir()
    Image.fromarray(rgb_noise(SIZE, SIZE)).save(images / "a.png")
    argv = ["study", "--images", str(images), "--levels", "blur2", "--restorers", "bicubic", "--out", str(tmp_path),
            "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"jaxir: error: {path} is damaged") and "\n" not in err


# ------------------------------------------------------------------------------------------------ training runs

def _train(out: pathlib.Path, steps: int):
    import jax.numpy as jnp

    from jaxir.train.loop import TrainConfig, train

    config = TrainConfig(steps=steps, log_every=1, checkpoint_every=1, eval_every=1)
    return train(lambda p, batch: (p["w"] ** 2).sum(), {"w": jnp.ones(2)}, lambda step: None, config, out,
                 progress=False)


def test_training_log_line_cut_by_a_kill_is_dropped_on_resume(tmp_path):
    _train(tmp_path, 2)
    log = tmp_path / "log.jsonl"
    data = log.read_bytes()
    log.write_bytes(data[:-5])   # the last record cut mid-line
    _train(tmp_path, 3)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 3]


def test_damaged_training_checkpoint_is_refused_with_what_to_delete(tmp_path):
    _train(tmp_path, 2)
    metadata = tmp_path / "last" / "2" / "default" / "_METADATA"
    metadata.write_bytes(metadata.read_bytes()[:10])
    with pytest.raises(JaxirInputError, match=rf"{tmp_path / 'last' / '2'}: the checkpoint to resume from is "
                                              rf"damaged .*delete {tmp_path / 'last' / '2'} to resume"):
        _train(tmp_path, 3)


def test_training_folder_names_every_unreadable_image_at_once(tmp_path):
    from jaxir.data.crops import training_images

    folder = tmp_path / "train"
    reasons = broken_files(folder)
    Image.fromarray(rgb_noise(32, 32)).save(folder / "fine.png")
    with pytest.raises(JaxirInputError, match=rf"{len(reasons)} unreadable images") as err:
        training_images(str(folder), min_size=16)
    assert all(f"{folder / name}: " in str(err.value) for name in reasons)


def test_cli_out_that_is_a_file_and_a_damaged_single_input_are_one_line(tmp_path, capsys):
    images = tmp_path / "photos"
    images.mkdir()
    Image.fromarray(rgb_noise(SIZE, SIZE)).save(images / "a.png")
    (tmp_path / "taken").write_text("a file, not a folder")
    assert main(["study", "--images", str(images), "--levels", "blur2", "--restorers", "bicubic", "--out",
                 str(tmp_path / "taken"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"jaxir: error: {tmp_path / 'taken'}: ") and "\n" not in err
    (tmp_path / "cut.png").write_bytes((images / "a.png").read_bytes()[:100])
    assert main(["restore", str(tmp_path / "cut.png"), "--out", str(tmp_path / "o"), "--restorer", "bicubic",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"jaxir: error: {tmp_path / 'cut.png'}: not a readable image") and "\n" not in err
