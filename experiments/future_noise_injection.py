"""Beyond the study (its future-work list): the noise injected per sampling step (DDIM η), swept like the study's
ablations.

    jaxir experiment noise [--models jaxir_cldm] [--levels sr2,sr4,blur2] [--full]
"""

from jaxir.study.sweep import SettingSweep, trend_verdict

EXPERIMENT = SettingSweep(
    name="noise",
    title="noise injected per sampling step (DDIM η) against fidelity and perceptual quality (future work)",
    claim=("Injecting more fresh noise during sampling lowers fidelity: SSIM falls as η rises."),
    setting="eta", values=(0.0, 0.25, 0.5, 0.75, 1.0), full_values=(0.0, 0.25, 0.5, 0.75, 1.0),
    label="noise injected per sampling step (DDIM η)", verdict=trend_verdict("eta", -1), fixed=()).experiment()
