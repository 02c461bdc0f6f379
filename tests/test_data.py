"""Files, folders, paired folders and bundled photos in ``jaxir.data``; input checks in ``jaxir.validation``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxir.data import (BUNDLED_PHOTOS, bundled_photos, crop_to_multiple, image_folder, load_image,
                        paired_folders, save_image)
from jaxir.errors import ImageLoadError, JaxirInputError
from jaxir.validation import as_rgb_batch

RNG = np.random.default_rng(1234)


def _u8(shape) -> np.ndarray:
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def _u16(shape) -> np.ndarray:
    return RNG.integers(0, 65536, shape, dtype=np.uint16)


def _f32(x) -> np.ndarray:
    """The loader's rounding: divide in float64, round once to float32."""
    return np.asarray(x, dtype=np.float32)


# --- load_image: formats and conversions ---------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".ppm", ".webp"])
def test_rgb8_round_trip_is_exact(tmp_path, suffix):
    arr = _u8((7, 9, 3))
    path = tmp_path / f"x{suffix}"
    Image.fromarray(arr).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    img = load_image(path)
    assert img.dtype == np.float32 and img.shape == (7, 9, 3)
    np.testing.assert_array_equal(img, _f32(arr / 255.0))


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    arr = _u8((6, 5))
    Image.fromarray(arr, mode="L").save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.shape == (6, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], _f32(arr / 255.0))


def test_one_bit_image(tmp_path):
    arr = RNG.integers(0, 2, (5, 8)).astype(bool)
    Image.fromarray(arr).save(tmp_path / "b.png")
    img = load_image(tmp_path / "b.png")
    np.testing.assert_array_equal(img, np.repeat(arr[..., None], 3, -1).astype(np.float32))


def test_gray16_keeps_full_precision(tmp_path):
    arr = _u16((5, 6))
    arr[0, :4] = [0, 256, 257, 65535]  # neighbours that 8 bits would merge
    Image.fromarray(arr).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as check:
        assert check.mode.startswith("I")  # really written as 16-bit
    img = load_image(tmp_path / "g16.png")
    assert img.shape == (5, 6, 3) and img.dtype == np.float32
    np.testing.assert_array_equal(img[..., 1], _f32(arr / 65535.0))
    assert img[0, 1, 0] != img[0, 2, 0] and img[0, 3, 0] == 1.0


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_rgb16_keeps_full_precision(tmp_path, suffix):
    cv2 = pytest.importorskip("cv2")
    arr = _u16((9, 11, 3))
    arr[0, 0] = [256, 257, 65535]
    path = tmp_path / f"rgb16{suffix}"
    assert cv2.imwrite(str(path), arr[..., ::-1])  # OpenCV writes BGR
    img = load_image(path)
    assert img.shape == (9, 11, 3) and img.dtype == np.float32
    np.testing.assert_array_equal(img, _f32(arr / 65535.0))


def test_rgba16_transparent_composites_with_full_precision(tmp_path):
    cv2 = pytest.importorskip("cv2")
    arr = _u16((4, 5, 4))
    path = tmp_path / "rgba16.png"
    assert cv2.imwrite(str(path), arr[..., [2, 1, 0, 3]])
    with pytest.raises(ImageLoadError, match="transparent"):
        load_image(path)
    colour, a = arr[..., :3] / 65535.0, arr[..., 3:] / 65535.0
    np.testing.assert_array_equal(load_image(path, alpha="drop"), _f32(colour))
    np.testing.assert_allclose(load_image(path, alpha="black"), colour * a, rtol=0, atol=1e-7)


def test_palette_image_expands_to_rgb(tmp_path):
    palette = _u8((256, 3))
    index = RNG.integers(0, 256, (6, 7), dtype=np.uint8)
    img = Image.fromarray(index, mode="P")
    img.putpalette(palette.ravel().tolist())
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), _f32(palette[index] / 255.0))


