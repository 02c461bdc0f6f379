"""pytest fixtures shared by the test modules (plain helpers live in helpers.py)."""

from __future__ import annotations

import jax
import pytest

import basicsr_reference
from helpers import DIFFBIR_FIXTURES, convert_tiny_diffbir


@pytest.fixture(autouse=True)
def _highest_matmul_precision():
    """fp32 parity tests compare at full float32 matmul/conv precision."""
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="session")
def basicsr():
    return basicsr_reference.load()


@pytest.fixture(scope="session")
def tiny_diffbir_dir(tmp_path_factory):
    if not DIFFBIR_FIXTURES.is_dir():
        pytest.skip(f"reference fixtures not present: {DIFFBIR_FIXTURES}")
    return convert_tiny_diffbir(tmp_path_factory.mktemp("cldm") / "tiny")
