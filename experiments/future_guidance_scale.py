"""Beyond the study (its future-work list): the restoration guidance scale, swept like the study's ablations.
DiffBIR defines its restoration guidance (weighted MSE in RGB) for the spaced (DDPM) sampler: every cell runs both.

    jaxir experiment guidance [--models jaxir_cldm] [--levels sr2,sr4,blur2] [--full]
"""

from jaxir.study.sweep import SettingSweep, trend_verdict

EXPERIMENT = SettingSweep(
    name="guidance", title="restoration guidance scale against fidelity and perceptual quality (future work)",
    claim=("Restoration guidance (DiffBIR's gradient step towards the stage-1 latent) trades perceptual quality "
           "for fidelity: a larger scale raises SSIM."),
    setting="guidance_scale", values=(0.0, 0.5, 2.0), full_values=(0.0, 0.1, 0.25, 0.5, 1.0, 2.0), levels="sr2,blur2",
    label="restoration guidance scale", verdict=trend_verdict("guidance_scale", 1),
    fixed=(("guidance_space", "rgb"), ("sampler", "spaced"))).experiment()