def test_palette_with_transparency_follows_alpha_rules(tmp_path):
    palette = _u8((4, 3))
    index = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    img = Image.fromarray(index, mode="P")
    img.putpalette(palette.ravel().tolist())
    img.save(tmp_path / "pt.png", transparency=0)  # colour 0 is fully transparent
    with pytest.raises(ImageLoadError, match="transparent"):
        load_image(tmp_path / "pt.png")
    white = load_image(tmp_path / "pt.png", alpha="white")
    np.testing.assert_array_equal(white[0, 0], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(white[1, 1], _f32(palette[3] / 255.0))


def test_opaque_rgba_drops_alpha_silently(tmp_path):
    arr = _u8((5, 4, 4))
    arr[..., 3] = 255
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "o.png")
    np.testing.assert_array_equal(load_image(tmp_path / "o.png"), _f32(arr[..., :3] / 255.0))


@pytest.fixture
def transparent_png(tmp_path):
    arr = np.array([[[200, 100, 50, 128], [10, 20, 30, 0]],
                    [[0, 255, 0, 255], [255, 255, 255, 64]]], dtype=np.uint8)
    path = tmp_path / "t.png"
    Image.fromarray(arr, mode="RGBA").save(path)
    return path, arr[..., :3] / 255.0, arr[..., 3:] / 255.0


def test_transparent_rgba_is_refused_by_default(transparent_png):
    path, _, _ = transparent_png
    with pytest.raises(ImageLoadError, match=r"t\.png.*transparent.*alpha='drop', 'white' or 'black'"):
        load_image(path)


@pytest.mark.parametrize("mode", ["white", "black", "drop"])
def test_transparent_rgba_composited(transparent_png, mode):
    path, colour, a = transparent_png
    expected = {"white": colour * a + (1.0 - a), "black": colour * a, "drop": colour}[mode]
    img = load_image(path, alpha=mode)
    assert img.shape == (2, 2, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img, expected, rtol=0, atol=1e-7)
    if mode == "white":  # the fully transparent pixel becomes the background
        np.testing.assert_array_equal(img[0, 1], [1.0, 1.0, 1.0])
        np.testing.assert_allclose(img[0, 0], [200 / 255 * 128 / 255 + 127 / 255, 100 / 255 * 128 / 255 + 127 / 255,
                                               50 / 255 * 128 / 255 + 127 / 255], atol=1e-7)
    if mode == "black":
        np.testing.assert_array_equal(img[0, 1], [0.0, 0.0, 0.0])


def test_gray_alpha_composites_and_replicates(tmp_path):
    arr = np.array([[[100, 0], [100, 255]]], dtype=np.uint8)
    Image.fromarray(arr, mode="LA").save(tmp_path / "la.png")
    img = load_image(tmp_path / "la.png", alpha="white")
    np.testing.assert_allclose(img, [[[1.0] * 3, [100 / 255] * 3]], atol=1e-7)


def test_float_tiff(tmp_path):
    arr = RNG.random((4, 5)).astype(np.float32)
    Image.fromarray(arr, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "f.tif")[..., 2], arr)
    Image.fromarray(arr * 2.0, mode="F").save(tmp_path / "f2.tif")
    with pytest.raises(ImageLoadError, match="outside"):
        load_image(tmp_path / "f2.tif")


def test_truncated_file_names_the_path(tmp_path):
    Image.fromarray(_u8((64, 64, 3))).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.png.*not a readable image") as err:
        load_image(tmp_path / "cut.png")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, content", [("junk.png", bytes(range(256)) * 4), ("notes.txt", b"not an image\n"),
                                           ("empty.jpg", b"")])
def test_non_image_file_names_the_path(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageLoadError, match=name.replace(".", r"\.")):
        load_image(tmp_path / name)


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match=r"nope\.png: no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="no such file"):  # a folder is not a file
        load_image(tmp_path)


