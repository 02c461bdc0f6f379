"""The measurements of ``benchmarks/device_check.py``, one phase per process: each appends one JSON line per result
to ``--rows`` as soon as it has it, so a phase stopped at its time limit keeps what it measured.

    python benchmarks/device_bench.py PHASE --rows rows.jsonl --work /tmp/jaxir_device_check [--tiny] [--budget S]

Phases (``device_check.py`` runs them in this order; the models, weights and functions are those of
``bench_ldm.py``, ``supir_memory.py`` and ``supir_cpu_run.py``):

* ``check``: versions, the devices JAX and PyTorch see, and the matrix-product ceilings the TFLOP/s are compared
  with (PyTorch ``n³`` products on random data, bf16 and fp32 with TF32; median of 10 after 3 warm-ups).
* ``step-torch`` / ``step-jax``: one ControlLDM ε evaluation (IRControlNet + UNet, SD 2.1-base widths, bench_ldm's
  ``unet`` task) per ``--configs`` entry ``SIDExBATCH:DTYPE``. PyTorch: diffusers, ``fp32`` (TF32 matrix products
  and convolutions allowed) or ``bf16`` (modules and inputs in bfloat16). jaxir, the same weights: ``fp32`` (JAX's
  ``tensorfloat32`` matmul precision, the same arithmetic), ``bf16`` (parameters stored in bfloat16, inputs and
  activations float32: jaxir as it is, see ``supir_memory.py``) or ``bf16-cast`` (parameters, inputs and every
  module's output in bfloat16: an approximation of a bf16 compute path). Per entry: setup (jaxir: compile) s,
  median and min of the timed calls (after one warm-up call; at least 3 and at most 20, until 1 s of calls), peak
  device memory (PyTorch: ``max_memory_allocated``; jaxir: XLA's ``memory_analysis``, arguments + outputs + temp −
  aliases; both count the weights), FLOPs of the step (``torch.utils.flop_counter`` on the PyTorch side, reused
  for jaxir; XLA's ``cost_analysis`` count alongside), and the output's max |jaxir − torch| / max |torch|.
* ``restore-torch`` / ``restore-jax``: bench_ldm's ``restore``: encode the condition, ``--steps`` DDIM steps of
  the step above (fp32), decode, at ``--size``² (batch 1); jaxir's compile and first call timed apart.
* ``supir-run``: ``supir_cpu_run.py --dtype bf16 --steps N --size S``: the whole ``SUPIRPipeline`` restoration with
  random bf16 weights; per-pipeline-phase times, the device's peak allocation, the time per step.
* ``sweep``: the shipped miniature ``jaxir_cldm`` on the bundled ``astronaut`` at SR ×2 over ``--t-starts`` ×
  ``--seeds`` (one ``restore`` call per start timestep, the seeds as its batch of sample ids): cells/s and
  compilations (``jaxir.cost.Meter``), the first call (compiling) apart from the rest.
* ``supir-memory``: ``supir_memory.py --dtype bf16 --pieces step`` at ``--size``²: XLA's buffer assignment of one
  guided step on this backend, and the estimated peak of a restoration against 80 GB.

``--budget``: a phase that runs several configurations starts the next one only if the slowest so far would still
fit; those left are recorded as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_ldm as B  # noqa: E402

GiB = 2 ** 30


class Rows:
    """Appends result rows (dicts) to a JSON-lines file, each flushed to disk at once."""

    def __init__(self, path: Path, phase: str):
        self.path, self.phase = path, phase

    def add(self, **row) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(dict(phase=self.phase, **row)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(f"[{self.phase}] " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)


STARTED = time.monotonic()


def budgeted(items: list, budget: float | None, rows: Rows):
    """Yields ``items`` while the slowest one so far would still end within ``budget`` seconds of the process's
    start; records the rest as skipped."""
    slowest = 0.0
    for i, item in enumerate(items):
        if budget is not None and time.monotonic() - STARTED + slowest > budget:
            for rest in items[i:]:
                rows.add(config=rest, skipped=f"phase budget {budget:.0f} s")
            return
        t0 = time.monotonic()
        yield item
        slowest = max(slowest, time.monotonic() - t0)


def timed(call, sync, once: bool, min_seconds: float = 1.0, min_reps: int = 3, max_reps: int = 20) -> dict:
    """Median and min wall seconds of ``call`` after one warm-up call, repeated until ``min_seconds`` of calls
    (at least ``min_reps``, at most ``max_reps``); ``sync`` waits for the device. ``once`` (``--tiny``: the CPU
    dry run only shows that everything runs): one call, timed, no warm-up."""
    if once:
        min_seconds, min_reps, max_reps = 0.0, 1, 1
    out = None if once else sync(call())   # the warm-up call
    times = []
    while len(times) < max_reps and (len(times) < min_reps or sum(times) < min_seconds):
        t0 = time.perf_counter()
        out = sync(call())
        times.append(time.perf_counter() - t0)
    return dict(median_s=statistics.median(times), min_s=min(times), reps=len(times), out=out)


def parse_configs(text: str) -> list[str]:
    """``"64x1:fp32,128x8:bf16"`` → the entries, checked."""
    configs = [c for c in text.split(",") if c]
    for c in configs:
        shape, _, dtype = c.partition(":")
        size, _, batch = shape.partition("x")
        if not (size.isdigit() and batch.isdigit() and dtype in ("fp32", "bf16", "bf16-cast")):
            raise SystemExit(f"bad step config {c!r}: SIDExBATCH:fp32|bf16|bf16-cast")
    return configs


def split_config(config: str) -> tuple[int, int, str]:
    shape, _, dtype = config.partition(":")
    size, _, batch = shape.partition("x")
    return int(size), int(batch), dtype


def rel_err(ours, ref_path: Path) -> float | None:
    """max |ours − ref| / max |ref| against a saved reference, or None without one."""
    return B.rel_err(np.asarray(ours, np.float32), np.load(ref_path)) if ref_path.exists() else None


# ---- PyTorch side --------------------------------------------------------------------------------------------------

class Torch:
    """PyTorch on its best device (CUDA when there is one), TF32 allowed for float32."""

    def __init__(self):
        import torch

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def sync(self, out):
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        return out

    def reset_peak(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / GiB if self.device == "cuda" else None

    def nchw(self, a, dtype):
        return self.torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).to(self.device, dtype)

    def nhwc(self, out) -> np.ndarray:
        return out.float().cpu().numpy().transpose(0, 2, 3, 1)

    def dtype(self, name: str):
        return self.torch.bfloat16 if name.startswith("bf16") else self.torch.float32

    def flops(self, call) -> int:
        """FLOPs of one ``call`` as PyTorch's flop counter sees them (matrix products, convolutions, attention)."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            self.sync(call())
        return counter.get_total_flops()


