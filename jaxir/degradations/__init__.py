"""Degradations: eq. (1) of the study, its building blocks, and the Real-ESRGAN second-order pipeline."""

from jaxir.degradations.blur import blur_2d, blur_per_sample, blur_separable
from jaxir.degradations.kernels import gaussian_kernel_1d, kernel_size_for_sigma
from jaxir.degradations.levels import DEFAULT_LEVELS, parse_level, parse_levels
from jaxir.degradations.noise import gaussian_noise
from jaxir.keys import per_sample_keys
from jaxir.degradations.pipeline import Degradation, study_levels
from jaxir.degradations.captured import Captured
from jaxir.degradations.resize import imresize, resize_torch

__all__ = ["Degradation", "Captured", "study_levels", "parse_level", "parse_levels", "DEFAULT_LEVELS", "imresize", "resize_torch", "blur_separable", "blur_2d",
           "blur_per_sample", "gaussian_kernel_1d", "kernel_size_for_sigma", "gaussian_noise", "per_sample_keys"]
