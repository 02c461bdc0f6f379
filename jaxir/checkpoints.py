"""The jaxir checkpoint directory and the one loader for every model.

A converted or trained model is a self-describing directory::

    config.json      {"kind": <registered model kind>, "config": <the model's config as JSON>}
    params/          the parameters, saved with orbax (StandardCheckpointer)
    provenance.json  sources (path, sha256), converter and version, date, free-form notes
    files.json       the byte size of every file under params/

``jaxir.load(path) -> (model, params)`` works for any registered kind; ``model`` is what the kind's builder
returns (a flax Module, or a pipeline object exposing the study's operations).

Damage: the directory is written under a temporary name and renamed when complete, so a killed conversion
leaves no half checkpoint. A directory damaged later (a cut copy, a lost file) is refused by ``load`` with one
line naming it and what to do: ``files.json`` lets a missing or truncated orbax file be found before orbax
reads it (orbax's own errors are tensorstore traces, and a failed read leaves asynchronous noise on stderr).
Directories written before ``files.json`` existed are read without that check.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxir import __version__, atomic
from jaxir.config_io import config_from_dict, config_to_dict
from jaxir.errors import JaxirInputError
from jaxir.runtime import release_freed_host_memory

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
PROVENANCE_FILE = "provenance.json"
FILES_FILE = "files.json"
REDO = "convert or copy the checkpoint again"


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """How to rebuild a model: its config class, a builder config → model, and the parameter shapes."""

    name: str
    config_cls: type
    build: Callable[[object], object]
    param_shapes: Callable[[object], object]   # config → tree of ShapeDtypeStruct (jax.eval_shape)


_KINDS: dict[str, ModelKind] = {}


def register_kind(kind: ModelKind) -> ModelKind:
    _KINDS[kind.name] = kind
    return kind


def _kind(name: str) -> ModelKind:
    if name not in _KINDS:
        import jaxir.models  # noqa: F401  (registers the built-in kinds)
    if name not in _KINDS:
        raise JaxirInputError(f"unknown model kind {name!r}; known: {', '.join(sorted(_KINDS))}")
    return _KINDS[name]


def save(path: str | os.PathLike, kind: str, config, params, sources: dict[str, str] | None = None,
         converter: str | None = None, notes: dict | None = None, dtype=None) -> Path:
    """Write a checkpoint directory (``dtype`` e.g. ``jnp.bfloat16`` stores floats smaller; load casts back)."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    model_kind = _kind(kind)
    if not isinstance(config, model_kind.config_cls):
        raise JaxirInputError(f"config for kind {kind!r} must be {model_kind.config_cls.__name__}")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise JaxirInputError(f"{path} exists and is not an empty folder; choose a new output folder")
    if dtype is not None:
        params = jax.tree.map(lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)
    provenance = {"sources": sources or {}, "converter": converter, "jaxir_version": __version__,
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "storage_dtype": None if dtype is None else jnp.dtype(dtype).name, **(notes or {})}
    try:
        with atomic.replacing(path, directory=True) as temp:
            (temp / CONFIG_FILE).write_text(json.dumps({"kind": kind, "config": config_to_dict(config)}, indent=2))
            checkpointer = ocp.StandardCheckpointer()
            checkpointer.save(temp / PARAMS_DIR, jax.tree.map(np.asarray, params))
            checkpointer.wait_until_finished()
            (temp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))
            (temp / FILES_FILE).write_text(json.dumps(_param_files(temp), indent=2))
    except OSError as err:
        raise JaxirInputError(f"{path}: cannot write the checkpoint ({err.strerror or err})") from None
    return path


def _param_files(path: Path) -> dict[str, int]:
    """{path relative to the checkpoint: size in bytes} of every file under ``params/``."""
    return {p.relative_to(path).as_posix(): p.stat().st_size
            for p in sorted((path / PARAMS_DIR).rglob("*")) if p.is_file()}


def _read_json(file: Path, what: str):
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:   # cut, emptied, not UTF-8, unreadable
        raise JaxirInputError(f"{file}: {what} is damaged ({type(err).__name__}: {str(err)[:80]}); {REDO}") from None


def _check_param_files(path: Path) -> None:
    """Refuse a checkpoint whose ``params/`` lacks a file, or holds a shorter one, than ``files.json`` lists."""
    params = path / PARAMS_DIR
    if not params.is_dir():
        raise JaxirInputError(f"{path}: the checkpoint has no {PARAMS_DIR}/ folder (incomplete copy?); {REDO}")
    listing = path / FILES_FILE
    if not listing.is_file():
        return
    expected = _read_json(listing, "the list of parameter files")
    if not isinstance(expected, dict):
        raise JaxirInputError(f"{listing}: the list of parameter files is damaged; {REDO}")
    for name, size in expected.items():
        file = path / name
        if not file.is_file():
            raise JaxirInputError(f"{path}: parameter file {name} is missing; {REDO}")
        if file.stat().st_size != size:
            raise JaxirInputError(f"{path}: parameter file {name} has {file.stat().st_size} bytes, not {size} "
                                  f"(truncated?); {REDO}")


