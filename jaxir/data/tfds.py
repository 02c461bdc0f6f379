"""Importing tensorflow-datasets on demand: TensorFlow and tensorflow-datasets are optional (``pip install
'jaxir[tfds]'``) and imported only by the loaders that need them, never by ``import jaxir``. TensorFlow is hidden
from any GPU before use, so it cannot take the accelerator's memory away from JAX."""

from __future__ import annotations

from jaxir.errors import JaxirInputError

INSTALL_HINT = "pip install 'jaxir[tfds]'"


def import_tfds(purpose: str):
    """The ``tensorflow_datasets`` module; a one-line error says how to install what ``purpose`` needs."""
    # importlib_resources: tensorflow-datasets needs it to prepare any dataset but declares it only for
    # Python < 3.9 (upstream issue tensorflow/datasets#11212).
    for module in ("tensorflow", "tensorflow_datasets", "importlib_resources"):
        try:
            __import__(module)
        except ImportError as err:
            raise JaxirInputError(f"{purpose} needs {module.replace('_', '-')}, which is not installed ({err}); "
                                  f"install it with: {INSTALL_HINT}") from None
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # devices already initialised by the caller: leave them as they are
        pass
    return tfds
