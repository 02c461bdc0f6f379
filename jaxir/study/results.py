"""The study's results table: one CSV row per finished (image, degradation, restorer) cell.

Rows are appended and flushed to disk as each cell finishes, so an interrupted sweep loses at most the cell
in progress; :func:`read_results` skips a last line cut off mid-write.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

COLUMNS = ("image", "level", "task", "scale", "blur_sigma", "noise", "retention", "restorer", "family",
           "height", "width", "psnr", "ssim", "niqe", "seconds")
FLOAT_COLUMNS = ("scale", "blur_sigma", "noise", "retention", "psnr", "ssim", "niqe", "seconds")
INT_COLUMNS = ("height", "width")


def cell_key(row: dict) -> tuple[str, str, str]:
    return row["image"], row["level"], row["restorer"]


def read_results(path: Path) -> list[dict]:
    """Complete rows of a results CSV (numbers parsed); [] if the file does not exist."""
    if not path.exists():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if any(row.get(c) in (None, "") for c in COLUMNS):
                continue  # a row cut off by an interruption
            try:
                for c in FLOAT_COLUMNS:
                    row[c] = float(row[c])
                for c in INT_COLUMNS:
                    row[c] = int(row[c])
            except ValueError:
                continue
            rows.append(row)
    return rows


class ResultsWriter:
    """Appends rows to the CSV, writing the header for a new file and syncing after every row."""

    def __init__(self, path: Path):
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            self._terminate_partial_line()
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
        if new:
            self._writer.writeheader()

    def _terminate_partial_line(self) -> None:
        with open(self.path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")

    def write(self, row: dict) -> None:
        self._writer.writerow({c: (f"{row[c]:.6f}" if isinstance(row[c], float) and math.isfinite(row[c])
                                   else row[c]) for c in COLUMNS})
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