def read_config(path: str | os.PathLike):
    """(kind name, config object) of a checkpoint directory."""
    path = Path(path)
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise JaxirInputError(f"{path}: not a jaxir checkpoint (no {CONFIG_FILE}); convert the original weights "
                              "with `python -m checkpoints_conversion`")
    data = _read_json(config_file, "the model config")
    if not (isinstance(data, dict) and isinstance(data.get("kind"), str) and isinstance(data.get("config"), dict)):
        raise JaxirInputError(f"{config_file}: not a jaxir model config (needs \"kind\" and \"config\"); {REDO}")
    try:
        kind = _kind(data["kind"])
        return kind.name, config_from_dict(kind.config_cls, data["config"])
    except (ValueError, TypeError) as err:   # JaxirInputError is a ValueError: unknown kind
        raise JaxirInputError(f"{config_file}: {err}; {REDO}") from None


def verify(path: str | os.PathLike) -> None:
    """Check, without reading any parameter, that ``path`` is a whole checkpoint: a valid ``config.json`` and every
    file ``files.json`` lists, at its size. Raises the one-line :class:`JaxirInputError` that ``load`` would, so a
    run can refuse a damaged model before it starts computing."""
    read_config(path)
    _check_param_files(Path(path))


def parameter_count(path: str | os.PathLike) -> int:
    """How many numbers the model of the checkpoint at ``path`` has, from its config alone (nothing is read but
    ``config.json``; the shapes come from the kind's ``param_shapes``)."""
    kind_name, config = read_config(path)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(_kind(kind_name).param_shapes(config)))


def load(path: str | os.PathLike, dtype=jnp.float32):
    """``(model, params)`` of any jaxir checkpoint directory; float parameters cast to ``dtype``. A damaged
    directory is a :class:`JaxirInputError` naming it (see the module docstring)."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    verify(path)
    kind_name, config = read_config(path)
    kind = _kind(kind_name)
    shapes = kind.param_shapes(config)
    try:
        stored = ocp.StandardCheckpointer().restore(path / PARAMS_DIR)
    except (ValueError, OSError) as err:   # orbax metadata or tensorstore data missing, cut or garbled
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise JaxirInputError(f"{path}: the parameters in {PARAMS_DIR}/ cannot be read ({reason}); {REDO}") from None
    flat_want, tree = jax.tree.flatten_with_path(shapes)
    flat_have = dict(jax.tree.flatten_with_path(stored)[0])
    params = []
    for key, want in flat_want:
        if key not in flat_have:
            raise JaxirInputError(f"{path}: parameter {jax.tree_util.keystr(key)} missing from the checkpoint")
        have = flat_have[key]
        if tuple(have.shape) != tuple(want.shape):
            raise JaxirInputError(f"{path}: parameter {jax.tree_util.keystr(key)} has shape {tuple(have.shape)}, "
                                  f"the config expects {tuple(want.shape)}")
        params.append(jnp.asarray(have, dtype if jnp.issubdtype(want.dtype, jnp.floating) else want.dtype))
    if len(flat_have) != len(flat_want):
        raise JaxirInputError(f"{path}: holds {len(flat_have)} parameters, the config expects {len(flat_want)}")
    del stored, flat_have
    release_freed_host_memory()
    return kind.build(config), jax.tree.unflatten(tree, params)


def copy_as(source: str | os.PathLike, target: str | os.PathLike, dtype) -> Path:
    """A copy of the checkpoint ``source`` whose floating-point parameters are stored as ``dtype`` (e.g.
    ``"bfloat16"``, how jaxir ships its trained models); the provenance is kept, with ``copied_from``."""
    source = Path(source)
    kind, config = read_config(source)
    _, params = load(source)
    provenance = _read_json(source / PROVENANCE_FILE, "the provenance record")
    notes = {k: v for k, v in provenance.items()
             if k not in ("sources", "converter", "jaxir_version", "date", "storage_dtype")}
    return save(target, kind, config, params, sources=provenance.get("sources"), converter=provenance.get("converter"),
                notes={**notes, "copied_from": f"jaxir.checkpoints.copy_as({str(source)!r}, ..., {str(dtype)!r})"},
                dtype=jnp.dtype(dtype))
