"""Reading and writing single images as float32 RGB in [0, 1].

Automatic, documented conversions on load (a person's photo folder holds every kind of file):
  * grayscale (L, I;16, I, F) is replicated to three channels;
  * 16-bit and 32-bit integer images are scaled by their full range (65535, 2**32 - 1), 16-bit RGB(A) too
    (Pillow decodes those to 8 bits; the low bytes are read in a second pass, see :func:`_low_byte_tiles`);
  * palette images are expanded to RGB;
  * an alpha channel is dropped when it is fully opaque; otherwise ``alpha`` decides: "error" (default)
    refuses, "drop" ignores it (as OpenCV's IMREAD_COLOR does), "white"/"black" composites onto that colour.
Crops to a model's multiple are never implicit: use :func:`crop_to_multiple`.

Pixel limit: a file's header can claim any size (a 100-byte PNG may announce 10⁵ × 10⁵ pixels, 120 GB as
float32), so the size is checked against ``max_pixels`` before any pixel is decoded. Pillow's own, global
decompression-bomb check is replaced by this one while jaxir reads a file, so the limit is jaxir's alone and
raising it (argument, ``JAXIR_MAX_PIXELS``, or ``--max-pixels`` on the command line) really raises it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxir import atomic
from jaxir.errors import ImageLoadError, JaxirInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
ALPHA_MODES = ("error", "drop", "white", "black")
DEFAULT_MAX_PIXELS = 89_478_485   # Pillow's default limit (a 0.25 GiB 24-bit bitmap; ~1 GiB as float32 RGB)
MAX_PIXELS_ENV = "JAXIR_MAX_PIXELS"
_PILLOW_LIMIT_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image with its identity: ``name`` is unique in its collection, ``source`` says where it came from."""

    name: str
    image: np.ndarray  # float32 HWC RGB in [0, 1]
    source: str


def _low_byte_tiles(img: Image.Image) -> list | None:
    """For a 16-bit RGB(A) file (not yet loaded), tiles that decode the low byte of each sample; else None.

    Pillow has no 16-bit colour mode: it decodes such files (PNG, TIFF) to 8 bits by keeping each sample's
    high byte. Decoding the same data with the opposite byte order keeps the low byte instead, with the
    file's own decoder (PNG filters, TIFF compression), so ``high * 256 + low`` is the exact 16-bit value.
    """
    if img.mode not in ("RGB", "RGBA") or not img.tile:
        return None
    swapped = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}
    tiles = []
    for tile in img.tile:
        args = tile[3]
        rawmode = args if isinstance(args, str) else (args[0] if args else None)
        match = re.fullmatch(r"(RGBA?);16([BLN])", rawmode) if isinstance(rawmode, str) else None
        if match is None:
            return None
        low = f"{match[1]};16{swapped[match[2]]}"
        fields = list(tile)
        fields[3] = low if isinstance(args, str) else (low, *args[1:])
        tiles.append(tile._make(fields) if hasattr(tile, "_make") else tuple(fields))
    return tiles


def _read_low_bytes(path: Path, tiles: list) -> np.ndarray:
    with Image.open(path) as img:
        img.tile = tiles
        img.load()
        return np.asarray(img, dtype=np.float64)


