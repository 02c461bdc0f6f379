"""Reading PyTorch checkpoints into flat ``{key: float32 ndarray}`` dicts.

A folder saved by diffusers/transformers (``save_pretrained``) is read through its weights file.
``.ckpt``/``.pth``/``.pt``/``.bin`` are read with ``torch.load(weights_only=True)``; ``.safetensors`` with
safetensors' NumPy reader. Wrappers are unwrapped: ``state_dict`` (Lightning/LDM), ``params_ema`` (preferred)
or ``params`` (BasicSR), ``model``/``module`` containers, and a ``module.`` prefix (DataParallel).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from checkpoints_conversion.errors import ConversionError

TORCH_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin")
WRAPPERS = ("state_dict", "params_ema", "params", "model", "module")
DIRECTORY_WEIGHTS = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin",
                     "pytorch_model.bin")


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _to_numpy(value) -> np.ndarray:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float32).numpy() if value.is_floating_point() else value.numpy()
    return np.asarray(value)


def _unwrap(obj, path: Path) -> dict:
    for _ in range(3):  # e.g. {"state_dict": {...}} or {"params_ema": {...}, "params": {...}}
        inner = next((obj[w] for w in WRAPPERS if isinstance(obj, dict) and isinstance(obj.get(w), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: holds no state dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if hasattr(v, "shape")}
    if not tensors:
        raise ConversionError(f"{path}: holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A checkpoint file's tensors as float32 NumPy arrays (integer buffers kept as they are)."""
    path = Path(path)
    if path.is_dir():  # a diffusers/transformers model folder
        found = [path / n for n in DIRECTORY_WEIGHTS if (path / n).is_file()]
        if not found:
            raise ConversionError(f"{path}: folder holds none of {', '.join(DIRECTORY_WEIGHTS)}")
        path = found[0]
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except Exception as err:  # noqa: BLE001 - any parse failure means "not a safetensors file"
            raise ConversionError(f"{path}: not a readable safetensors file ({type(err).__name__})") from None
        return {k: (v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v) for k, v in tensors.items()}
    if suffix not in TORCH_SUFFIXES:
        raise ConversionError(f"{path}: unsupported checkpoint type {suffix!r}; expected .safetensors or "
                              f"{', '.join(TORCH_SUFFIXES)}")
    try:
        import torch
    except ImportError:
        raise ConversionError("reading .ckpt/.pth files needs PyTorch: pip install 'jaxir[test]' "
                              "or torch") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt, truncated or not a torch file
        first_line = str(err).strip().split("\n")[0][:120]   # some errors (an empty file's) have no message
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}"
                              + (f": {first_line})" if first_line else ")")) from None
    return {k: _to_numpy(v) for k, v in _unwrap(obj, path).items()}


def _nested_numpy(value):
    if isinstance(value, dict):
        return {k: _nested_numpy(v) for k, v in value.items()}
    return _to_numpy(value) if hasattr(value, "shape") else value


def read_torch_dict(path: str | os.PathLike) -> dict:
    """A ``torch.save``d dict as it is (nested dicts, lists, numbers; tensors as NumPy), for release formats that
    are not a flat state dict (OSEDiff's and PiSA-SR's ``.pkl``). Loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt, truncated or not a torch file
        raise ConversionError(f"{path}: not a readable PyTorch file ({type(err).__name__})") from None
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a dict")
    return _nested_numpy(obj)
