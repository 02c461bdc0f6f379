"""The hostile-image corpus of the tests (issue 15), generated on the fly: files that are not usable images, and
files in every documented conversion (grayscale, 16-bit, palette, opaque RGBA, CMYK, 1×1)."""

from __future__ import annotations

import pathlib
import struct
import zlib

import numpy as np
from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: pathlib.Path, side: int = 100_000) -> pathlib.Path:
    """A 60-byte PNG whose header claims side × side RGB pixels (10¹⁰ by default: 120 GB as float32)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0"))
                     + _png_chunk(b"IEND", b""))
    return path


def rgb_noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def broken_files(folder: pathlib.Path) -> dict[str, str]:
    """{file name: what the error must say} for files that are not usable images."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb_noise(64, 64)).save(folder / "whole.png")
    data = (folder / "whole.png").read_bytes()
    (folder / "whole.png").unlink()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "zero.png").write_bytes(b"")
    (folder / "fake.png").write_text("this is a text file with a .png name\n")
    bomb_png(folder / "bomb.png")
    alpha = np.dstack([rgb_noise(32, 32), np.full((32, 32), 10, np.uint8)])
    Image.fromarray(alpha, mode="RGBA").save(folder / "transparent.png")
    return {"truncated.png": "not a readable image", "zero.png": "not a readable image",
            "fake.png": "not a readable image", "bomb.png": "100000x100000 pixels is more than the limit",
            "transparent.png": "transparent pixels"}


def converted_files(folder: pathlib.Path, height: int = 24, width: int = 20) -> dict[str, np.ndarray]:
    """{file name: the float32 RGB image load_image must return} for the documented conversions, each image
    ``height`` × ``width`` but one, 1×1."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb, expected = rgb_noise(height, width, seed=1), {}
    gray = rgb[..., 0]
    Image.fromarray(gray, mode="L").save(folder / "gray.png")
    expected["gray.png"] = np.repeat(gray[..., None] / 255.0, 3, -1)
    gray16 = (np.arange(height * width, dtype=np.uint16).reshape(height, width) * 137).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "gray16.png")
    expected["gray16.png"] = np.repeat(gray16[..., None] / 65535.0, 3, -1)
    palette = Image.fromarray(rgb).quantize(16)
    palette.save(folder / "palette.png")
    expected["palette.png"] = np.asarray(palette.convert("RGB")) / 255.0
    opaque = np.dstack([rgb, np.full((height, width), 255, np.uint8)])
    Image.fromarray(opaque, mode="RGBA").save(folder / "opaque_rgba.png")
    expected["opaque_rgba.png"] = rgb / 255.0
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(folder / "cmyk.tif")
    expected["cmyk.tif"] = np.asarray(cmyk.convert("RGB")) / 255.0
    Image.fromarray(rgb[:1, :1]).save(folder / "one_pixel.png")
    expected["one_pixel.png"] = rgb[:1, :1] / 255.0
    return {name: image.astype(np.float32) for name, image in expected.items()}
