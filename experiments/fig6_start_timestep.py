"""Fig. 6 of the study: the starting noise level. DiffBIR-style sampling starts from the stage-1 latent noised to
``t_start`` (``start_from_condition``); the higher ``t_start``, the more of the result the diffusion model invents.

    jaxir experiment fig6 [--models jaxir_cldm] [--levels sr2,sr4,blur2] [--full]
"""

from jaxir.study.sweep import SettingSweep, trend_verdict

SWEEP = SettingSweep(
    name="fig6", title="starting noise level (start timestep) against fidelity and perceptual quality",
    claim="The more noise sampling starts from, the further the restoration departs from the ground truth: SSIM "
          "falls as the start timestep rises.",
    setting="t_start", values=(50, 150, 250, 400, 600, 800, 999), full_values=(100, 200, 300, 400, 500, 600, 700,
                                                                             800, 900, 999),
    label="start timestep t_start", verdict=trend_verdict("t_start", -1), fixed=(("start_from_condition", True),),
    full_models=("diffbir_v2", "diffbir_v2.1", "jaxir_cldm"))
EXPERIMENT = SWEEP.experiment()
