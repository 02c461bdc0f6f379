"""The restorer interface the study, ``jaxir restore`` and the experiments are built on.

A restorer is called as ``restorer.restore(lq, degradation, key, sample_ids)``: a degraded batch (float32 NHWC in
[0, 1]), the :class:`Degradation` that produced it, the PRNG key of the work at hand and the samples' ids; it
returns the restored batch at the clean image's size (``lq_size × scale``). Sample b draws every random number it
needs from ``fold_in(key, sample_ids[b])`` (default ids ``0..B−1``), so its result depends on its own key and id
only; deterministic restorers ignore the key. Non-blind baselines (Wiener) read the known kernel from the
degradation; blind ones ignore it.

Settings: every restorer carries a frozen settings dataclass (:class:`NoSettings` when it has none).
``restorer.configure(t_start=400, steps=20)`` returns a new restorer with those settings, checked by
:func:`jaxir.settings.override` (an unknown or ill-typed setting is a one-line error naming it and what it
accepts). ``build(settings)`` makes the restore function; it runs when the settings change, and weights
load through :func:`load_checkpoint`, once per checkpoint, so restorers that differ only in sampler settings share
their parameters and compiled programs. Each restorer keeps the build of the settings it last ran with.

A restorer whose weights are missing is *unavailable*: ``unavailable_reason()`` says which file to convert and
how; the study lists it with that reason and skips it, never a crash or a silent omission.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxir import cost, settings as settings_lib
from jaxir.degradations.pipeline import Degradation
from jaxir.errors import JaxirInputError
from jaxir.validation import as_rgb_batch
from jaxir.weights import checkpoint_path

# (LQ NHWC, degradation, key, sample ids) → HQ NHWC
RestoreFn = Callable[[jax.Array, Degradation, jax.Array, np.ndarray], jax.Array]


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """The settings of a restorer that has none."""


@dataclasses.dataclass(frozen=True)
class Restorer:
    """name: unique key; build: settings → restore function; tasks: the ``Degradation.task`` values it handles;
    family: "classical", "learned" or "cldm"; settings: its frozen settings; check: settings → None when usable,
    else the reason; accepts: an optional narrower test of the degradations it is meant for (e.g. the blur it was
    trained on); aliases: generic setting names (the CLI's named flags) → this restorer's field names; checkpoints:
    (settings, degradation) → the checkpoints (names or paths) a restoration of that degradation runs, stage 1
    included (what :meth:`parameter_count` counts); static_part: settings → what of them is compiled in, for a
    restorer whose built function also has ``per_sample(lq, degradation, key, ids, settings_list)`` (None: no
    setting may vary within a batch)."""

    name: str
    build: Callable[[Any], RestoreFn]
    tasks: tuple[str, ...]
    family: str
    description: str
    settings: Any = NoSettings()
    uses_known_degradation: bool = False
    check: Callable[[Any], str | None] = lambda settings: None
    accepts: Callable[[Degradation], bool] | None = None
    aliases: tuple[tuple[str, str], ...] = ()
    checkpoints: Callable[[Any, Degradation], tuple] = lambda settings, degradation: ()
    static_part: Callable[[Any], Any] | None = None

    def restore(self, lq, degradation: Degradation, key: jax.Array,
                sample_ids: Sequence[int] | None = None) -> jax.Array:
        """The restored batch; see the module docstring. ``lq`` must be float RGB in [0, 1] without NaN (checked
        here, where it is concrete: no restorer turns a NaN or 0..255 input into a silent result)."""
        lq, ids = self._checked(lq, sample_ids)
        return _built(self).restore(lq, degradation, key, ids)

    def restore_per_sample(self, lq, degradation: Degradation, key: jax.Array, sample_ids: Sequence[int] | None,
                           settings: Sequence[Any]) -> jax.Array:
        """:meth:`restore` with sample b under ``settings[b]``: settings objects of this restorer's kind that share
        its :meth:`static_settings` (they differ in traced values only: a start timestep, a scale, η), so the batch
        runs through one compiled program; sample b computes what ``configure``-ing those settings computes for it
        alone. A restorer without traced settings (``static_part`` None) takes only its own settings."""
        lq, ids = self._checked(lq, sample_ids)
        if len(settings) != lq.shape[0]:
            raise JaxirInputError(f"{self.name}: {len(settings)} settings for a batch of {lq.shape[0]}")
        if all(other == self.settings for other in settings):
            return _built(self).restore(lq, degradation, key, ids)
        static = self.static_settings()
        if self.static_part is None or any(self.static_part(other) != static for other in settings):
            raise JaxirInputError(f"{self.name}: the samples of one batch may differ only in traced settings")
        return _built(self).restore.per_sample(lq, degradation, key, ids, list(settings))

    def static_settings(self) -> Any:
        """What of the settings is compiled into the restore program: restorations whose static settings are equal
        can run as one batch (:meth:`restore_per_sample`); the whole settings when none are traced."""
        return self.settings if self.static_part is None else self.static_part(self.settings)

    def _checked(self, lq, sample_ids) -> tuple[jax.Array, np.ndarray]:
        lq, batched = as_rgb_batch(lq, f"{self.name}: input")
        if not batched:
            raise JaxirInputError(f"{self.name}: expected an NHWC RGB batch, got shape {lq.shape[1:]}")
        lq = lq.astype(jnp.float32)
        ids = np.arange(lq.shape[0]) if sample_ids is None else np.asarray(sample_ids)
        if ids.shape != (lq.shape[0],):
            raise JaxirInputError(f"{self.name}: {len(ids)} sample ids for a batch of {lq.shape[0]}")
        return lq, ids

    def configure(self, **overrides) -> Restorer:
        """A new restorer with ``overrides`` applied to its settings (see :func:`jaxir.settings.override`)."""
        if not overrides:
            return self
        return dataclasses.replace(self, settings=settings_lib.override(self.name, self.settings, overrides,
                                                                         dict(self.aliases)))

    def setting_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.settings)) + tuple(a for a, _ in self.aliases)

    def settings_json(self) -> dict:
        return settings_lib.to_json(self.settings)

    def overrides(self) -> tuple[tuple[str, Any], ...]:
        """The settings in which this restorer differs from the registered one of its name, as sorted pairs (every
        setting when none of its kind is registered): what ``configure`` on the registered one would need."""
        fields = [f.name for f in dataclasses.fields(self.settings)]
        default = _REGISTRY.get(self.name)
        if default is None or type(default.settings) is not type(self.settings):
            return tuple(sorted((f, getattr(self.settings, f)) for f in fields))
        return tuple(sorted((f, getattr(self.settings, f)) for f in fields
                            if getattr(self.settings, f) != getattr(default.settings, f)))

    def handles(self, degradation: Degradation) -> bool:
        """Whether this restorer is meant for ``degradation``: its task, the narrower ``accepts`` test, and a known
        blur kernel for a non-blind restorer (a captured degradation has none)."""
        if self.uses_known_degradation and degradation.task == "deblur" and degradation.kernel() is None:
            return False
        return degradation.task in self.tasks and (self.accepts is None or self.accepts(degradation))

    def unavailable_reason(self) -> str | None:
        return self.check(self.settings)

    def parameter_count(self, degradation: Degradation) -> int:
        """The parameters a restoration of ``degradation`` runs (0 for a classical restorer), from the
        checkpoints' configs (:func:`jaxir.checkpoints.parameter_count`; nothing is loaded)."""
        return sum(_parameter_count(str(checkpoint_path(c).resolve()))
                   for c in self.checkpoints(self.settings, degradation))


@dataclasses.dataclass(frozen=True)
class _Built:
    build: Callable
    settings: Any
    restore: RestoreFn


_BUILT: dict[str, _Built] = {}


def _built(restorer: Restorer) -> _Built:
    """The restore function of ``restorer``'s current settings. Each restorer keeps the function of the settings
    it last ran with (a sweep over settings replaces it; the old one is released before the new one is built, so
    two large pipelines are never held at once); weights stay shared through :func:`load_checkpoint`."""
    entry = _BUILT.get(restorer.name)
    if entry is None or entry.build is not restorer.build or entry.settings != restorer.settings:
        _BUILT.pop(restorer.name, None)
        entry = _Built(restorer.build, restorer.settings, restorer.build(restorer.settings))
        _BUILT[restorer.name] = entry
    return entry


def load_timed(name_or_path) -> tuple[Any, Any]:
    """``jaxir.load`` of a checkpoint name or path, its time recorded as loading (:func:`jaxir.cost.record_load`)."""
    from jaxir.checkpoints import load

    start = time.perf_counter()
    loaded = load(checkpoint_path(name_or_path))
    cost.record_load(time.perf_counter() - start)
    return loaded


@functools.lru_cache(maxsize=None)
def _parameter_count(path: str) -> int:
    from jaxir.checkpoints import parameter_count

    return parameter_count(path)


@functools.lru_cache(maxsize=8)
def _load(path: str):
    return load_timed(path)


def load_checkpoint(name_or_path) -> tuple[Any, Any]:
    """``jaxir.load`` of a checkpoint name or path, once per path (restorers with other settings share it)."""
    return _load(str(checkpoint_path(name_or_path).resolve()))


def deterministic(fn: Callable[[jax.Array, Degradation], jax.Array]) -> RestoreFn:
    """A restore function for a restorer that draws no random numbers: ``fn(lq, degradation)``."""
    return lambda lq, degradation, key, sample_ids: fn(lq, degradation)


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


def configure_all(restorers: Sequence[Restorer], assignments: dict[str, object]) -> list[Restorer]:
    """``restorers`` with ``assignments`` applied: ``NAME`` applies to every restorer that has that setting (at
    least one must), ``RESTORER:NAME`` to that restorer only (it must be among ``restorers``)."""
    by_name = {r.name: r for r in restorers}
    changes: dict[str, dict[str, object]] = {r.name: {} for r in restorers}
    for target, value in assignments.items():
        owner, sep, setting = target.rpartition(":")
        if sep:
            if owner not in by_name:
                raise JaxirInputError(f"--set {target}: restorer {owner!r} is not in this run "
                                      f"({', '.join(by_name) or 'none'})")
            changes[owner][setting] = value
            continue
        takers = [r.name for r in restorers if setting in r.setting_names()]
        if not takers:
            raise JaxirInputError(f"--set {target}: no restorer of this run has a setting {setting!r}")
        for name in takers:
            changes[name][setting] = value
    return [r.configure(**changes[r.name]) for r in restorers]
