"""DIV2K (HR, LR) pairs through the official tensorflow-datasets ``div2k`` builder.

TensorFlow and tensorflow-datasets are imported only when :func:`div2k` is called, never by ``import jaxir``
or ``import jaxir.data``. TensorFlow is hidden from any GPU before use, so it cannot take the accelerator's
memory away from JAX.

The builder fetches four archives for any split (HR and LR of both train and validation, about 4 GB for
``bicubic_x4``, of which 3.5 GB is the train HR). Archives already on disk are used instead of downloading
when they sit in ``manual_dir`` (or ``<data_dir>/downloads/manual``) under their official names, e.g.
``DIV2K_valid_HR.zip``; their checksums are verified.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import numpy as np

from jaxir.data.images import ImageRecord
from jaxir.data.tfds import import_tfds
from jaxir.errors import JaxirInputError

DIV2K_DEGRADATIONS = ("bicubic_x2", "bicubic_x3", "bicubic_x4", "bicubic_x8", "unknown_x2", "unknown_x3",
                      "unknown_x4", "realistic_mild_x4", "realistic_difficult_x4", "realistic_wild_x4")
DIV2K_SPLITS = ("train", "validation")


def _to_float(arr: np.ndarray) -> np.ndarray:
    """uint8 HWC → float32 RGB in [0, 1], rounded exactly as :func:`jaxir.data.load_image` rounds."""
    return (np.asarray(arr, dtype=np.float64) / 255.0).astype(np.float32)


def div2k(split: str = "validation", degradation: str = "bicubic_x4", data_dir: str | os.PathLike | None = None,
          download: bool = True, manual_dir: str | os.PathLike | None = None
          ) -> Iterator[tuple[ImageRecord, ImageRecord]]:
    """DIV2K as (HR, LR) pairs of float32 RGB :class:`ImageRecord`, in the dataset's stored order.

    ``split`` is "train" or "validation" (tfds slicing such as "validation[:10]" is accepted); ``degradation``
    is one of :data:`DIV2K_DEGRADATIONS`. ``data_dir`` is the tensorflow-datasets folder (tfds' default when
    None). With ``download=False`` the data must already be prepared there. ``manual_dir`` is a folder of
    already-downloaded DIV2K zips (official file names) used instead of the network.

    Records are named by their position in the split ("0000", "0001", ...), which is stable for a given
    tensorflow-datasets version; ``source`` names the tfds record. The LR image is the HR size divided by the
    scale (rounded down, as DIV2K stores it). Checks and preparation happen on the call; images are then
    decoded one pair at a time as the iterator is consumed.
    """
    if degradation not in DIV2K_DEGRADATIONS:
        raise JaxirInputError(f"unknown DIV2K degradation {degradation!r}; choose from {DIV2K_DEGRADATIONS}")
    if re.split(r"[\[+]", split, maxsplit=1)[0] not in DIV2K_SPLITS:
        raise JaxirInputError(f"unknown DIV2K split {split!r}; choose from {DIV2K_SPLITS} "
                              "(optionally sliced, e.g. 'validation[:10]')")
    tfds = import_tfds("DIV2K")
    name = f"div2k/{degradation}"
    builder = tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    if not builder.is_prepared():
        if not download:
            raise JaxirInputError(
                f"DIV2K ({name}) is not prepared in {builder.data_dir_root}; pass download=True to download and "
                "prepare it (about 4 GB), or manual_dir= a folder holding the official DIV2K zips")
        config = tfds.download.DownloadConfig(manual_dir=None if manual_dir is None else os.fspath(manual_dir))
        builder.download_and_prepare(download_config=config)
    dataset = builder.as_dataset(split=split, shuffle_files=False,
                                 read_config=tfds.ReadConfig(add_tfds_id=True))
    return _pairs(tfds.as_numpy(dataset), f"tfds:{name}:{split}")


def _pairs(examples, source: str) -> Iterator[tuple[ImageRecord, ImageRecord]]:
    for index, example in enumerate(examples):
        tfds_id = example["tfds_id"]
        tfds_id = tfds_id.decode() if isinstance(tfds_id, bytes) else str(tfds_id)
        record = f"{index:04d}"
        where = f"{source}:{tfds_id}"
        yield (ImageRecord(record, _to_float(example["hr"]), f"{where}:hr"),
               ImageRecord(record, _to_float(example["lr"]), f"{where}:lr"))