def _to_float_rgb(img: Image.Image, alpha: str, origin: str, low: np.ndarray | None = None) -> np.ndarray:
    """``low``: the low bytes of a 16-bit RGB(A) image whose high bytes ``img`` holds (see _low_byte_tiles)."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float64) / 65535.0
    elif mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        arr = arr / (65535.0 if arr.max() <= 65535 else 4294967295.0)
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if arr.max() > 1.0 or arr.min() < 0.0:
            raise ImageLoadError(f"{origin}: floating-point image with values outside [0, 1]")
    elif mode in ("RGB", "RGBA") and low is not None:  # 16-bit colour
        arr = (np.asarray(img, dtype=np.float64) * 256.0 + low) / 65535.0
    elif mode in ("1", "L", "LA", "RGB", "RGBA"):
        arr = np.asarray(img.convert(mode if mode != "1" else "L"), dtype=np.float64) / 255.0
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        arr = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    else:
        raise ImageLoadError(f"{origin}: unsupported image mode {mode!r}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] in (2, 4):  # colour channels + alpha
        colour, a = arr[..., :-1], arr[..., -1:]
        if np.all(a >= 1.0):
            arr = colour
        elif alpha == "error":
            raise ImageLoadError(f"{origin}: has transparent pixels; pass alpha='drop', 'white' or 'black' "
                                 "to decide what they become")
        elif alpha == "drop":
            arr = colour
        else:
            background = 1.0 if alpha == "white" else 0.0
            arr = colour * a + background * (1.0 - a)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr.astype(np.float32)


def _pixel_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels`` if given, else ``$JAXIR_MAX_PIXELS``, else the default."""
    if max_pixels is None:
        text = os.environ.get(MAX_PIXELS_ENV)
        if text is None:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(float(text))
        except ValueError:
            raise JaxirInputError(f"{MAX_PIXELS_ENV}={text!r} is not a number of pixels") from None
    if max_pixels < 1:
        raise JaxirInputError(f"the pixel limit must be at least 1, got {max_pixels}")
    return int(max_pixels)


@contextlib.contextmanager
def _without_pillow_limit():
    """Pillow's process-wide bomb check off while jaxir opens and decodes a file (jaxir checks its own limit
    instead); the lock keeps concurrent loads from restoring Pillow's limit under each other."""
    with _PILLOW_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def load_image(path: str | os.PathLike, alpha: str = "error", max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as float32 HWC RGB in [0, 1] (conversions and the pixel limit: see the module
    docstring). Every failure caused by the file is an :class:`ImageLoadError` naming it."""
    if alpha not in ALPHA_MODES:
        raise JaxirInputError(f"alpha must be one of {ALPHA_MODES}, got {alpha!r}")
    limit = _pixel_limit(max_pixels)
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: no such file")
    try:
        with _without_pillow_limit(), Image.open(path) as img:
            width, height = img.size
            if width * height > limit:
                raise ImageLoadError(
                    f"{path}: {width}x{height} pixels is more than the limit of {limit} (a damaged or hostile "
                    f"header?); to load it, raise the limit: max_pixels=, ${MAX_PIXELS_ENV} or --max-pixels")
            low_tiles = _low_byte_tiles(img)
            img.load()
            low = _read_low_bytes(path, low_tiles) if low_tiles else None
            arr = _to_float_rgb(img, alpha, str(path), low)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as err:
        if isinstance(err, ImageLoadError):
            raise
        raise ImageLoadError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None
    if not np.isfinite(arr).all():
        raise ImageLoadError(f"{path}: contains NaN or infinite values")
    return arr


def to_uint8(image) -> np.ndarray:
    """Float [0, 1] → uint8 by rounding half up after clipping, as image writers and MATLAB's im2uint8 do."""
    return np.floor(np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(path: str | os.PathLike, image) -> None:
    """Write a float HWC RGB image in [0, 1] as 8-bit (format from the suffix), atomically: a killed run
    leaves the complete file or none (see :mod:`jaxir.atomic`)."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise JaxirInputError(f"save_image expects HWC RGB, got shape {arr.shape}")
    if not np.isfinite(arr).all():   # NaN has no 8-bit value: writing it would store arbitrary pixels
        raise JaxirInputError(f"{path}: the image to save contains NaN or infinite values")
    with atomic.replacing(path) as temp:
        Image.fromarray(to_uint8(arr)).save(temp)


def crop_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Crop the bottom/right border so height and width are multiples of ``multiple`` (explicit, never silent)."""
    h, w = image.shape[-3], image.shape[-2]
    h2, w2 = h - h % multiple, w - w % multiple
    if h2 == 0 or w2 == 0:
        raise JaxirInputError(f"image of {h}x{w} pixels is smaller than the required multiple {multiple}")
    return image[..., :h2, :w2, :]
