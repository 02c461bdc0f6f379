"""The study's degradation model, eq. (1): ``I_y = D(I_x; δ)↓α + β·N`` (optionally JPEG-compressed), and the
information retention rate of eq. (12), ``γ = (1 − β)/α``.

A :class:`Degradation` is a frozen, hashable description (usable as a jit static argument and as a key of a
results table); calling it on an NHWC batch with a PRNG key applies blur → downsampling → noise → clip →
JPEG, in the order of Real-ESRGAN's first stage.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxir.degradations.blur import blur_2d, blur_separable
from jaxir.degradations.kernels import anisotropic_gaussian_kernel, gaussian_kernel_1d, kernel_size_for_sigma
from jaxir.degradations.noise import gaussian_noise
from jaxir.degradations.resize import imresize, resize_torch
from jaxir.errors import JaxirInputError

RESIZE_CONVENTIONS = ("matlab", "torch")


@dataclasses.dataclass(frozen=True)
class Degradation:
    """δ, α, β of eq. (1), plus optional JPEG quality.

    blur_sigma: isotropic Gaussian σ in pixels (0 = no blur); the kernel spans ``2·ceil(3σ)+1`` pixels.
    blur_anisotropic: (σx, σy, θ) of a rotated Gaussian instead (θ in radians), same size rule on max σ.
    scale: downsampling factor α ≥ 1 (integer or not).
    resize: "matlab" (antialiased bicubic imresize, DIV2K/BasicSR) or "torch" (F.interpolate bicubic).
    noise: β, the standard deviation of additive Gaussian noise on the [0, 1] scale.
    jpeg_quality: JPEG quality 1..100 applied last, or None.
    """

    blur_sigma: float = 0.0
    blur_anisotropic: tuple[float, float, float] | None = None
    scale: float = 1
    resize: str = "matlab"
    noise: float = 0.0
    jpeg_quality: int | None = None

    def __post_init__(self):
        if self.blur_sigma < 0:
            raise JaxirInputError(f"blur_sigma must be >= 0, got {self.blur_sigma}")
        if self.blur_sigma and self.blur_anisotropic:
            raise JaxirInputError("give blur_sigma or blur_anisotropic, not both")
        if self.blur_anisotropic is not None and (len(self.blur_anisotropic) != 3 or min(self.blur_anisotropic[:2]) <= 0):
            raise JaxirInputError(f"blur_anisotropic must be (sigma_x > 0, sigma_y > 0, theta), got {self.blur_anisotropic}")
        if self.scale < 1:
            raise JaxirInputError(f"scale (alpha) must be >= 1, got {self.scale}")
        if self.resize not in RESIZE_CONVENTIONS:
            raise JaxirInputError(f"resize must be one of {RESIZE_CONVENTIONS}, got {self.resize!r}")
        if not 0 <= self.noise < 1:
            raise JaxirInputError(f"noise (beta) must be in [0, 1), got {self.noise}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise JaxirInputError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")

    @property
    def retention(self) -> float:
        """Information retention rate γ = (1 − β)/α, eq. (12)."""
        return (1.0 - self.noise) / self.scale

    @property
    def task(self) -> str:
        """The restoration task this degradation poses: "sr", "deblur", "denoise", "dejpeg" or "identity"."""
        if self.scale > 1:
            return "sr"
        if self.blur_sigma or self.blur_anisotropic:
            return "deblur"
        if self.noise:
            return "denoise"
        return "dejpeg" if self.jpeg_quality is not None else "identity"

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``SR x4``, ``blur σ=2``, ``blur σ=2 + noise 0.05``."""
        parts = []
        if self.scale > 1:
            parts.append(f"SR x{self.scale:g}")
        if self.blur_sigma:
            parts.append(f"blur σ={self.blur_sigma:g}")
        if self.blur_anisotropic:
            sx, sy, th = self.blur_anisotropic
            parts.append(f"blur σ=({sx:g},{sy:g}) θ={th:.2f}")
        if self.noise:
            parts.append(f"noise {self.noise:g}")
        if self.jpeg_quality is not None:
            parts.append(f"JPEG q{self.jpeg_quality}")
        return " + ".join(parts) or "identity"

    def kernel(self) -> np.ndarray | None:
        """The 2-D blur kernel (None if no blur): the known PSF for non-blind baselines such as Wiener."""
        if self.blur_sigma:
            g = gaussian_kernel_1d(self.blur_sigma)
            return np.outer(g, g)
        if self.blur_anisotropic:
            sx, sy, th = self.blur_anisotropic
            with jax.ensure_compile_time_eval():  # a constant even when called under jit (see __call__)
                k = anisotropic_gaussian_kernel(kernel_size_for_sigma(max(sx, sy)), sx, sy, th)
            return np.asarray(k, np.float64)
        return None

    def lq_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of the degraded image."""
        if self.scale == 1:
            return height, width
        # the same float expression as the resize (size × (1/α)): h / α can round to the other side of an
        # integer (33 / 1.1 = 29.999… but 33 × (1/1.1) = 30.0), and floor/ceil would then disagree
        factor = 1.0 / self.scale
        if self.resize == "matlab":
            return math.ceil(height * factor), math.ceil(width * factor)
        return math.floor(height * factor), math.floor(width * factor)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __call__(self, x: jax.Array, key: jax.Array | None = None, sample_ids=None) -> jax.Array:
        """Degrade an NHWC (or HWC) batch in [0, 1]; ``key`` is needed when noise is added."""
        squeeze = x.ndim == 3
        x = x[None] if squeeze else x
        if self.blur_sigma:
            x = blur_separable(x, gaussian_kernel_1d(self.blur_sigma).astype(np.float32))
        elif self.blur_anisotropic:
            x = blur_2d(x, self.kernel().astype(np.float32))
        if self.scale > 1:
            if self.resize == "matlab":
                x = imresize(x, scale=1.0 / self.scale)
            else:
                x = resize_torch(x, scale=1.0 / self.scale, mode="bicubic")
        if self.noise:
            if key is None:
                raise JaxirInputError("a PRNG key is needed to add noise")
            x = gaussian_noise(key, x, self.noise, sample_ids)
        x = jnp.clip(x, 0.0, 1.0)
        if self.jpeg_quality is not None:
            from jaxir.degradations.jpeg import jpeg

            x = jpeg(x, jnp.full((x.shape[0],), self.jpeg_quality))
        return x[0] if squeeze else x


def study_levels() -> tuple[Degradation, ...]:
    """The degradation levels of the study's sweep (Fig. 2): SR ×2, ×4 and Gaussian blur σ ∈ {1, 2, 4, 8, 20}."""
    return (Degradation(scale=2), Degradation(scale=4),
            *(Degradation(blur_sigma=s) for s in (1.0, 2.0, 4.0, 8.0, 20.0)))
