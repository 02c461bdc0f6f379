"""Does ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=`` (empty list: no YNNPACK fusions) pay off on this
CPU for jaxir's operations, and does it change their outputs?

    python benchmarks/xla_flags.py --rounds 3 --repeats 5

Each configuration runs in its own process (XLA reads XLA_FLAGS once, at backend start): "default" with
XLA_FLAGS unset (or with the flag removed from an inherited XLA_FLAGS) and "flag" with the flag appended. The
processes alternate (default, flag, flag, default, ...) ``--rounds`` times each; every process compiles each
operation once (``lower().compile()``, timed: the compile time column) and times ``--repeats`` calls. The table shows the
minimum over all calls of all processes of a configuration (wall time, and the process's CPU time over all its
threads, which other processes disturb less), with ``os.getloadavg()`` at the end.

Operations (inputs as in ``bench_metrics.py``: 8-bit crops of the bundled photos, float32 RGB in [0, 1]):
  niqe    ``jaxir.metrics.niqe`` on a batch of 8 crops of 512² (float64 inside)
  ssim    ``jaxir.metrics.ssim`` on the same batch vs. a noisy copy (σ = 10 grey levels; float64 inside)
  blur4   ``Degradation(blur_sigma=4)`` on the batch, jit-compiled (float32 separable convolution)
  sr4     ``Degradation(scale=4)`` on the batch, jit-compiled (MATLAB bicubic as two float32 matmuls)
  convnet flax.linen, 5 conv layers 3×3 with 64 channels (ReLU between), on 1×256×256×3, float32, seed 0

Outputs: every process saves its outputs; the report says whether the two configurations give bit-identical
results (and, as a control, whether repeated processes of one configuration do), or the max |difference|.
"__ynn_fusion" in the compiled HLO shows whether YNNPACK was used at all.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAG = "--xla_cpu_experimental_ynn_fusion_type="
HERE = Path(__file__).resolve().parent
OPS = ("niqe", "ssim", "blur4", "sr4", "convnet")


def env_for(config: str) -> dict:
    env = dict(os.environ)
    kept = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(FLAG)]
    if config == "flag":
        kept.append(FLAG)
    if kept:
        env["XLA_FLAGS"] = " ".join(kept)
    else:
        env.pop("XLA_FLAGS", None)
    return env


def child(out_dir: str, repeats: int, size: int, batch: int) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(HERE))
    from bench_metrics import crops, noisy

    import flax.linen as nn

    from jaxir.degradations import Degradation
    from jaxir.metrics import niqe, ssim

    u8, _ = crops(size, batch)
    x = jax.device_put(jnp.asarray(u8.astype(np.float32) / 255.0))
    y = jax.device_put(jnp.asarray(noisy(u8).astype(np.float32) / 255.0))

    class Net(nn.Module):
        @nn.compact
        def __call__(self, z):
            for i in range(5):
                z = nn.Conv(64, (3, 3), padding="SAME")(z)
                if i < 4:
                    z = nn.relu(z)
            return z

    net = Net()
    z = jnp.asarray(np.random.default_rng(0).random((1, 256, 256, 3), dtype=np.float32))
    params = net.init(jax.random.key(0), z)
    net_apply = jax.jit(net.apply)
    blur4 = jax.jit(lambda a: Degradation(blur_sigma=4)(a))
    sr4 = jax.jit(lambda a: Degradation(scale=4)(a))

    compile_s = {}

    def hlo_has_ynn(op, lowerable, *a) -> bool:
        t = time.perf_counter()
        text = lowerable.lower(*a).compile().as_text()
        compile_s[op] = time.perf_counter() - t
        return "__ynn_fusion" in text

    # the jitted cores of the public metrics, compiled as niqe()/ssim() compile them (under enable_x64)
    with jax.enable_x64(True):
        from jaxir.metrics.fidelity import _ssim
        from jaxir.metrics.niqe import _niqe

        ynn = {"niqe": hlo_has_ynn("niqe", _niqe, x), "ssim": hlo_has_ynn("ssim", _ssim, x, y, 0, False)}
    ynn.update(blur4=hlo_has_ynn("blur4", blur4, x), sr4=hlo_has_ynn("sr4", sr4, x),
               convnet=hlo_has_ynn("convnet", net_apply, params, z))

    calls = {"niqe": lambda: niqe(x), "ssim": lambda: ssim(x, y), "blur4": lambda: blur4(x),
             "sr4": lambda: sr4(x), "convnet": lambda: net_apply(params, z)}
    result = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "ynn": ynn, "compile": compile_s, "times": {}}
    outputs = {}
    for op, fn in calls.items():
        outputs[op] = np.asarray(jax.block_until_ready(fn()))  # warm-up (the compiled executable is reused)
        ts, cpu = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn())
            ts.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        result["times"][op] = ts
        result.setdefault("cpu", {})[op] = cpu
    result["load"] = os.getloadavg()
    np.savez(Path(out_dir) / "outputs.npz", **outputs)
    (Path(out_dir) / "result.json").write_text(json.dumps(result))


def compare(a, b) -> str:
    import numpy as np

    if a.shape != b.shape:
        return f"shapes differ {a.shape} vs {b.shape}"
    if np.array_equal(a, b, equal_nan=True) and a.tobytes() == b.tobytes():
        return "bit-identical"
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    scale = np.nanmax(np.abs(b.astype(np.float64)))
    return (f"max abs diff {np.nanmax(d):.2e} (= {np.nanmax(d) / scale:.1e} of max abs value; "
            f"{np.mean(d > 0) * 100:.0f}% of values differ)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="processes per configuration (alternating)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per operation per process")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.repeats, args.size, args.batch)
        return

    import numpy as np

    order = [c for r in range(args.rounds) for c in (("default", "flag") if r % 2 == 0 else ("flag", "default"))]
    runs = {"default": [], "flag": []}
    print(f"# xla_flags: {len(order)} processes, order {order}; load {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, config in enumerate(order):
            d = Path(tmp) / f"{i}_{config}"
            d.mkdir()
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(d), "--repeats", str(args.repeats),
                   "--size", str(args.size), "--batch", str(args.batch)]
            subprocess.run(cmd, env=env_for(config), check=True)
            res = json.loads((d / "result.json").read_text())
            with np.load(d / "outputs.npz") as f:
                res["outputs"] = {k: f[k] for k in f.files}
            runs[config].append(res)
            best = {op: f"{min(ts) * 1e3:.0f}" for op, ts in res["times"].items()}
            print(f"  process {i + 1}/{len(order)} {config:7s} XLA_FLAGS={res['xla_flags']!r}: best ms {best}, "
                  f"load {res['load'][0]:.2f}", flush=True)

    print()
    print("| op | default (ms) | with flag (ms) | default / flag | CPU time default / flag (ms) "
          "| compile default / flag (s) | __ynn_fusion default / flag | outputs flag vs default | default run-to-run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for op in OPS:
        best = {c: min(t for r in runs[c] for t in r["times"][op]) for c in runs}
        comp = {c: min(r["compile"][op] for r in runs[c]) for c in runs}
        cpu = {c: min(t for r in runs[c] for t in r["cpu"][op]) for c in runs}
        ynn = {c: "/".join(sorted({"yes" if r["ynn"][op] else "no" for r in runs[c]})) for c in runs}
        diff = compare(runs["flag"][0]["outputs"][op], runs["default"][0]["outputs"][op])
        ctrl = (compare(runs["default"][1]["outputs"][op], runs["default"][0]["outputs"][op])
                if len(runs["default"]) > 1 else "n/a")
        print(f"| {op} | {best['default'] * 1e3:.1f} | {best['flag'] * 1e3:.1f} | {best['default'] / best['flag']:.2f}x "
              f"| {cpu['default'] * 1e3:.0f} / {cpu['flag'] * 1e3:.0f} | {comp['default']:.2f} / {comp['flag']:.2f} | {ynn['default']} / {ynn['flag']} | {diff} | {ctrl} |")
    loads = [r["load"][0] for c in runs for r in runs[c]]
    print(f"\nload (1-min) at the end of each process: min {min(loads):.2f}, max {max(loads):.2f}; "
          f"now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
