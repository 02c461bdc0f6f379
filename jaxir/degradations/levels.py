"""The level grammar of ``jaxir study --levels`` and ``jaxir restore --level``: ``sr4``, ``blur2``, ``noise0.05``,
``jpeg30`` and ``torch`` (PyTorch bicubic instead of MATLAB's), joined by ``+`` into one :class:`Degradation`
(``blur2+sr4+noise0.02``); levels are separated by commas."""

from __future__ import annotations

from jaxir.degradations.pipeline import Degradation
from jaxir.errors import JaxirInputError

DEFAULT_LEVELS = "sr2,sr4,blur1,blur2,blur4,blur8,blur20"   # the study's sweep, :func:`study_levels`
PARTS = (("sr", "scale", float), ("blur", "blur_sigma", float), ("noise", "noise", float),
         ("jpeg", "jpeg_quality", int))


def parse_level(spec: str) -> Degradation:
    """One level, e.g. ``blur2+sr4+noise0.02`` → a :class:`Degradation`."""
    fields: dict = {}
    for part in spec.strip().lower().split("+"):
        for prefix, field, cast in PARTS:
            if part.startswith(prefix):
                try:
                    fields[field] = cast(part[len(prefix):])
                except ValueError:
                    raise JaxirInputError(f"bad degradation level {spec!r}: cannot read {part!r}") from None
                break
        else:
            if part != "torch":
                raise JaxirInputError(f"bad degradation level {spec!r}: unknown part {part!r} "
                                      "(use srN, blurS, noiseB, jpegQ, torch joined by '+')")
            fields["resize"] = "torch"
    if "scale" in fields and fields["scale"] == int(fields["scale"]):
        fields["scale"] = int(fields["scale"])
    return Degradation(**fields)


def parse_levels(specs: str) -> tuple[Degradation, ...]:
    """Comma-separated levels → degradations, in order."""
    return tuple(parse_level(s) for s in specs.split(",") if s.strip())