def test_unknown_alpha_mode(tmp_path):
    with pytest.raises(JaxirInputError, match="alpha must be one of"):
        load_image(tmp_path / "x.png", alpha="grey")


def test_load_errors_are_input_errors():
    assert issubclass(ImageLoadError, JaxirInputError) and issubclass(JaxirInputError, ValueError)


# --- save_image, crop_to_multiple ----------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    on_grid = _f32(_u8((8, 6, 3)) / 255.0)
    save_image(tmp_path / "sub" / "a.png", on_grid)  # creates the folder
    np.testing.assert_array_equal(load_image(tmp_path / "sub" / "a.png"), on_grid)
    arbitrary = RNG.random((8, 6, 3)).astype(np.float32)
    save_image(tmp_path / "b.png", arbitrary)
    np.testing.assert_allclose(load_image(tmp_path / "b.png"), arbitrary, atol=0.5 / 255 + 1e-7)


def test_save_clips_and_rounds_half_up(tmp_path):
    img = np.array([[[-0.2, 1.3, 0.5 / 255], [127.5 / 255, 1.0, 0.0]]], dtype=np.float64)
    save_image(tmp_path / "c.png", img)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "c.png")), [[[0, 255, 1], [128, 255, 0]]])


def test_save_rejects_non_rgb(tmp_path):
    with pytest.raises(JaxirInputError, match="HWC RGB"):
        save_image(tmp_path / "g.png", np.zeros((4, 4)))
    with pytest.raises(JaxirInputError, match="HWC RGB"):
        save_image(tmp_path / "g.png", np.zeros((4, 4, 4)))


@pytest.mark.parametrize("shape, multiple, expected", [((17, 30, 3), 8, (16, 24, 3)), ((16, 24, 3), 8, (16, 24, 3)),
                                                       ((2, 33, 35, 3), 4, (2, 32, 32, 3)),
                                                       ((5, 5, 3), 1, (5, 5, 3))])
def test_crop_to_multiple(shape, multiple, expected):
    img = RNG.random(shape).astype(np.float32)
    out = crop_to_multiple(img, multiple)
    assert out.shape == expected
    np.testing.assert_array_equal(out, img[..., : expected[-3], : expected[-2], :])  # top-left kept


def test_crop_to_multiple_too_small():
    with pytest.raises(JaxirInputError, match="7x20 pixels is smaller than the required multiple 8"):
        crop_to_multiple(np.zeros((7, 20, 3), np.float32), 8)


# --- folders -------------------------------------------------------------------------------------------------

def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return _f32(arr / 255.0)


def test_image_folder_names_and_order(tmp_path):
    expected = {
        "b": _write(tmp_path / "b.png", _u8((4, 4, 3))),
        "a": _write(tmp_path / "a.jpg", np.full((3, 5, 3), 128, np.uint8)),
        "sub/c": _write(tmp_path / "sub" / "c.bmp", _u8((2, 2, 3))),
        "sub/deeper/d": _write(tmp_path / "sub" / "deeper" / "d.PNG", _u8((2, 3, 3))),
    }
    (tmp_path / "readme.txt").write_text("not an image")
    records = list(image_folder(tmp_path))
    assert [r.name for r in records] == ["a", "b", "sub/c", "sub/deeper/d"]
    for r in records:
        assert r.source.startswith(str(tmp_path)) and r.image.dtype == np.float32
        if r.name != "a":  # JPEG is lossy
            np.testing.assert_array_equal(r.image, expected[r.name])
    assert len({r.name for r in records}) == len(records)


