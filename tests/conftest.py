"""Shared test fixtures: BasicSR references and bundled photos, loaded once per session."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import numpy as np
import pytest

import basicsr_reference


@pytest.fixture(autouse=True)
def _highest_matmul_precision():
    """fp32 parity tests compare at full float32 matmul/conv precision."""
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="session")
def basicsr():
    return basicsr_reference.load()


@functools.cache
def photo(name: str, size: int | None = None) -> np.ndarray:
    """A bundled photo (float32 HWC), optionally its top-left size×size crop."""
    from jaxir.data import bundled_photos

    image = bundled_photos([name])[0].image
    return image if size is None else image[:size, :size]


DIFFBIR_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "diffbir"


def convert_tiny_diffbir(out: Path, *extra: str) -> Path:
    """Convert the tiny DiffBIR fixture checkpoints with the command line into ``out``."""
    from checkpoints_conversion.__main__ import main as convert_main

    assert convert_main(["diffbir", "--sd", str(DIFFBIR_FIXTURES / "sd_tiny.ckpt"),
                         "--controlnet", str(DIFFBIR_FIXTURES / "controlnet_tiny.pth"),
                         "--config", str(DIFFBIR_FIXTURES / "cldm_tiny.yaml"), "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_diffbir_dir(tmp_path_factory):
    if not DIFFBIR_FIXTURES.is_dir():
        pytest.skip("reference fixtures not present")
    return convert_tiny_diffbir(tmp_path_factory.mktemp("cldm") / "tiny")
