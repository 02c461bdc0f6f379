"""What a computation cost besides its own arithmetic: JAX compilations and checkpoint loading.

JAX reports every trace, lowering and backend compilation through :mod:`jax.monitoring`; :class:`Meter` listens
once per process (from the first :class:`Meter`) and keeps running totals, and a :class:`Meter` reads the difference over a span of work. The
study subtracts both from a cell's wall time, so ``seconds`` is the restoration itself, and reports them apart.
Checkpoint loads report themselves with :func:`record_load`.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from jax import monitoring

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
BACKEND_COMPILE = COMPILE_EVENTS[-1]


@dataclasses.dataclass
class Totals:
    compilations: int = 0
    compile_seconds: float = 0.0
    loads: int = 0
    load_seconds: float = 0.0

    def minus(self, other: Totals) -> Totals:
        return Totals(*(getattr(self, f.name) - getattr(other, f.name) for f in dataclasses.fields(self)))

    def plus(self, other: Totals) -> Totals:
        return Totals(*(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)))


_TOTALS = Totals()
_LOCK = threading.Lock()
_LISTENING = False


def _on_duration(event: str, seconds: float, **_) -> None:
    if event in COMPILE_EVENTS:
        with _LOCK:
            _TOTALS.compile_seconds += seconds
            _TOTALS.compilations += event == BACKEND_COMPILE


def totals() -> Totals:
    """The process's running totals (compilations counted from the first :class:`Meter` on)."""
    with _LOCK:
        return dataclasses.replace(_TOTALS)


def record_load(seconds: float) -> None:
    with _LOCK:
        _TOTALS.loads += 1
        _TOTALS.load_seconds += seconds


class Meter:
    """``with Meter() as m: ...``; then ``m.cost`` (a :class:`Totals` of the span) and ``m.wall`` seconds."""

    def __enter__(self) -> Meter:
        _listen()
        self._start, self._t0 = totals(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._t0
        self.cost = totals().minus(self._start)

    @property
    def net_seconds(self) -> float:
        """Wall time less compiling and loading."""
        return max(self.wall - self.cost.compile_seconds - self.cost.load_seconds, 0.0)


def _listen() -> None:
    global _LISTENING
    with _LOCK:
        if _LISTENING:
            return
        _LISTENING = True
    monitoring.register_event_duration_secs_listener(_on_duration)
