"""Helpers the test modules share (conftest.py holds only pytest fixtures and hooks).

``FIXTURES`` is the one place that knows where the reference fixtures live (``../shared/fixtures`` beside the
repository); :func:`needs_fixtures` skips a test with the missing path as the reason, never silently.
:func:`compilations` counts compilations through :mod:`jax.monitoring` (jaxir's public :class:`jaxir.cost.Meter`),
and :func:`compiled_functions` names the functions compiled in a block (``jax.log_compiles``), for the tests that
assert a program is not compiled again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import zlib
from pathlib import Path

import jax
import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
DIFFBIR_FIXTURES = FIXTURES / "diffbir"


def needs_fixtures(*parts: str):
    """Skip unless ``FIXTURES / parts`` exists; the reason names the missing path."""
    path = FIXTURES.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"reference fixtures not present: {path}")


@functools.cache
def photo(name: str, size: int | None = None) -> np.ndarray:
    """A bundled photo (float32 HWC), optionally its top-left size×size crop."""
    from jaxir.data import bundled_photos

    image = bundled_photos([name])[0].image
    return image if size is None else image[:size, :size]


def convert_tiny_diffbir(out: Path, *extra: str) -> Path:
    """Convert the tiny DiffBIR fixture checkpoints with the command line into ``out``."""
    from checkpoints_conversion.__main__ import main as convert_main

    assert convert_main(["diffbir", "--sd", str(DIFFBIR_FIXTURES / "sd_tiny.ckpt"),
                         "--controlnet", str(DIFFBIR_FIXTURES / "controlnet_tiny.pth"),
                         "--config", str(DIFFBIR_FIXTURES / "cldm_tiny.yaml"), "--out", str(out), *extra]) == 0
    return out


@contextlib.contextmanager
def compilations():
    """``with compilations() as cost: ...`` then ``cost().traces`` / ``cost().compilations`` of the block."""
    from jaxir.cost import Meter

    with Meter() as meter:
        yield lambda: meter.cost


@contextlib.contextmanager
def compiled_functions():
    """``with compiled_functions() as names: ...`` then ``names`` lists the function of every compilation in the
    block (``jax.log_compiles`` logs ``Compiling jit(NAME) …``), e.g. ``"sample_latent"``."""
    names: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            match = re.match(r"Compiling jit\((.+?)\)", record.getMessage())
            if match:
                names.append(match.group(1))

    handler, logger = Collect(), logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield names
    finally:
        logger.removeHandler(handler)


def direct(restorer_name: str, gt: np.ndarray, level, seed: int = 0, image: str = "astronaut", **settings) -> dict:
    """A study cell computed by hand (not through the runner): the study's key ``fold_in(fold_in(key(seed),
    crc32(level label)), crc32(image name))``, the restorer's restore stream, 8-bit output, Y-PSNR/SSIM, NIQE."""
    from jaxir.metrics import niqe, psnr, ssim
    from jaxir.metrics.color import quantize_uint8
    from jaxir.restorers import registered

    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), zlib.crc32(level.label.encode())),
                             zlib.crc32(image.encode()))
    lq = level(gt[None], key)
    restorer = registered()[restorer_name].configure(**settings)
    out = restorer.restore(lq, level, jax.random.fold_in(key, zlib.crc32(b"restore")), [0])
    out = np.asarray(quantize_uint8(out), np.float32) / 255.0
    border = int(level.scale) if level.task == "sr" else 0
    return {"psnr": float(psnr(out, gt[None], crop_border=border, y_channel=True)[0]),
            "ssim": float(ssim(out, gt[None], crop_border=border, y_channel=True)[0]),
            "niqe": float(niqe(out)[0])}


def close(row: dict, want: dict) -> None:
    """Every metric of ``want`` equal in ``row`` (to 1e-9: the same computation)."""
    for metric, value in want.items():
        assert row[metric] == pytest.approx(value, abs=1e-9), metric
