"""Blur kernels (normalised to sum 1), as NumPy arrays built on the host or JAX arrays from traced parameters.

The isotropic and anisotropic Gaussians follow BasicSR's ``bivariate_Gaussian`` (Real-ESRGAN's degradation
code): ``k(x) = exp(-½ xᵀ Σ⁻¹ x)``, ``Σ = R diag(σx², σy²) Rᵀ`` with R the rotation by θ, on a centred grid.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from jaxir.errors import JaxirInputError


def kernel_size_for_sigma(sigma: float) -> int:
    """Odd kernel size covering ±3σ: ``2·ceil(3σ) + 1`` (σ = 1 → 7, 2 → 13, 20 → 121)."""
    if sigma <= 0:
        raise JaxirInputError(f"blur sigma must be positive, got {sigma}")
    return 2 * math.ceil(3 * sigma) + 1


def gaussian_kernel_1d(sigma: float, size: int | None = None) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product with itself is the isotropic 2-D kernel."""
    size = kernel_size_for_sigma(sigma) if size is None else size
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _grid(size: int):
    ax = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    return jnp.meshgrid(ax, ax, indexing="xy")


def _quadratic_form(size: int, sigma_x, sigma_y, theta):
    """``xᵀ Σ⁻¹ x`` on the centred grid, ``Σ⁻¹ = R diag(1/σx², 1/σy²) Rᵀ`` with R the rotation by θ."""
    x, y = _grid(size)
    c, s = jnp.cos(theta), jnp.sin(theta)
    a = c**2 / sigma_x**2 + s**2 / sigma_y**2
    b = c * s * (1 / sigma_x**2 - 1 / sigma_y**2)
    d = s**2 / sigma_x**2 + c**2 / sigma_y**2
    return a * x**2 + 2 * b * x * y + d * y**2


def anisotropic_gaussian_kernel(size: int, sigma_x, sigma_y, theta) -> jnp.ndarray:
    """Anisotropic (rotated) Gaussian of odd ``size``; σ and θ may be traced (Real-ESRGAN's bivariate Gaussian)."""
    k = jnp.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta))
    return k / k.sum()


def generalized_gaussian_kernel(size: int, sigma_x, sigma_y, theta, beta) -> jnp.ndarray:
    """Generalised Gaussian ``exp(-½ (xᵀ Σ⁻¹ x)^β)`` (BasicSR ``bivariate_generalized_Gaussian``)."""
    k = jnp.exp(-0.5 * jnp.power(_quadratic_form(size, sigma_x, sigma_y, theta), beta))
    return k / k.sum()


def plateau_kernel(size: int, sigma_x, sigma_y, theta, beta) -> jnp.ndarray:
    """Plateau-shaped kernel ``1 / (1 + (xᵀ Σ⁻¹ x)^β)`` (BasicSR ``bivariate_plateau``)."""
    k = 1.0 / (jnp.power(_quadratic_form(size, sigma_x, sigma_y, theta), beta) + 1)
    return k / k.sum()
