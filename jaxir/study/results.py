"""The study's results table: one CSV row per finished (image, degradation, restorer) cell.

The file is always whole: every new row rewrites it atomically (:mod:`jaxir.atomic`; a table holds hundreds of
rows, so the rewrite costs nothing next to a cell), so a killed run leaves the previous table or the new one.
A table damaged some other way (cut by a full disk or a copy, a cut inside a multi-byte character such as the σ
of ``blur σ=2``, a cut header, stray bytes) is read line by line: each line is decoded and parsed on its own and
the damaged ones are dropped, so their cells run again; the writer then rewrites the intact rows. A file whose
header is not (a cut of) this table's header is another file, and is refused with a line saying what to do.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

from jaxir import atomic
from jaxir.errors import JaxirInputError

COLUMNS = ("image", "level", "task", "scale", "blur_sigma", "noise", "retention", "restorer", "family",
           "height", "width", "psnr", "ssim", "niqe", "seconds")
FLOAT_COLUMNS = ("scale", "blur_sigma", "noise", "retention", "psnr", "ssim", "niqe", "seconds")
INT_COLUMNS = ("height", "width")
HEADER = ",".join(COLUMNS)


def cell_key(row: dict) -> tuple[str, str, str]:
    return row["image"], row["level"], row["restorer"]


def _parse_line(line: bytes) -> dict | None:
    """One data line as a typed row, or None if it is damaged (undecodable, cut, wrong field count or value)."""
    try:
        fields = next(csv.reader([line.decode("utf-8")]))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None
    if len(fields) != len(COLUMNS) or any(f == "" for f in fields):
        return None
    row = dict(zip(COLUMNS, fields))
    try:
        for c in FLOAT_COLUMNS:
            row[c] = float(row[c])
        for c in INT_COLUMNS:
            row[c] = int(row[c])
    except ValueError:
        return None
    return row


def scan_results(path: Path) -> tuple[list[dict], int]:
    """(the intact rows of a results CSV, the number of damaged lines dropped); ([], 0) if there is no file.
    A later row of the same cell replaces an earlier one. Refuses a file that is not a results table."""
    if not path.exists():
        return [], 0
    lines = path.read_bytes().split(b"\n")
    cut = lines.pop()   # what follows the last newline: nothing in a whole file, else a line cut short
    header = HEADER.encode()
    if not lines:       # no whole line: an empty file, or a header cut short
        if header.startswith(cut):
            return [], int(cut != b"")
        lines = [cut]
    if lines[0] != header:
        shown = lines[0][:60].decode("utf-8", errors="replace")
        raise JaxirInputError(f"{path}: not a jaxir results table (its first line is {shown!r}); move it away, or "
                              "delete it to compute every cell again")
    rows: dict[tuple, dict] = {}
    damaged = int(cut != b"")
    for line in lines[1:]:
        row = _parse_line(line)
        if row is None:
            damaged += 1
        else:
            rows[cell_key(row)] = row
    return list(rows.values()), damaged


def read_results(path: Path) -> list[dict]:
    """The intact rows of a results CSV (numbers parsed); [] if the file does not exist (see the module
    docstring for damaged files)."""
    return scan_results(path)[0]


def _format(value) -> str:
    return f"{value:.6f}" if isinstance(value, float) and math.isfinite(value) else str(value)


def write_results(path: Path, rows: list[dict]) -> None:
    """The whole table of ``rows`` (one per cell, a later one replacing an earlier one of the same cell), written
    atomically."""
    lines = {cell_key(row): ResultsWriter.line(row) for row in rows}
    atomic.write_text(path, HEADER + "\n" + "".join(lines.values()))


class ResultsWriter:
    """Adds rows to the CSV, rewriting it atomically after each one. Opening it repairs a damaged table: the
    intact rows are written back (and the repair is reported on stderr), so damage never accumulates."""

    def __init__(self, path: Path):
        self.path = path
        rows, damaged = scan_results(path)
        self._lines = {cell_key(row): self.line(row) for row in rows}
        if damaged:
            self._flush()
            print(f"jaxir: {path}: dropped {damaged} damaged line(s), kept {len(rows)} intact row(s); the dropped "
                  "cells run again", file=sys.stderr)

    @staticmethod
    def line(row: dict) -> str:
        """One row as its CSV line."""
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([_format(row[c]) for c in COLUMNS])
        return buffer.getvalue()

    def _flush(self) -> None:
        atomic.write_text(self.path, HEADER + "\n" + "".join(self._lines.values()))

    def write(self, row: dict) -> None:
        """Add (or, for a cell run again, replace) the row of one finished cell."""
        self._lines[cell_key(row)] = self.line(row)
        self._flush()

    def close(self) -> None:
        """Nothing is held open (each write is a whole file); kept so callers can treat it as a resource."""
