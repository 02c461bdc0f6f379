"""Beyond the study (its future-work list): the classifier-free guidance scale, swept like the study's ablations.

    jaxir experiment cfg [--models jaxir_cldm] [--levels sr2,sr4,blur2] [--full]
"""

from jaxir.study.sweep import SettingSweep, trend_verdict

EXPERIMENT = SettingSweep(
    name="cfg", title="classifier-free guidance scale against fidelity and perceptual quality (future work)",
    claim=("A larger classifier-free guidance scale pushes restorations towards the prompt and away from the "
           "input: SSIM falls as the scale rises."),
    setting="cfg_scale", values=(1.0, 2.0, 4.0, 6.0, 8.0), full_values=(1.0, 2.0, 4.0, 6.0, 8.0, 10.0),
    label="classifier-free guidance scale", verdict=trend_verdict("cfg_scale", -1), fixed=()).experiment()
