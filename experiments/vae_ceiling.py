"""Table 2 of the study: the fidelity ceiling that each CLDM's autoencoder sets, ``D(mode(E(x)))`` of the clean
bundled photos scored as restorations (Y-channel PSNR/SSIM, NIQE).

    python experiments/vae_ceiling.py [--out runs/vae_ceiling] [--photos a,b] [--tile 256]

Autoencoders: the one of jaxir's shipped small CLDM (always), and SD 2.1's (DiffBIR) and SDXL's (SUPIR) when
their converted checkpoints exist under ``$JAXIR_CHECKPOINTS``. Writes results.csv (resumable) and table.md.
"""

import argparse
import sys

from jaxir import atomic
from jaxir.data import bundled_photos
from jaxir.restorers.cldm import checkpoint_name, supir_checkpoint_name
from jaxir.restorers.trained import CLDM
from jaxir.study.ceiling import ceiling_markdown, ceiling_table
from jaxir.weights import SHIPPED as WEIGHTS
from jaxir.weights import checkpoint_path


def available_autoencoders() -> dict:
    candidates = {"jaxir_cldm (f4, 8 ch)": WEIGHTS / CLDM,
                  "SD 2.1 (DiffBIR v2)": checkpoint_path(checkpoint_name("v2")),
                  "SDXL (SUPIR v0Q)": checkpoint_path(supir_checkpoint_name("v0Q"))}
    return {name: path for name, path in candidates.items() if (path / "config.json").is_file()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/vae_ceiling")
    parser.add_argument("--photos", help="comma-separated bundled photo names (default: all)")
    parser.add_argument("--tile", type=int, default=256, help="tile side in pixels for large images (0: untiled)")
    args = parser.parse_args(argv)
    from pathlib import Path

    out = Path(args.out)
    rows = ceiling_table(available_autoencoders(), bundled_photos(args.photos.split(",") if args.photos else None),
                         out, tile=args.tile)
    table = ceiling_markdown(rows)
    atomic.write_text(out / "table.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
