"""LoRA adapters (Hu et al., 2022; PEFT's ``LoraLayer``) as dense parameter deltas in jaxir's layout.

A PEFT LoRA on a layer with weight ``W`` (Linear (O, I) or Conv2d (O, I, kH, kW)) adds ``s·ΔW`` with
``s = lora_alpha / r`` (peft ``LoraLayer.update_layer``; rsLoRA and DoRA are not supported) and

* Linear: ``ΔW = B·A`` with ``A`` (r, I), ``B`` (O, r);
* Conv2d: ``A`` is a conv of the base layer's kernel and stride to r channels (r, I, kH, kW), ``B`` a 1×1 conv
  (O, r, 1, 1), so ``ΔW = (B[:, :, 0, 0] @ A.reshape(r, I·kH·kW)).reshape(O, I, kH, kW)`` (peft ``Conv2d
  .get_delta_weight``).

Keys (:func:`read_adapters`): ``<module>.lora_A.<adapter>.weight`` / ``.lora_B.<adapter>.weight`` (a PEFT model's
state dict, what HYPIR, OSEDiff and PiSA-SR save) or ``<module>.lora_A.weight`` (``get_peft_model_state_dict``,
adapter ``default``). The dense deltas, named ``<module>.weight`` like the base tensors, go through the SAME key
rules as the base model (:func:`delta_tree`, ``apply_rules(partial=True)``): every delta must land on a parameter of
matching shape, so a LoRA for another model is refused with its keys and shapes named.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.keymap import Rule, apply_rules

PEFT_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<part>[AB])(?:\.(?P<adapter>[^.]+))?\.weight")
DEFAULT_ADAPTER = "default"


def is_lora_key(key: str) -> bool:
    return PEFT_KEY.fullmatch(key) is not None


def read_adapters(state: Mapping[str, np.ndarray], what: str) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``{adapter: {module: (A, B)}}`` of the LoRA tensors in ``state`` (every key must be one); each module needs
    both factors with one rank."""
    factors: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key, value in state.items():
        m = PEFT_KEY.fullmatch(key)
        if m is None:
            raise ConversionError(f"{what}: {key} is not a LoRA tensor (<module>.lora_A|lora_B[.<adapter>].weight)")
        factors.setdefault((m["adapter"] or DEFAULT_ADAPTER, m["module"]), {})[m["part"]] = np.asarray(value)
    adapters: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for (adapter, module), parts in sorted(factors.items()):
        if set(parts) != {"A", "B"}:
            missing = "B" if "A" in parts else "A"
            raise ConversionError(f"{what}: {module} has no lora_{missing} for adapter {adapter}")
        a, b = parts["A"], parts["B"]
        if a.ndim != b.ndim or a.ndim not in (2, 4) or a.shape[0] != b.shape[1] or b.shape[2:] not in ((), (1, 1)):
            raise ConversionError(f"{what}: {module} ({adapter}) has factors A {a.shape} and B {b.shape}, not a "
                                  "LoRA pair (A (r, in[, kh, kw]), B (out, r[, 1, 1]))")
        adapters.setdefault(adapter, {})[module] = (a, b)
    return adapters


def dense_delta(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """``scale·ΔW`` in the base layer's torch layout (module docstring), computed in float64."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    r = a.shape[0]
    delta = b64.reshape(b.shape[0], r) @ a64.reshape(r, -1)
    return (scale * delta).reshape(b.shape[0], *a.shape[1:]).astype(np.float32)


def dense_deltas(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], scale: float) -> dict[str, np.ndarray]:
    """``{<module>.weight: scale·ΔW}`` of one adapter's ``{module: (A, B)}``."""
    return {f"{module}.weight": dense_delta(a, b, scale) for module, (a, b) in pairs.items()}


def summed(deltas: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Adapters that are always active together (OSEDiff's encoder/decoder/others split) as one delta per weight."""
    total: dict[str, np.ndarray] = {}
    for delta in deltas:
        for key, value in delta.items():
            total[key] = total[key] + value if key in total else value
    return total


def delta_tree(deltas: Mapping[str, np.ndarray], rules: list[Rule], shapes, what: str) -> dict:
    """The deltas as a sub-tree of the parameters shaped like ``shapes``, through the base model's key ``rules``
    (transposed like the base tensors); a delta that maps to no parameter or to one of another shape is an error."""
    return apply_rules(deltas, rules, shapes, what=what, partial=True)


def flat_paths(tree: Mapping) -> tuple[str, ...]:
    """The ``/``-joined paths of a nested dict's leaves, sorted (how a model config records a delta's support)."""
    out = []

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}/")
            else:
                out.append(prefix + key)

    walk(tree, "")
    return tuple(sorted(out))
