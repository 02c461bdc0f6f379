"""Image-quality metrics: PSNR/SSIM with the BasicSR/MATLAB conventions and NIQE as in the MATLAB release."""

from jaxir.metrics.fidelity import psnr, ssim
from jaxir.metrics.niqe import niqe

__all__ = ["psnr", "ssim", "niqe"]
