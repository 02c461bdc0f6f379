"""jaxir: controlled image-restoration experiments in JAX.

Images at every public boundary are float32 NHWC (or HWC) RGB in [0, 1].
"""

__version__ = "0.1.0"


def load(path, **kwargs):
    """``(model, params)`` of a jaxir checkpoint directory (see :mod:`jaxir.checkpoints`)."""
    from jaxir.checkpoints import load as _load

    return _load(path, **kwargs)
