"""Fig. 7 of the study: the number of sampling steps, from the restorer's own start (each step count compiles
its own sampling program once; every other value is traced).

    jaxir experiment fig7 [--models jaxir_cldm] [--levels sr2,sr4,blur2] [--full]
"""

from jaxir.study.sweep import SettingSweep, judge

SSIM_MARGIN, NIQE_MARGIN = 0.01, 0.3


def verdict(series: dict) -> tuple[str, str]:
    """Holds when going from the middle step count to the largest changes SSIM by under 0.01 and NIQE by under
    0.3 for every (model, level): many steps bring little."""
    small, parts = {}, []
    for (model, level), points in series.items():
        counts = sorted(points)
        mid, top = counts[len(counts) // 2], counts[-1]
        d_ssim = points[top]["ssim"] - points[mid]["ssim"]
        d_niqe = points[top]["niqe"] - points[mid]["niqe"]
        small[model, level] = abs(d_ssim) < SSIM_MARGIN and abs(d_niqe) < NIQE_MARGIN
        parts.append(f"{model} {level}: {mid} → {top} steps ΔSSIM {d_ssim:+.4f}, ΔNIQE {d_niqe:+.2f}")
    return judge({"little change": sum(small.values()) / len(small)},
                 f"{'; '.join(parts)} (little = |ΔSSIM| < {SSIM_MARGIN} and |ΔNIQE| < {NIQE_MARGIN})")


EXPERIMENT = SettingSweep(
    name="fig7", title="number of sampling steps against fidelity and perceptual quality",
    claim="Many sampling steps bring little: beyond a handful of steps, fidelity and perceptual quality barely "
          "change.",
    setting="steps", values=(1, 2, 5, 10, 20, 40), full_values=(1, 2, 5, 10, 20, 50, 100),
    label="sampling steps", verdict=verdict, log_x=True).experiment()
