"""Restorers: the interface, the registry, and the built-in classical baselines."""

from jaxir.restorers import classical  # noqa: F401  (registers bicubic and wiener)
from jaxir.restorers.base import Restorer, get, register, registered

__all__ = ["Restorer", "get", "register", "registered"]