def step_torch(args, rows: Rows) -> None:
    """The ε step of each configuration, grouped by dtype (the modules are converted once, fp32 first)."""
    t = Torch()
    torch = t.torch
    kw = B.diffusers_kwargs(args.tiny)
    nets = B.torch_networks(args.cache, args.tiny, ("unet", "controlnet"))
    wanted = {(size, batch, "fp32" if dtype == "fp32" else "bf16") for size, batch, dtype in map(split_config,
                                                                                                  args.configs)}
    flops = {}
    order = [f"{s}x{b}:{d}" for s, b, d in sorted(wanted, key=lambda c: (c[2] != "fp32", c[0] * c[0] * c[1]))]
    current = None
    with torch.inference_mode():
        for config in budgeted(order, args.budget, rows):
            size, batch, dtype = split_config(config)
            if dtype != current:
                for net in nets.values():
                    net.to(t.device, t.dtype(dtype))
                current = dtype
            data = B.inputs("unet", size, batch, kw["context_dim"])
            ctx = torch.from_numpy(data["ctx"]).to(t.device, t.dtype(dtype))
            eps = B.torch_eps(nets["unet"], nets["controlnet"], ctx)
            x, hint = t.nchw(data["x"], t.dtype(dtype)), t.nchw(data["hint"], t.dtype(dtype))
            steps = torch.from_numpy(data["t"]).to(t.device)
            call = lambda: eps(x, hint, steps)  # noqa: E731
            t.reset_peak()
            if (size, batch) not in flops:
                flops[(size, batch)] = t.flops(call)
            result = timed(call, t.sync, args.tiny)
            np.save(args.work / f"torch_step_{size}x{batch}_{dtype}.npy", t.nhwc(result.pop("out")))
            rows.add(config=config, device=t.device, flops=flops[(size, batch)], peak_gib=t.peak_gib(), **result)


