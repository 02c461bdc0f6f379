"""Training crops from user images (jaxir.data.crops) and training the restorer on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxir
from jaxir.data import save_image
from jaxir.data.crops import RandomCrops, TrainingImages, training_images
from jaxir.errors import JaxirInputError


def _dihedral(image):
    """The 8 flips/rotations of an image."""
    out = []
    for t in (image, image.transpose(1, 0, 2)):
        out += [t, t[::-1], t[:, ::-1], t[::-1, ::-1]]
    return out


def _orientation(crop, image):
    """The index in ``_dihedral(image)`` of an orientation holding ``crop`` as a window, or None (brute force)."""
    k = crop.shape[0]
    for o, t in enumerate(_dihedral(image)):
        for i in range(t.shape[0] - k + 1):
            for j in range(t.shape[1] - k + 1):
                if np.array_equal(t[i:i + k, j:j + k], crop):
                    return o
    return None


def test_random_crops_are_flipped_windows_of_the_images_and_a_function_of_the_step():
    """Every crop is a window of one of the 8 flips/rotations of one image (checked by search); the same step gives
    the same batch, another step another; over 40 steps both images and all 8 orientations occur."""
    rng = np.random.default_rng(0)
    images = TrainingImages("test", ("a", "b"), (rng.integers(0, 256, (9, 7, 3), dtype=np.uint8),
                                                 rng.integers(0, 256, (6, 11, 3), dtype=np.uint8)))
    crops = RandomCrops(images, batch=4, size=5, seed=3)
    first = crops(0)
    assert first.shape == (4, 5, 5, 3) and first.dtype == np.float32
    np.testing.assert_array_equal(crops(0), first)
    assert not np.array_equal(crops(1), first)
    assert not np.array_equal(RandomCrops(images, 4, 5, seed=4)(0), first)
    seen_images, seen_orientations = set(), set()
    for step in range(40):
        for crop in np.round(crops(step) * 255).astype(np.uint8):
            found = [(n, _orientation(crop, im)) for n, im in enumerate(images.images)]
            found = [(n, o) for n, o in found if o is not None]
            assert found, "a crop that is no window of any image"
            seen_images.update(n for n, _ in found)
            seen_orientations.add(found[0][1])
    assert seen_images == {0, 1} and len(seen_orientations) == 8


def test_training_images_from_a_folder_and_its_errors(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (30, 18, 3), dtype=np.uint8)
    save_image(tmp_path / "a.png", a / 255.0)
    save_image(tmp_path / "sub" / "b.png", b / 255.0)
    images = training_images(str(tmp_path), min_size=16)
    assert images.names == ("a", "sub/b")
    np.testing.assert_array_equal(images.images[0], a)
    np.testing.assert_array_equal(images.images[1], b)
    assert images.describe().startswith(f"{tmp_path}: 2 images, 0.0 Mpx, sha256 ")
    assert training_images(f"folder:{tmp_path}", min_size=16).digest() == images.digest()
    with pytest.raises(JaxirInputError, match=r"training image sub/b is 30×18, smaller than the 20-pixel crop"):
        training_images(str(tmp_path), min_size=20)
    with pytest.raises(JaxirInputError, match="neither a folder nor tfds"):
        training_images(str(tmp_path / "missing"), min_size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(JaxirInputError, match="holds no images"):
        training_images(str(tmp_path / "empty"), min_size=8)


def test_train_command_on_a_folder(tmp_path, capsys):
    """``jaxir train --data FOLDER`` trains on its crops and records them in the provenance; a folder holding an
    evaluation photo is refused."""
    from jaxir.cli import main
    from jaxir.data import bundled_photos

    rng = np.random.default_rng(2)
    folder = tmp_path / "photos"
    for i in range(3):
        save_image(folder / f"{i}.png", rng.random((40, 36, 3)))
    tiny = ["--steps", "2", "--batch", "2", "--crop", "16", "--features", "4", "--blocks", "1", "--eval-every", "2",
            "--quiet"]
    assert main(["train", "--task", "sr2", "--data", str(folder), *tiny, "--out", str(tmp_path / "run")]) == 0
    provenance = json.loads((tmp_path / "run" / "model" / "provenance.json").read_text())
    assert provenance["training_data"].startswith(f"{folder}: 3 images, 0.0 Mpx, sha256 ")
    model, params = jaxir.load(tmp_path / "run" / "model")
    assert model.config.scale == 2
    save_image(folder / "chelsea.png", bundled_photos(["chelsea"])[0].image)
    capsys.readouterr()
    assert main(["train", "--task", "sr2", "--data", str(folder), *tiny, "--out", str(tmp_path / "run2")]) != 0
    assert "jaxir: error: training data holds the evaluation photo 'chelsea'" in capsys.readouterr().err
    assert main(["train", "--task", "vae", "--data", str(folder), *tiny, "--out", str(tmp_path / "run3")]) != 0
    assert "--data applies to the restorer tasks (sr2, sr4, blur2); vae trains on dead leaves only" \
        in capsys.readouterr().err
