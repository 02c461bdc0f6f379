"""Fig. 1 and Fig. 2 of the study: restoration quality against degradation level, and the
perception–distortion plane, for every available restorer on the bundled photos.

    python experiments/degradation_sweep.py [--out runs/degradation_sweep] [any `jaxir study` option]

This is the main job (`make study`) with the study's levels: SR ×2, ×4 (MATLAB bicubic) and Gaussian blur
σ ∈ {1, 2, 4, 8, 20}. Outputs: results.csv, report.md, fig1_perception_distortion.png,
fig2_metrics_vs_degradation.png. Interrupt at will; rerunning resumes.
"""

import sys

from jaxir.cli import main
from jaxir.degradations import DEFAULT_LEVELS

if __name__ == "__main__":
    args = sys.argv[1:]
    defaults = [] if "--out" in args else ["--out", "runs/degradation_sweep"]
    defaults += [] if "--levels" in args else ["--levels", DEFAULT_LEVELS]
    sys.exit(main(["study", *defaults, *args]))
