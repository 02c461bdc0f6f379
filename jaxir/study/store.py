"""The finished cells of experiments, in SQLite (Python's standard library): one row per cell, keyed by the hash of
its full configuration (so experiments that need the same cell share it).

A cell is written in one transaction (``INSERT OR IGNORE`` under ``BEGIN IMMEDIATE``), so a killed process leaves
either the whole cell or nothing, and two processes running the same experiment never duplicate a cell: the second
writer of a key keeps the first result. The database runs in WAL mode with a busy timeout, so a reader (a report,
a second run) never blocks on a writer for long. ``results.csv`` is an export of the store (written atomically),
never the record itself.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from pathlib import Path

from jaxir import atomic
from jaxir.errors import JaxirInputError

STORE_FILE = "cells.sqlite"
SCHEMA = """CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    measure TEXT NOT NULL,
    config TEXT NOT NULL,
    result TEXT NOT NULL,
    finished REAL NOT NULL
)"""


class CellStore:
    """``CellStore(path)``: open (or create) the store at ``path``. A file that is not a store is refused with one
    line naming it and what to do."""

    def __init__(self, path: str | Path, timeout: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise JaxirInputError(f"{self.path}: not a jaxir cell store ({err}); move it away or use another --out "
                                  "to start over") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CellStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def finished(self, keys) -> set[str]:
        """Those of ``keys`` whose cells are in the store."""
        keys, found = list(keys), set()
        for start in range(0, len(keys), 500):   # SQLite's limit on host parameters
            chunk = keys[start:start + 500]
            query = f"SELECT key FROM cells WHERE key IN ({', '.join('?' * len(chunk))})"
            found.update(k for (k,) in self._db.execute(query, chunk))
        return found

    def put(self, key: str, measure: str, config: dict, result: dict, replace: bool = False) -> bool:
        """Record a finished cell in one transaction; False (and nothing written) when ``key`` is already there,
        unless ``replace`` (a cell recomputed because its stored images were lost)."""
        row = (key, measure, json.dumps(config, sort_keys=True), json.dumps(result, sort_keys=True), time.time())
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.execute(f"{verb} INTO cells VALUES (?, ?, ?, ?, ?)", row)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return cursor.rowcount == 1

    def rows(self, keys) -> list[dict]:
        """The cells of ``keys`` that are in the store, in the order of ``keys``: each its configuration and result
        in one dict, with its ``key``."""
        keys, found = list(keys), {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            query = f"SELECT key, config, result FROM cells WHERE key IN ({', '.join('?' * len(chunk))})"
            for key, config, result in self._db.execute(query, chunk):
                found[key] = {"key": key, **json.loads(config), **json.loads(result)}
        return [found[k] for k in keys if k in found]


def export_csv(rows: list[dict], path: Path) -> Path:
    """``rows`` as a CSV file (the union of their columns, in first-seen order; nested values as JSON), written
    atomically."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
                         for k, v in row.items()})
    atomic.write_text(path, text.getvalue())
    return path
