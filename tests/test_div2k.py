"""DIV2K through the real tensorflow-datasets builder, offline.

The test writes tiny DIV2K archives in the official layout (``DIV2K_valid_HR.zip`` holding
``DIV2K_valid_HR/0801.png``, ``DIV2K_valid_LR_bicubic_X4.zip`` holding ``DIV2K_valid_LR_bicubic/X4/0801x4.png``,
and the same for train) into a folder passed as ``manual_dir``. The only thing patched is the builder's
registry of expected archive checksums, which is pointed at the test's archives; everything else is tfds'
own code: manual-download lookup, checksum validation, ZIP extraction, the builder's ``_generate_examples``,
TFRecord writing, decoding, and then jaxir's conversion.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxir.data import div2k
from jaxir.errors import JaxirInputError

SCALE = 4
HR_SIZE = (100, 96)  # H, W: enough for the study's metrics (NIQE needs 96²)
IDS = {"train": ["0001", "0002"], "valid": ["0801", "0802", "0803"]}


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _write_archives(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny DIV2K bicubic_x4 archives (official names and layout); returns {id: (hr, lr)} as uint8."""
    rng = np.random.default_rng(0)
    images = {}
    for part, ids in IDS.items():
        with zipfile.ZipFile(folder / f"DIV2K_{part}_HR.zip", "w") as hr_zip, \
                zipfile.ZipFile(folder / f"DIV2K_{part}_LR_bicubic_X{SCALE}.zip", "w") as lr_zip:
            for image_id in ids:
                hr = rng.integers(0, 256, (*HR_SIZE, 3), dtype=np.uint8)
                lr = rng.integers(0, 256, (HR_SIZE[0] // SCALE, HR_SIZE[1] // SCALE, 3), dtype=np.uint8)
                hr_zip.writestr(f"DIV2K_{part}_HR/{image_id}.png", _png(hr))
                lr_zip.writestr(f"DIV2K_{part}_LR_bicubic/X{SCALE}/{image_id}x{SCALE}.png", _png(lr))
                images[image_id] = (hr, lr)
    return images


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The fake archives, their registered checksums, and a data_dir prepared by the first div2k() call."""
    pytest.importorskip("tensorflow")
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.core.download import checksums

    tfds.disable_progress_bar()
    root = tmp_path_factory.mktemp("div2k")
    manual = root / "manual"
    manual.mkdir()
    images = _write_archives(manual)
    builder_cls = tfds.builder_cls("div2k")
    urls = builder_cls.builder_configs[f"bicubic_x{SCALE}"].download_urls.values()
    fake_infos = {url: checksums.compute_url_info(manual / url.rsplit("/", 1)[-1]) for url in urls}
    assert all(info.size > 0 for info in fake_infos.values())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builder_cls, "url_infos", fake_infos)
        first = list(div2k("validation", f"bicubic_x{SCALE}", data_dir=root / "tfds", manual_dir=manual))
    return {"root": root, "images": images, "first": first}


def _expected(pairs, images, ids):
    """Match each yielded pair to the archive image it came from (tfds stores examples in hashed order)."""
    by_hr = {images[i][0].tobytes(): i for i in ids}
    found = []
    for hr, lr in pairs:
        key = np.round(hr.image * 255.0).astype(np.uint8).tobytes()
        assert key in by_hr, "an HR image that the archives do not hold"
        found.append(by_hr[key])
    return found


def test_validation_pairs_round_trip(prepared):
    pairs, images = prepared["first"], prepared["images"]
    assert len(pairs) == len(IDS["valid"])
    found = _expected(pairs, images, IDS["valid"])
    assert sorted(found) == IDS["valid"]
    for (hr, lr), image_id in zip(pairs, found):
        hr_u8, lr_u8 = images[image_id]
        assert hr.image.dtype == np.float32 and lr.image.dtype == np.float32
        assert hr.image.shape == (*HR_SIZE, 3)
        assert lr.image.shape == (HR_SIZE[0] // SCALE, HR_SIZE[1] // SCALE, 3)
        # Exactly the values load_image gives for the same 8-bit PNG: x / 255 rounded once to float32.
        np.testing.assert_array_equal(hr.image, (hr_u8 / 255.0).astype(np.float32))
        np.testing.assert_array_equal(lr.image, (lr_u8 / 255.0).astype(np.float32))
    names = [hr.name for hr, _ in pairs]
    assert names == [f"{i:04d}" for i in range(len(pairs))]
    assert [lr.name for _, lr in pairs] == names
    assert all(hr.source.startswith("tfds:div2k/bicubic_x4:validation:") for hr, _ in pairs)


def test_prepared_data_reused_without_download(prepared):
    """The second call reads the prepared TFRecords (no archives, no checksum registry needed)."""
    pairs = list(div2k("validation", data_dir=prepared["root"] / "tfds", download=False))
    first = prepared["first"]
    assert [hr.name for hr, _ in pairs] == [hr.name for hr, _ in first]
    for (hr, lr), (hr0, lr0) in zip(pairs, first):
        np.testing.assert_array_equal(hr.image, hr0.image)
        np.testing.assert_array_equal(lr.image, lr0.image)


def test_train_split_and_slicing(prepared):
    data_dir = prepared["root"] / "tfds"
    train = list(div2k("train", data_dir=data_dir, download=False))
    assert sorted(_expected(train, prepared["images"], IDS["train"])) == IDS["train"]
    assert len(list(div2k("validation[:2]", data_dir=data_dir, download=False))) == 2


def test_not_prepared_without_download_is_a_clear_error(tmp_path):
    pytest.importorskip("tensorflow")
    with pytest.raises(JaxirInputError, match=r"not prepared in .*download=True") as err:
        div2k(data_dir=tmp_path / "empty", download=False)
    assert "\n" not in str(err.value)


def test_missing_tensorflow_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` fail
    with pytest.raises(JaxirInputError, match=r"needs tensorflow.*pip install 'jaxir\[tfds\]'") as err:
        div2k(data_dir=tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, match", [({"degradation": "bicubic_x5"}, "unknown DIV2K degradation"),
                                           ({"split": "test"}, "unknown DIV2K split")])
def test_bad_arguments_fail_before_tensorflow(kwargs, match, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(JaxirInputError, match=match):
        div2k(**kwargs)


def test_importing_jaxir_data_does_not_import_tensorflow():
    code = ("import sys, jaxir, jaxir.data; from jaxir.data import div2k; "
            "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_training_images_from_tfds(prepared):
    """``tfds:div2k/bicubic_x4:train`` gives the train split's HR images as uint8; a split that does not exist or a
    dataset that is not prepared (no download) is a one-line error."""
    from jaxir.data.crops import training_images

    data_dir = prepared["root"] / "tfds"
    images = training_images("tfds:div2k/bicubic_x4:train", min_size=8, data_dir=data_dir, download=False)
    expected = sorted(prepared["images"][i][0].tobytes() for i in IDS["train"])
    assert sorted(image.tobytes() for image in images.images) == expected
    assert all(image.dtype == np.uint8 and image.shape == (*HR_SIZE, 3) for image in images.images)
    assert images.names == ("div2k/bicubic_x4:train:0", "div2k/bicubic_x4:train:1")
    for spec in ("tfds:div2k/bicubic_x4:test", "tfds:div2k/bicubic_x2:train"):
        with pytest.raises(JaxirInputError, match=f"{spec} could not be loaded") as err:
            training_images(spec, min_size=8, data_dir=data_dir, download=False)
        assert "\n" not in str(err.value)


def test_experiment_runs_on_div2k_validation(prepared, tmp_path):
    """``jaxir experiment fig2 --div2k validation``: the cells are DIV2K's validation HR images as tfds gives them
    (whole; 100×96 is already a multiple of 4), degraded, restored and scored as for any image: each row equals
    bicubic SR ×2 computed here by hand."""
    import csv

    import jax

    from jaxir.cli import main
    from jaxir.degradations import parse_level
    from jaxir.metrics import psnr
    from jaxir.metrics.color import quantize_uint8
    from jaxir.restorers import registered
    from jaxir.study.experiment import image_digest

    code = main(["experiment", "fig2", "--div2k", "validation", "--data-dir", str(prepared["root"] / "tfds"),
                 "--models", "bicubic", "--levels", "sr2", "--crop", "0", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "fig2" / "results.csv").open(encoding="utf-8")))
    hrs = {hr.name: hr.image for hr, _ in prepared["first"]}
    assert sorted(r["image"] for r in rows) == sorted(hrs) and len(rows) == len(IDS["valid"])
    level = parse_level("sr2")
    for row in rows:
        gt = hrs[row["image"]]
        assert row["image_digest"] == image_digest(gt)
        out = registered()["bicubic"].restore(level(gt[None]), level, jax.random.key(0))
        out = np.asarray(quantize_uint8(out), np.float32) / 255.0
        assert float(row["psnr"]) == pytest.approx(float(psnr(out, gt[None], crop_border=2, y_channel=True)[0]),
                                                   abs=1e-9)
