"""Declarative source-key → parameter-path maps with strict accounting (the bonsai pattern).

A :class:`Rule` maps source keys matching a regular expression to a ``/``-separated path in the flax
parameter tree (``\\1``-style groups allowed). Tensors are transposed by the target leaf: a flax conv
``kernel`` (kH, kW, I, O) from a torch (O, I, kH, kW) weight, a dense ``kernel`` (I, O) from (O, I) — or from a
1×1 conv (O, I, 1, 1) — and ``scale``/``bias``/embeddings as they are. :func:`apply_rules` fills a tree whose
shapes come from ``jax.eval_shape`` (no random initialisation) and fails, naming keys and shapes, on any source
tensor that no rule uses (unless listed as ignored on purpose), any parameter left unfilled, any parameter
filled twice, and any shape mismatch.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from flax import traverse_util

from checkpoints_conversion.errors import ConversionError

Transform = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Rule:
    source: str                     # regex, matched against the whole source key
    target: str                     # template of the parameter path, e.g. r"encoder/down_\1/conv/kernel"
    transform: Transform | None = None   # default: by target leaf (see module docstring)


def auto_transform(value: np.ndarray, target_path: str, target_ndim: int) -> np.ndarray:
    leaf = target_path.rsplit("/", 1)[-1]
    if leaf == "kernel":
        if value.ndim == 4 and target_ndim == 4:
            return value.transpose(2, 3, 1, 0)
        if value.ndim == 4 and target_ndim == 2 and value.shape[2:] == (1, 1):
            return value[:, :, 0, 0].T
        if value.ndim == 2 and target_ndim == 2:
            return value.T
    return value


def _summarise(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    more = f" … (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def apply_rules(source: Mapping[str, np.ndarray], rules: Iterable[Rule], target_shapes,
                ignore: Iterable[str] = (), what: str = "checkpoint", partial: bool = False) -> dict:
    """Fill the parameter tree shaped like ``target_shapes`` from ``source`` (see module docstring). ``partial``:
    the source covers a subset of the parameters (a LoRA's deltas): only the filled ones are returned, every other
    check stays."""
    rules = [(re.compile(r.source), r) for r in rules]
    ignore = [re.compile(p) for p in ignore]
    flat_target = {"/".join(k): v for k, v in traverse_util.flatten_dict(target_shapes).items()}
    filled: dict[str, np.ndarray] = {}
    unused, mismatched, twice = [], [], []
    for key, value in source.items():
        for pattern, rule in rules:
            m = pattern.fullmatch(key)
            if m:
                path = m.expand(rule.target)
                break
        else:
            if not any(p.fullmatch(key) for p in ignore):
                unused.append(f"{key} {tuple(np.shape(value))}")
            continue
        if path not in flat_target:
            unused.append(f"{key} {tuple(np.shape(value))} (→ {path}, no such parameter)")
            continue
        want = flat_target[path]
        value = np.asarray(value)
        try:
            out = rule.transform(value) if rule.transform else auto_transform(value, path, len(want.shape))
        except (ValueError, IndexError):   # a transform's axes do not fit this tensor: another model's file
            out = None
        if out is None or tuple(out.shape) != tuple(want.shape):
            mismatched.append(f"{key} {tuple(value.shape)} → {path} {tuple(want.shape)}")
            continue
        if path in filled:
            twice.append(f"{path} (again from {key})")
        filled[path] = out.astype(want.dtype)
    problems = []
    if mismatched:
        problems.append(f"shape mismatch: {_summarise(mismatched)}")
    if unused:
        problems.append(f"unused source tensors: {_summarise(unused)}")
    missing = set() if partial else set(flat_target) - set(filled)
    if missing:
        problems.append(f"parameters not filled: {_summarise(f'{m} {tuple(flat_target[m].shape)}' for m in missing)}")
    if twice:
        problems.append(f"parameters filled twice: {_summarise(twice)}")
    if problems:
        raise ConversionError(f"{what}: " + "; ".join(problems))
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in filled.items()})


def strip_prefix(state: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The tensors under ``prefix`` with it removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
