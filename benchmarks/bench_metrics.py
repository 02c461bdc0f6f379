"""Throughput of jaxir's NIQE, SSIM and PSNR against BasicSR's (and pyiqa's NIQE when it imports).

    python benchmarks/bench_metrics.py --repeats 5 --size 512 --batch 8

Inputs: ``--batch`` distinct ``--size``×``--size`` crops of the bundled photos (non-overlapping tiles of the
photos that are at least that large, taken round-robin; at 512 these are astronaut, camera, hubble, ihc and
four tiles of retina), quantised to 8 bits so that both sides see the same pixel values. The distorted image
for SSIM/PSNR is the crop plus Gaussian noise of σ = 10 grey levels (seed 0), re-quantised.

* jaxir: the public ``jaxir.metrics.niqe/ssim/psnr`` on the whole NHWC float32 batch in [0, 1] (jit-compiled,
  float64 inside; the input checks of the public API are included). The first call (trace + compile + one
  run) is timed separately and reported as compile time = first call − best steady call. A second jaxir
  column calls the same functions one HWC image at a time (its own compile, excluded as well).
* BasicSR 1.4.2: ``calculate_niqe(img, 0, convert_to='gray')`` (MATLAB NIQE works on ``rgb2gray``; BasicSR's
  default ``'y'`` would score the 16..235 Y channel instead), ``calculate_ssim``/``calculate_psnr(img, img2, 0)``
  on HWC BGR float64 0..255, one image at a time in a Python loop — how BasicSR's validation calls them.
* pyiqa's NIQE, if ``import pyiqa`` works (it needs torchvision) and its model file is available offline.

Timing: both sides run in this one process, on the same cores (XLA's thread pool; NumPy/OpenCV/torch threads
for BasicSR). Every repeat times each side once, the side that goes first alternating between repeats; the
table shows the minimum over repeats of the per-image time (batch time / batch). ``os.getloadavg()`` is
printed with each result, since other processes may share the machine.

Agreement: the NIQE values of the first image from jaxir, from BasicSR with ``convert_to='gray'`` (OpenCV's
0.299/0.587/0.114 weights on float values, then rounding) and ``'y'``, and from BasicSR fed exactly jaxir's
grayscale input (MATLAB ``rgb2gray`` of the uint8 image, ``input_order='HW'``), which isolates the
implementations from the colour conversion; max |Δ| over the batch for the last one and for SSIM/PSNR.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # basicsr_reference.py

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxir.data import bundled_photos  # noqa: E402
from jaxir.metrics import niqe, psnr, ssim  # noqa: E402
from jaxir.metrics.color import rgb_to_gray_uint8  # noqa: E402
from jaxir.validation import as_rgb_batch  # noqa: E402

NOISE_GREY_LEVELS = 10.0
NIQE_GOAL = 5.0


def load_str() -> str:
    return "load {:.2f}/{:.2f}/{:.2f}".format(*os.getloadavg())


def crops(size: int, batch: int) -> tuple[np.ndarray, list[str]]:
    """(batch, size, size, 3) uint8 RGB crops of the bundled photos and their labels."""
    tiles = []
    for rec in bundled_photos():
        h, w = rec.image.shape[:2]
        tiles.append([(f"{rec.name}[{i * size}:,{j * size}:] of {h}x{w}",
                       rec.image[i * size:(i + 1) * size, j * size:(j + 1) * size])
                      for i in range(h // size) for j in range(w // size)])
    order = [t for k in range(max(map(len, tiles), default=0)) for ts in tiles if k < len(ts) for t in [ts[k]]]
    if not order:
        raise SystemExit(f"no bundled photo is at least {size}x{size}")
    if len(order) < batch:
        print(f"note: only {len(order)} distinct {size}x{size} tiles; repeating them to fill a batch of {batch}")
    chosen = [order[i % len(order)] for i in range(batch)]
    imgs = np.stack([np.floor(np.clip(im, 0, 1) * 255.0 + 0.5).astype(np.uint8) for _, im in chosen])
    return imgs, [name for name, _ in chosen]


def noisy(u8: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(np.round(u8 + NOISE_GREY_LEVELS * rng.standard_normal(u8.shape)), 0, 255).astype(np.uint8)


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def pyiqa_niqe():
    """A callable (HWC RGB uint8 → NIQE) from pyiqa, or the reason it is unavailable."""
    try:
        import pyiqa  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure (missing torchvision, ...) means "skip"
        return None, f"not installed ({type(e).__name__}: {e})"
    try:
        import torch

        metric = pyiqa.create_metric("niqe", device="cpu", as_loss=False)  # loads its model file (may download)
    except Exception as e:  # noqa: BLE001
        return None, f"imports but its NIQE could not be created offline ({type(e).__name__}: {e})"

    def run(img_u8):
        t = torch.from_numpy(img_u8.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            return float(metric(t))

    return run, "ok"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per side (min is reported)")
    p.add_argument("--size", type=int, default=512, help="crop size (square); needs photos at least this large")
    p.add_argument("--batch", type=int, default=8, help="images per jaxir batch (= BasicSR loop length)")
    p.add_argument("--metrics", default="niqe,ssim,psnr", help="comma-separated subset of niqe,ssim,psnr")
    p.add_argument("--no-single", action="store_true", help="skip jaxir's one-image-at-a-time column")
    args = p.parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]

    import cv2
    import torch
    from basicsr_reference import load

    # BasicSR's NIQE takes np.mean of empty slices on flat blocks (black borders of hubble/retina): NaN on purpose
    warnings.filterwarnings("ignore", category=RuntimeWarning, message="(Mean of empty slice|invalid value)")

    bsr = load()
    u8, names = crops(args.size, args.batch)
    u8_noisy = noisy(u8)
    print(f"# bench_metrics: jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
          f"torch threads {torch.get_num_threads()}, cv2 threads {cv2.getNumThreads()}")
    print(f"# images: {args.batch} crops {args.size}x{args.size} (8-bit): " + "; ".join(names))
    print(f"# repeats {args.repeats}, {load_str()}")

    # jaxir: float32 RGB NHWC in [0, 1] on the device; BasicSR: HWC BGR float64 0..255, per image.
    x = jax.device_put(jnp.asarray(u8.astype(np.float32) / 255.0))
    y = jax.device_put(jnp.asarray(u8_noisy.astype(np.float32) / 255.0))
    xs = [x[i] for i in range(args.batch)]
    ys = [y[i] for i in range(args.batch)]
    bgr = [im[..., ::-1].astype(np.float64) for im in u8]
    bgr_noisy = [im[..., ::-1].astype(np.float64) for im in u8_noisy]

    sides = {
        "niqe": (lambda: niqe(x),
                 lambda: [niqe(xi) for xi in xs],
                 lambda: [bsr.niqe.calculate_niqe(im, 0, input_order="HWC", convert_to="gray") for im in bgr]),
        "ssim": (lambda: ssim(x, y),
                 lambda: [ssim(xi, yi) for xi, yi in zip(xs, ys)],
                 lambda: [bsr.psnr_ssim.calculate_ssim(a, b, 0, input_order="HWC") for a, b in zip(bgr, bgr_noisy)]),
        "psnr": (lambda: psnr(x, y),
                 lambda: [psnr(xi, yi) for xi, yi in zip(xs, ys)],
                 lambda: [bsr.psnr_ssim.calculate_psnr(a, b, 0, input_order="HWC") for a, b in zip(bgr, bgr_noisy)]),
    }
    rows, values = [], {}
    for m in metrics:
        jb, j1, ref = sides[m]
        first_b, out_b = timed(lambda: jax.block_until_ready(jb()))
        first_1 = timed(lambda: jax.block_until_ready(j1()))[0] if not args.no_single else float("nan")
        ref_out = ref()  # warm-up (imports, caches)
        tb, t1, tr = [], [], []
        for r in range(args.repeats):
            order = ["jax", "ref"] if r % 2 == 0 else ["ref", "jax"]
            for side in order:
                if side == "jax":
                    tb.append(timed(lambda: jax.block_until_ready(jb()))[0])
                    if not args.no_single:
                        t1.append(timed(lambda: jax.block_until_ready(j1()))[0])
                else:
                    tr.append(timed(ref)[0])
        n = args.batch
        per_b, per_r = min(tb) / n, min(tr) / n
        per_1 = min(t1) / n if t1 else float("nan")
        compile_b = first_b - min(tb)
        compile_1 = first_1 - min(t1) if t1 else float("nan")
        jv, rv = np.asarray(out_b, np.float64), np.asarray(ref_out, np.float64)
        values[m] = (jv, rv)
        agree = f"max abs diff {np.max(np.abs(jv - rv)):.2e}"
        rows.append((m, per_b, per_1, per_r, per_r / per_b, compile_b, compile_1, agree, load_str()))
        print(f"  {m}: jaxir batch {per_b * 1e3:.1f} ms/img, 1-by-1 {per_1 * 1e3:.1f} ms/img, BasicSR "
              f"{per_r * 1e3:.1f} ms/img (all runs, s: jaxir {[round(v, 3) for v in tb]}, "
              f"BasicSR {[round(v, 3) for v in tr]}), {load_str()}", flush=True)

    if "niqe" in values:
        gray_hw = np.asarray(rgb_to_gray_uint8(np.asarray(u8, np.float64) / 255.0))  # exactly jaxir's NIQE input
        same_input = np.array([bsr.niqe.calculate_niqe(g, 0, input_order="HW") for g in gray_hw])
        y0 = bsr.niqe.calculate_niqe(bgr[0], 0, input_order="HWC", convert_to="y")
        jv, rv = values["niqe"]
        lines = [f"NIQE of image 0 ({names[0]}): jaxir {jv[0]:.6f} | BasicSR convert_to='gray' {rv[0]:.6f} | "
                 f"BasicSR on jaxir's rgb2gray input (HW) {same_input[0]:.6f} | BasicSR convert_to='y' {y0:.6f}",
                 f"NIQE max |jaxir − BasicSR(same gray input)| over the batch: {np.max(np.abs(jv - same_input)):.2e}"]
        fn, status = pyiqa_niqe()
        if fn is None:
            lines.append(f"pyiqa: {status}")
        else:
            tp = []
            pv = fn(u8[0])
            for _ in range(args.repeats):
                tp.append(timed(lambda: [fn(im) for im in u8])[0])
            per_p = min(tp) / args.batch
            per_b = next(r for r in rows if r[0] == "niqe")[1]
            lines.append(f"pyiqa NIQE: {per_p * 1e3:.1f} ms/img (ratio pyiqa/jaxir {per_p / per_b:.2f}), "
                         f"image 0 = {pv:.6f}")
    else:
        lines = []

    print()
    print(f"| metric | jaxir batch {args.batch} (ms/img) | jaxir 1-by-1 (ms/img) | BasicSR loop (ms/img) "
          f"| BasicSR / jaxir batched | jaxir compile batch / single (s) | values agree | load |")
    print("|---|---|---|---|---|---|---|---|")
    for m, pb, p1, pr, ratio, cb, c1, agree, ld in rows:
        print(f"| {m} | {pb * 1e3:.1f} | {p1 * 1e3:.1f} | {pr * 1e3:.1f} | {ratio:.2f}x | {cb:.2f} / {c1:.2f} "
              f"| {agree} | {ld.split()[1]} |")
    print()
    for line in lines:
        print(line)
    checks = min(timed(lambda: jax.block_until_ready(as_rgb_batch(x)[0]))[0] for _ in range(max(args.repeats, 3)))
    print(f"public-API input checks (as_rgb_batch, host-side finite/range scan): {checks * 1e3:.1f} ms per batch "
          f"call ({checks / args.batch * 1e3:.2f} ms/img; PSNR/SSIM check two inputs)")
    niqe_row = next((r for r in rows if r[0] == "niqe"), None)
    if niqe_row is not None:
        ok = niqe_row[4] >= NIQE_GOAL
        print(f"NIQE goal (batched jaxir >= {NIQE_GOAL:g}x BasicSR per image): {'MET' if ok else 'NOT met'} "
              f"({niqe_row[4]:.2f}x at batch {args.batch}, {args.size}x{args.size})")


if __name__ == "__main__":
    main()