def restore_torch(args, rows: Rows) -> None:
    """bench_ldm's restoration (fp32, TF32 allowed), timed as a whole."""
    t = Torch()
    kw = B.diffusers_kwargs(args.tiny)
    t0 = time.perf_counter()
    nets = B.torch_networks(args.cache, args.tiny, ("unet", "controlnet", "vae"))
    for net in nets.values():
        net.to(t.device)
    data = B.inputs("restore", args.size, 1, kw["context_dim"])
    ctx = t.torch.from_numpy(data["ctx"]).to(t.device)
    restore = B.torch_ddim_restore(nets["vae"], B.torch_eps(nets["unet"], nets["controlnet"], ctx), args.steps)
    image, x_T = t.nchw(data["x"], t.torch.float32), t.nchw(data["x_T"], t.torch.float32)
    load_s = time.perf_counter() - t0
    t.reset_peak()
    with t.torch.inference_mode():
        result = timed(lambda: restore(image, x_T), t.sync, args.tiny, min_seconds=2.0, min_reps=2, max_reps=5)
    np.save(args.work / "torch_restore.npy", t.nhwc(result.pop("out")))
    rows.add(config=f"{args.size}x1:fp32", steps=args.steps, device=t.device, load_s=load_s, peak_gib=t.peak_gib(),
             **result)


# ---- jaxir side ----------------------------------------------------------------------------------------------------

def jax_program(fn, call_args) -> tuple:
    """``fn`` compiled for ``call_args`` at TF32 matmul precision: (compiled, compile s, peak GiB, XLA FLOPs)."""
    import jax

    t0 = time.perf_counter()
    with jax.default_matmul_precision("tensorfloat32"):
        compiled = jax.jit(fn).lower(*call_args).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    peak = None if mem is None else (mem.argument_size_in_bytes + mem.output_size_in_bytes
                                     + mem.temp_size_in_bytes - mem.alias_size_in_bytes) / GiB
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return compiled, compile_s, peak, (cost or {}).get("flops")


def step_jax(args, rows: Rows) -> None:
    """The ε step of each configuration in the given order (the parameters in each dtype made once)."""
    import jax
    import jax.numpy as jnp
    from supir_memory import with_activations

    kw = B.diffusers_kwargs(args.tiny)
    params = {"fp32": B.jax_params(args.cache, args.tiny, ("unet", "controlnet"))}
    outputs = B.jaxir_configs(args.tiny)[1].num_outputs
    for config in budgeted(args.configs, args.budget, rows):
        size, batch, dtype = split_config(config)
        store = "fp32" if dtype == "fp32" else "bf16"
        if store not in params:
            params[store] = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params["fp32"])
        act = jnp.bfloat16 if dtype == "bf16-cast" else jnp.float32
        data = B.inputs("unet", size, batch, kw["context_dim"])
        call_args = (params[store]["unet"], params[store]["controlnet"], jnp.asarray(data["x"], act),
                     jnp.asarray(data["hint"], act), jnp.asarray(data["t"]), jnp.asarray(data["ctx"], act),
                     jnp.ones((outputs,), act))
        fn = with_activations(B.jax_eps(args.tiny), "cast" if dtype == "bf16-cast" else "jaxir", jnp.bfloat16)
        compiled, compile_s, peak, xla_flops = jax_program(fn, call_args)
        result = timed(lambda: compiled(*call_args), jax.block_until_ready, args.tiny)
        err = rel_err(result.pop("out"), args.work / f"torch_step_{size}x{batch}_{store}.npy")
        rows.add(config=config, device=jax.devices()[0].device_kind, compile_s=compile_s, peak_gib=peak,
                 xla_flops=xla_flops, rel_err=err, **result)


