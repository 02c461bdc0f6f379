"""Atomic file and directory writes: a file a run writes is either absent or complete, whenever the run is killed.

Everything is written under a temporary name in the target's own folder (the same file system, so the final
``os.replace`` is an atomic rename), flushed to disk with ``fsync``, and only then renamed onto the target; the
folder is synced too, so the rename itself survives a power cut. A run killed at any point leaves at most a
hidden ``.<name>.<random>.partial`` entry, never a cut file under the real name: resuming code can trust that
every file it finds is whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

PARTIAL_MARK = ".partial"


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(path: Path) -> None:
    """fsync a file, or every file and folder under a folder (e.g. a checkpoint written by orbax)."""
    for p in [path] if path.is_file() else [path, *path.rglob("*")]:
        _sync(p)


@contextlib.contextmanager
def replacing(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """A fresh temporary path next to ``path`` (same suffix, so writers that infer the format from it work);
    when the block ends normally, what was written there is synced and renamed onto ``path``; if the block
    raises, it is removed and ``path`` is untouched. ``directory=True``: the temporary path is an empty folder
    that replaces an absent or empty folder ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:   # a fresh name; created with the default permissions (umask), as the final file would be
        temp = path.parent / f".{path.stem}.{secrets.token_hex(4)}{PARTIAL_MARK}{path.suffix}"
        try:
            if directory:
                temp.mkdir()
            else:
                os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield temp
        _sync_tree(temp)
        os.replace(temp, path)
    except BaseException:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)
        raise
    _sync(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with replacing(path) as temp:
        temp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` as UTF-8, atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data) -> Path:
    """``data`` as indented UTF-8 JSON (non-ASCII kept as it is, e.g. the σ of level labels), atomically."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
