"""jaxir: controlled image-restoration experiments in JAX.

Images at every public boundary are float32 NHWC (or HWC) RGB in [0, 1].
"""

__version__ = "0.1.0"