def restore_jax(args, rows: Rows) -> None:
    """bench_ldm's restoration in one jit (fp32, TF32 precision): compile, first call, timed calls."""
    import jax
    import jax.numpy as jnp

    kw = B.diffusers_kwargs(args.tiny)
    t0 = time.perf_counter()
    params = B.jax_params(args.cache, args.tiny, ("unet", "controlnet", "vae"))
    data = {k: jnp.asarray(v) for k, v in B.inputs("restore", args.size, 1, kw["context_dim"]).items()}
    call_args = (params, data["x"], data["x_T"], data["ctx"], B.ddim_values(args.steps))
    load_s = time.perf_counter() - t0
    compiled, compile_s, peak, _ = jax_program(B.jax_ddim_restore(args.tiny, args.steps), call_args)
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*call_args))
    first_s = time.perf_counter() - t0
    result = timed(lambda: compiled(*call_args), jax.block_until_ready, args.tiny, min_seconds=2.0, min_reps=2,
                   max_reps=5)
    err = rel_err(result.pop("out"), args.work / "torch_restore.npy")
    rows.add(config=f"{args.size}x1:fp32", steps=args.steps, device=jax.devices()[0].device_kind, load_s=load_s,
             compile_s=compile_s, first_call_s=first_s, peak_gib=peak, rel_err=err, **result)


# ---- SUPIR, the sweep, the check -----------------------------------------------------------------------------------

def supir_memory(args, rows: Rows) -> None:
    """One guided SUPIR step at ``--size``² compiled from parameter shapes (bf16), its buffers read."""
    import jax
    import jax.numpy as jnp
    import supir_memory as M

    from jaxir.models import supir

    config = M.tiny_config() if args.tiny else supir.SUPIRConfig.supir_v0()
    params = M.as_dtype(supir.param_shapes(config), jnp.bfloat16)
    piece = M.step_piece("step", config, params, jnp.bfloat16, "jaxir", args.size)
    peak = piece.restoration_peak(M.nbytes(params))
    rows.add(config=f"SUPIR {'tiny' if args.tiny else 'v0'} step, {args.size}² bf16",
             device=jax.devices()[0].device_kind, detail=piece.detail,
             compile_s=piece.compile_s, params_gib=M.nbytes(params) / GiB, temp_gib=piece.temp / GiB,
             est_peak_gib=peak / GiB, fits_80gb=peak <= M.ACCELERATOR)


def supir_run(args, rows: Rows) -> None:
    """``supir_cpu_run.py --dtype bf16``: a real restoration, its peak device memory and time per step."""
    import jax
    import supir_cpu_run as S

    argv = ["--dtype", "bf16", "--steps", str(args.steps), "--size", str(args.size)] + (["--tiny"] * args.tiny)
    result = S.run(S.parse_args(argv))
    peaks = [dev for *_, dev in result["rows"] if dev is not None]
    peak = max(peaks) if peaks else None
    rows.add(config=f"SUPIR {'tiny' if args.tiny else 'v0'} restoration, {args.size}² bf16, {args.steps} steps",
             device=jax.devices()[0].device_kind,
             phases=[dict(name=n, wall_s=w, compile_s=c, peak_rss_gib=r, peak_device_gib=d)
                     for n, w, c, r, d in result["rows"]],
             compile_s=sum(row[2] for row in result["rows"]), per_step_s=result["per_step"], total_s=result["total"],
             peak_gib=peak, fits_80gb=None if peak is None else peak * GiB <= 80e9, finite=result["finite"],
             n_params=result["n_params"])