def test_image_folder_empty_or_missing(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(JaxirInputError, match="holds no images"):
        list(image_folder(tmp_path))
    with pytest.raises(JaxirInputError, match="not a folder"):
        list(image_folder(tmp_path / "missing"))


def test_paired_folders_flat_layout(tmp_path):
    gts = {n: _write(tmp_path / "sharp" / f"{n}.png", _u8((6, 4, 3))) for n in ("002", "001")}
    lqs = {n: _write(tmp_path / "blur" / f"{n}.png", _u8((6, 4, 3))) for n in ("002", "001")}
    pairs = list(paired_folders(tmp_path))
    assert [(gt.name, lq.name) for gt, lq in pairs] == [("001", "001"), ("002", "002")]
    for gt, lq in pairs:
        np.testing.assert_array_equal(gt.image, gts[gt.name])
        np.testing.assert_array_equal(lq.image, lqs[lq.name])
        assert "sharp" in gt.source and "blur" in lq.source


def test_paired_folders_gopro_layout(tmp_path):
    written = {}
    for scene in ("GOPR0410_11_00", "GOPR0384_11_01"):
        for frame in ("000002", "000001"):
            gt = _write(tmp_path / scene / "sharp" / f"{frame}.png", _u8((4, 6, 3)))
            lq = _write(tmp_path / scene / "blur" / f"{frame}.png", _u8((4, 6, 3)))
            written[f"{scene}/{frame}"] = (gt, lq)
    (tmp_path / "notes").mkdir()  # a folder without sharp/ is not a scene
    pairs = list(paired_folders(tmp_path))
    assert [gt.name for gt, _ in pairs] == sorted(written)
    for gt, lq in pairs:
        np.testing.assert_array_equal(gt.image, written[gt.name][0])
        np.testing.assert_array_equal(lq.image, written[gt.name][1])


def test_paired_folders_custom_names(tmp_path):
    _write(tmp_path / "gt" / "x.png", _u8((2, 2, 3)))
    _write(tmp_path / "lq" / "x.png", _u8((2, 2, 3)))
    assert [gt.name for gt, _ in paired_folders(tmp_path, gt_dir="gt", lq_dir="lq")] == ["x"]


def test_paired_folders_unmatched(tmp_path):
    _write(tmp_path / "sharp" / "001.png", _u8((2, 2, 3)))
    _write(tmp_path / "sharp" / "002.png", _u8((2, 2, 3)))
    _write(tmp_path / "blur" / "001.png", _u8((2, 2, 3)))
    _write(tmp_path / "blur" / "003.png", _u8((2, 2, 3)))
    with pytest.raises(JaxirInputError, match=r"do not pair up; unmatched: \['002', '003'\]"):
        list(paired_folders(tmp_path))


def test_paired_folders_size_mismatch(tmp_path):
    _write(tmp_path / "s1" / "sharp" / "001.png", _u8((4, 4, 3)))
    _write(tmp_path / "s1" / "blur" / "001.png", _u8((4, 5, 3)))
    with pytest.raises(JaxirInputError, match=r"s1/001: GT \(4, 4\) and LQ \(4, 5\) sizes differ"):
        list(paired_folders(tmp_path))


def test_paired_folders_without_the_folders(tmp_path):
    _write(tmp_path / "x.png", _u8((2, 2, 3)))
    with pytest.raises(JaxirInputError, match="expected 'sharp/' and 'blur/' folders"):
        list(paired_folders(tmp_path))
    with pytest.raises(JaxirInputError, match="expected 'sharp/'"):
        list(paired_folders(tmp_path / "missing"))


# --- bundled photos ------------------------------------------------------------------------------------------

def test_bundled_photos_all():
    records = bundled_photos()
    assert [r.name for r in records] == list(BUNDLED_PHOTOS)
    for r in records:
        assert r.image.dtype == np.float32 and r.image.ndim == 3 and r.image.shape[-1] == 3, r.name
        assert r.image.min() >= 0.0 and r.image.max() <= 1.0, r.name
        assert r.source == f"skimage.data.{BUNDLED_PHOTOS[r.name]}"


def test_bundled_photos_match_skimage():
    import skimage.data

    astronaut, camera = bundled_photos(["astronaut", "camera"])
    np.testing.assert_array_equal(astronaut.image, _f32(skimage.data.astronaut() / 255.0))
    gray = _f32(skimage.data.camera() / 255.0)
    np.testing.assert_array_equal(camera.image, np.repeat(gray[..., None], 3, -1))
    (motorcycle,) = bundled_photos(["motorcycle"])
    np.testing.assert_array_equal(motorcycle.image, _f32(skimage.data.stereo_motorcycle()[0] / 255.0))


def test_bundled_photos_unknown_name():
    with pytest.raises(JaxirInputError, match=r"unknown bundled photos \['lena'\]; choose from"):
        bundled_photos(["astronaut", "lena"])


# --- validation.as_rgb_batch ---------------------------------------------------------------------------------

def test_as_rgb_batch_shapes():
    img = jnp.full((5, 6, 3), 0.5, jnp.float32)
    batch, batched = as_rgb_batch(img)
    assert batch.shape == (1, 5, 6, 3) and not batched
    batch, batched = as_rgb_batch(np.zeros((2, 5, 6, 3), np.float32))
    assert batch.shape == (2, 5, 6, 3) and batched and isinstance(batch, jax.Array)


@pytest.mark.parametrize("x, match", [
    (np.zeros((5, 6), np.float32), r"got shape \(5, 6\) \(grayscale\? replicate it to 3 channels"),
    (np.zeros((5, 6, 1), np.float32), r"expected 3 channels .*grayscale: replicate"),
    (np.zeros((5, 6, 4), np.float32), r"RGBA: drop or composite the alpha"),
    (np.zeros((2, 3, 5, 6), np.float32), r"channels must be last: NHWC"),
    (np.zeros((1, 2, 5, 6, 3), np.float32), "expected an RGB image HWC or a batch NHWC"),
    (np.zeros((5, 6, 3), np.uint8), r"got dtype uint8; convert integers with x / 255"),
    (np.zeros((5, 6, 3), np.uint16), r"got dtype uint16; convert integers with x / 65535"),
    ([[[0.0, 0.0, 0.0]]], "expected an array, got list"),
])
def test_as_rgb_batch_rejects(x, match):
    with pytest.raises(JaxirInputError, match=match) as err:
        as_rgb_batch(x, name="photo")
    assert str(err.value).startswith("photo: ")


def test_as_rgb_batch_values():
    x = np.full((4, 4, 3), 0.5, np.float32)
    x[0, 0, 0], x[1, 1, 1] = np.nan, np.inf
    with pytest.raises(JaxirInputError, match="contains 2 NaN or infinite values"):
        as_rgb_batch(x)
    with pytest.raises(JaxirInputError, match=r"range \[0, 255\] \(looks like 0..255: divide by 255\)"):
        as_rgb_batch(np.linspace(0, 255, 48, dtype=np.float32).reshape(4, 4, 3))
    with pytest.raises(JaxirInputError, match=r"values must lie in \[0, 1\], got range \[-0.5, 1\]$"):
        as_rgb_batch(np.linspace(-0.5, 1, 48, dtype=np.float32).reshape(4, 4, 3))
    as_rgb_batch(np.full((4, 4, 3), 1.0 + 5e-4, np.float32))  # resampler round-off is tolerated
    as_rgb_batch(np.full((4, 4, 3), -5e-4, np.float32))


def test_as_rgb_batch_inside_jit_checks_shapes_not_values():
    @jax.jit
    def f(x):
        batch, _ = as_rgb_batch(x)
        return batch.sum()

    bad = jnp.full((4, 4, 3), jnp.nan, jnp.float32)  # values are not checked on tracers
    assert bool(jnp.isnan(f(bad)))
    assert float(f(jnp.full((4, 4, 3), 300.0, jnp.float32))) == 300.0 * 48
    with pytest.raises(JaxirInputError, match="expected 3 channels"):
        f(jnp.zeros((4, 4, 4), jnp.float32))
