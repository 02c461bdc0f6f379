"""The restorer interface the study and ``jaxir restore`` are built on.

A restorer is a named function from a degraded batch (float32 NHWC in [0, 1]) and the :class:`Degradation`
that produced it to a restored batch of the clean image's size (``lq_size × scale``), plus metadata.
Non-blind baselines (Wiener) read the known kernel from the degradation; blind ones ignore it.

Learned restorers and CLDMs plug in by registering a :class:`Restorer` whose ``check`` says whether its
weights are present: an unavailable restorer is listed with the reason (which file to convert and how) and
skipped by the study, never a crash or a silent omission.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from jaxir.degradations.pipeline import Degradation
from jaxir.errors import JaxirInputError

RestoreFn = Callable[[jax.Array, Degradation], jax.Array]


@dataclasses.dataclass(frozen=True)
class Restorer:
    """name: unique key; restore: (LQ NHWC, degradation) → HQ NHWC; tasks: the Degradation.task values it
    handles; family: "classical", "learned" or "cldm"; check: returns None when usable, else the reason;
    accepts: an optional narrower test of the degradations it is meant for (e.g. the blur it was trained on)."""

    name: str
    restore: RestoreFn
    tasks: tuple[str, ...]
    family: str
    description: str
    uses_known_degradation: bool = False
    check: Callable[[], str | None] = lambda: None
    accepts: Callable[[Degradation], bool] | None = None

    def handles(self, degradation: Degradation) -> bool:
        return degradation.task in self.tasks and (self.accepts is None or self.accepts(degradation))

    def unavailable_reason(self) -> str | None:
        return self.check()


_REGISTRY: dict[str, Restorer] = {}


def register(restorer: Restorer) -> Restorer:
    """Add a restorer to the registry (a later registration with the same name replaces the earlier one)."""
    _REGISTRY[restorer.name] = restorer
    return restorer


def registered() -> dict[str, Restorer]:
    """All registered restorers, by name, in registration order."""
    return dict(_REGISTRY)


def get(name: str) -> Restorer:
    if name not in _REGISTRY:
        raise JaxirInputError(f"unknown restorer {name!r}; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]
