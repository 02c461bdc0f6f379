"""The ``stripformer`` restorer: Stripformer trained on GoPro (Tsai et al., ECCV 2022) for blind deblurring.

Input convention of the original (``predict_GoPro_test_results.py``): RGB in [0, 1] minus 0.5 goes in, the output
plus 0.5 comes out, and ``torchvision.utils.save_image`` clamps it to [0, 1]. That script feeds the whole GoPro
frame (1280×720, already a multiple of 4) without padding; the RealBlur scripts reflect-pad the bottom and right
to a multiple of 8, run the network, crop back and clamp. Here the image is reflect-padded at the bottom and right
to the next multiple of 4 (what the network needs, see :mod:`jaxir.models.stripformer`), restored, cropped back to
its size and clamped to [0, 1].

Images up to ``TILE`` pixels on each side run whole, like the original (its strip attention spans whole rows and
columns, so tiling changes the result); larger ones go through :func:`jaxir.tiling.tiled_apply` with ``TILE``-sized
tiles overlapping by ``OVERLAP`` (both multiples of 4, so every tile of the padded image is a valid input).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxir.batches import pad_to_multiple
from jaxir.errors import JaxirInputError
from jaxir.models.stripformer import INPUT_OFFSET, SIZE_MULTIPLE
from jaxir.restorers.learned import checkpoint_restorer
from jaxir.tiling import tiled_apply

CHECKPOINT = "stripformer_gopro"
TILE = 1280        # the GoPro test frames (1280×720) run whole
OVERLAP = 128

HOW_TO_GET = ("download Stripformer_gopro.pth from the Google Drive folder linked in the README of "
              "https://github.com/pp00704831/Stripformer-ECCV-2022- "
              "(https://drive.google.com/drive/folders/18kx_JTj8SzsQk0Wxnkn5_gg_d_iK_LKZ), then run: "
              f"python -m checkpoints_conversion stripformer Stripformer_gopro.pth --out $JAXIR_CHECKPOINTS/{CHECKPOINT}")


def make_restore(model, params, tile: int = TILE, overlap: int = OVERLAP):
    """(:class:`~jaxir.models.stripformer.StripformerModel`, params) of a ``stripformer`` checkpoint → restore
    function (LQ NHWC in [0, 1], degradation) → the deblurred batch in [0, 1], same size."""
    if tile % SIZE_MULTIPLE or overlap % SIZE_MULTIPLE:
        raise JaxirInputError(f"Stripformer tile ({tile}) and overlap ({overlap}) must be multiples of {SIZE_MULTIPLE}")
    network = jax.jit(lambda p, x: model.forward(p, x - INPUT_OFFSET) + INPUT_OFFSET)

    def restore(lq, degradation=None):
        height, width = lq.shape[1], lq.shape[2]
        restored = tiled_apply(lambda x: network(params, x), pad_to_multiple(jnp.asarray(lq, jnp.float32), SIZE_MULTIPLE, mode="reflect"),
                               tile, overlap)
        return jnp.clip(restored[:, :height, :width], 0.0, 1.0)

    return restore


STRIPFORMER = checkpoint_restorer(
    "stripformer", CHECKPOINT, make_restore, ("deblur",),
    "Stripformer (ECCV 2022) trained on GoPro: strip-attention transformer for blind motion deblurring",
    HOW_TO_GET)
