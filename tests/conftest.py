"""Shared test fixtures: BasicSR references and bundled photos, loaded once per session."""

from __future__ import annotations

import functools

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
