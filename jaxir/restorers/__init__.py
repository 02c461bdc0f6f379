"""Restorers: the interface, the registry, and the built-in classical baselines."""

from jaxir.restorers import classical  # noqa: F401  (registers bicubic and wiener)
from jaxir.restorers.base import Restorer, get, register, registered
from jaxir.restorers import trained  # noqa: F401  (registers jaxir_cnn, shipped with the package)
from jaxir.restorers import stripformer  # noqa: F401  (registers stripformer)
from jaxir.restorers import pretrained  # noqa: F401  (registers realesrgan_x4/x2, bsrnet, scunet)
from jaxir.restorers import swinir  # noqa: F401  (registers swinir_x4, swinir_classical_x2/x4, diffbir_swinir)
from jaxir.restorers import cldm  # noqa: F401  (registers diffbir_v1, diffbir_v2, diffbir_v2.1)
from jaxir.restorers import onestep  # noqa: F401  (registers hypir, osediff, pisa_sr)

__all__ = ["Restorer", "get", "register", "registered"]