def sweep(args, rows: Rows) -> None:
    """``jaxir_cldm`` over start timesteps × seeds; the first call (compiling) is reported apart."""
    import jax
    import jax.numpy as jnp

    from jaxir.cost import Meter
    from jaxir.data import bundled_photos
    from jaxir.degradations import Degradation
    from jaxir.restorers import get

    photo = bundled_photos(["astronaut"])[0].image[:args.crop, :args.crop]
    degradation = Degradation(scale=2)
    lq = degradation(jnp.asarray(photo)[None], jax.random.key(0))
    batch = jnp.repeat(lq, args.seeds, axis=0)
    restorer = get("jaxir_cldm")
    calls = []
    for t_start in args.t_starts:
        with Meter() as m:
            out = jax.block_until_ready(restorer.configure(t_start=t_start).restore(
                batch, degradation, jax.random.key(0), np.arange(args.seeds)))
        calls.append(dict(t_start=t_start, wall_s=m.wall, compilations=m.cost.compilations,
                          compile_s=m.cost.compile_seconds, load_s=m.cost.load_seconds,
                          finite=bool(jnp.isfinite(out).all())))
        print(f"[sweep] {calls[-1]}", flush=True)
    rest = calls[1:]
    rest_wall = sum(c["wall_s"] for c in rest)
    rows.add(config=f"{len(args.t_starts)} t_start × {args.seeds} seeds, {photo.shape[0]}² SR×2",
             device=jax.devices()[0].device_kind, cells=len(calls) * args.seeds, calls=calls,
             wall_s=sum(c["wall_s"] for c in calls), compilations=sum(c["compilations"] for c in calls),
             compilations_after_first=sum(c["compilations"] for c in rest),
             cells_per_s=(len(calls) * args.seeds) / sum(c["wall_s"] for c in calls),
             cells_per_s_after_first=len(rest) * args.seeds / rest_wall if rest_wall else None,
             finite=all(c["finite"] for c in calls))


def matmul_tflops(torch, device: str, dtype, n: int) -> float:
    """Median TFLOP/s of an ``n³`` product of random matrices (3 warm-ups, 10 timed)."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for i in range(13):
        t0 = time.perf_counter()
        a @ b
        sync()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e12


def check(args, rows: Rows) -> None:
    """Versions, devices, ceilings; exits 3 when a GPU is required (not ``--tiny``) and either side lacks it."""
    import importlib.metadata as md
    import platform

    import jax

    t = Torch()
    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "torch", "diffusers", "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    n = 512 if t.device == "cpu" else 8192
    ceilings = {name: matmul_tflops(t.torch, t.device, t.dtype(name), n) for name in ("bf16", "fp32")}
    torch_name = t.torch.cuda.get_device_name() if t.device == "cuda" else platform.processor() or "cpu"
    memory = t.torch.cuda.get_device_properties(0).total_memory / GiB if t.device == "cuda" else None
    rows.add(python=platform.python_version(), versions=versions, jax_backend=jax.default_backend(),
             jax_devices=[str(d) for d in jax.devices()], device_kind=jax.devices()[0].device_kind,
             torch_device=t.device, torch_device_name=torch_name, device_memory_gib=memory,
             ceilings_tflops=ceilings, ceiling_n=n, xla_flags=os.environ.get("XLA_FLAGS", ""))
    if not args.tiny and (jax.default_backend() != "gpu" or t.device != "cuda"):
        print(f"no GPU: JAX backend {jax.default_backend()}, PyTorch device {t.device}", file=sys.stderr)
        sys.exit(3)


PHASES = {"check": check, "step-torch": step_torch, "step-jax": step_jax, "restore-torch": restore_torch,
          "restore-jax": restore_jax, "supir-memory": supir_memory, "supir-run": supir_run, "sweep": sweep}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("phase", choices=PHASES)
    p.add_argument("--rows", type=Path, required=True, help="JSON-lines file the results are appended to")
    p.add_argument("--work", type=Path, required=True, help="scratch folder (reference outputs)")
    p.add_argument("--cache", type=Path, help="bench_ldm's prepared weights")
    p.add_argument("--tiny", action="store_true", help="bench_ldm's and supir_memory's small configurations")
    p.add_argument("--budget", type=float, help="seconds this phase may take (configurations left are skipped)")
    p.add_argument("--configs", type=parse_configs, default=[], help="step: SIDExBATCH:DTYPE,... (latent side)")
    p.add_argument("--size", type=int, help="restore / supir: image side in pixels")
    p.add_argument("--steps", type=int, help="restore / supir-run: sampling steps")
    p.add_argument("--t-starts", type=lambda s: [int(v) for v in s.split(",")], help="sweep: start timesteps")
    p.add_argument("--seeds", type=int, help="sweep: seeds (sample ids) per start timestep")
    p.add_argument("--crop", type=int, help="sweep: crop side of the photo")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    PHASES[args.phase](args, Rows(args.rows, args.phase))


if __name__ == "__main__":
    main()
