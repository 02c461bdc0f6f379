"""jaxir against PyTorch on a GPU in one prepared run of about 8 minutes, from a bare machine with the repository.

    python3 benchmarks/device_check.py                        # on the GPU machine: results in $OUT
    python3 benchmarks/device_check.py --tiny --out DIR       # dry run on a CPU: tiny widths, no install (minutes)
    python3 benchmarks/device_check.py --fetch-wheels         # here, before: the wheels the GPU image lacks

Why: the GPU machine of this workplace is lent now and then, 15 minutes of device time in all, bare each time; this
script spends them measuring. It runs phases, each in its own process with its own time limit, and rewrites
``OUT/results_gpu.md`` (one markdown table) after every phase from ``OUT/rows.jsonl``, to which every measurement
is appended as soon as it exists: a run cut anywhere still returns what it measured. Worker output goes to
``OUT/device_check.log``; the table is printed last.

Phases, in this order, and their limits on the H200 (seconds; no phase starts after ``--budget``, 490, and none
runs past it). The limits are plans: no GPU has run this yet, and compile times on XLA:GPU are the unknown.

| phase | limit | what (details: ``device_bench.py``) |
|---|---|---|
| install | 15 | carried wheels into ``/tmp/jaxir_site``; anything still missing from the registry |
| check | 30 | versions, the GPU seen by JAX and PyTorch (else the run stops), bf16/TF32 matmul ceilings |
| prepare | 40 | SD 2.1-base UNet + IRControlNet + VAE random weights, once (``bench_ldm.py --side prepare``) |
| step-torch, step-jax | 40, 100 | ControlNet + UNet step at latent 64² and 128², batch 1 and 8, fp32/bf16 |
| restore-torch, restore-jax | 25, 60 | a 50-step DDIM restoration at 512², end to end; jaxir's compile apart |
| supir-run | 150 | ``supir_cpu_run.py --dtype bf16 --steps 2`` at 1024²: the real peak and time per step |
| sweep | 30 | ``jaxir_cldm`` over 6 start timesteps × 8 seeds: cells/s, compilations |
| supir-memory | 60 | ``supir_memory.py --dtype bf16 --pieces step`` at 1024² on XLA:GPU, against 80 GB |

The limits add up to 550 s: the phases that end early pay for the last one. The step configurations run in
priority order (``--step-configs``) and stop when the next would overrun the phase's limit; the table lists those
skipped. ``--phases`` runs a subset (e.g. a second call for what the first one skipped); into the same ``--out`` the
rows append.

Install plan (measured 2026-12-03): the machine's image (``/opt/torch/.venv``, Python 3.12) already holds JAX 0.11
with its CUDA 13 plugin, PyTorch 2.11 (CUDA 13), flax, optax, orbax, chex, scikit-image and transformers, and it
reaches no package registry. What it lacks for this run is three pure-Python wheels, 6.4 MB:
``diffusers==0.42.1``, ``dm-pix==0.4.5``, ``importlib-metadata==8.7.0`` (diffusers needs it; 8.x, since 10.x
needs ``lazy-importer``, absent there). ``--fetch-wheels`` downloads them here into ``benchmarks/.wheels``
(``benchmarks/.gitignore``; 4–5 s here) and the run carries them (``carry=["benchmarks/.wheels"]``); the install
phase puts them in ``/tmp/jaxir_site`` with ``pip --no-index --no-deps`` (4 s here) and the repository itself is
used from its checkout through ``PYTHONPATH`` (no ``pip install -e``). Only a module still missing after that is
asked of the registry (``pip --retries 0 --timeout 10``: on a machine without one it fails in seconds). Installing
JAX and PyTorch with CUDA from a registry would move several GB (the torch CUDA wheel and the NVIDIA libraries it
pulls): that is why nothing of the sort is planned.

Environment of the workers: ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (JAX allocates what it uses, so PyTorch and
the memory statistics see the truth), the rest as found (no XLA_FLAGS set on the GPU). The dry run adds
``--xla_backend_optimization_level=0`` to XLA_FLAGS: compiling is most of its time (the tiny step compiled in 23–32 s
with it against 46–52 s without, on a busy 2-core CPU) and its timings mean nothing; and ``OMP_NUM_THREADS=1``:
PyTorch's threads wait on each other for seconds on busy cores (see ``bench_supir.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WHEELS_DIR = HERE / ".wheels"
SITE = Path("/tmp/jaxir_site")
WHEELS = ("diffusers==0.42.1", "dm-pix==0.4.5", "importlib-metadata==8.7.0")
# module → what to ask the registry for when the image and the carried wheels lack it
REQUIRED = {"jax": "jax[cuda13]", "torch": "torch", "diffusers": "diffusers==0.42.1", "dm_pix": "dm-pix==0.4.5",
            "importlib_metadata": "importlib-metadata==8.7.0", "flax": "flax", "optax": "optax",
            "orbax.checkpoint": "orbax-checkpoint", "chex": "chex", "skimage": "scikit-image"}


@dataclasses.dataclass(frozen=True)
class Mode:
    """What one kind of run measures: the GPU run, or the tiny dry run on a CPU."""

    budgets: dict
    step_configs: str
    restore: tuple[int, int]       # image side, steps
    supir: tuple[int, int]         # image side, steps
    sweep: tuple[str, int, int | None]   # start timesteps, seeds, crop side (None: the whole 512² photo)
    total: int


# the order of the phases: the most wanted numbers first; the limits add up to more than the total, which the phases
# finishing early pay for (what the total cuts is the last phase, SUPIR's compile-only estimate)
GPU = Mode(budgets={"install": 15, "check": 30, "prepare": 40, "step-torch": 40, "step-jax": 100, "restore-torch": 25,
                    "restore-jax": 60, "supir-run": 150, "sweep": 30, "supir-memory": 60},
           step_configs="64x1:fp32,64x1:bf16,128x8:bf16,64x1:bf16-cast,128x1:bf16,64x8:bf16,128x8:fp32,128x1:fp32,"
                        "64x8:fp32,128x8:bf16-cast",
           restore=(512, 50), supir=(1024, 2), sweep=("100,250,400,550,700,850", 8, None), total=490)
# the dry run's limits are generous (about 2.5 × what each phase took on a 2-core CPU shared with other work): they
# are there to stop a hung phase, not to fit a lease
TINY = Mode(budgets={"install": 0, "check": 120, "prepare": 120, "step-torch": 180, "step-jax": 300,
                     "restore-torch": 120, "restore-jax": 240, "supir-run": 360, "sweep": 300, "supir-memory": 240},
            step_configs="8x1:fp32,8x2:bf16-cast", restore=(64, 2), supir=(128, 1), sweep=("250,500", 2, 64),
            total=1800)
PHASES = tuple(GPU.budgets)
TINY_XLA_FLAGS = "--xla_backend_optimization_level=0"


# ---- running the phases --------------------------------------------------------------------------------------------

class Run:
    """One run: the output folder, the rows file, the log, the clock."""

    def __init__(self, args):
        self.args, self.mode = args, (TINY if args.tiny else GPU)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows, self.log = self.out / "rows.jsonl", self.out / "device_check.log"
        self.work = Path(args.work)
        self.cache = self.work / ("weights_tiny" if args.tiny else "weights")
        self.deadline = time.monotonic() + (args.budget or self.mode.total)
        self.env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONUNBUFFERED="1",
                        PYTHONPATH=os.pathsep.join(filter(None, [str(SITE), str(ROOT), os.environ.get("PYTHONPATH")])))
        if args.tiny:   # a dry run's timings mean nothing: compile faster, and keep PyTorch off busy cores
            self.env.update(XLA_FLAGS=" ".join(filter(None, [os.environ.get("XLA_FLAGS"), TINY_XLA_FLAGS])),
                            OMP_NUM_THREADS="1")
        self.budgets = dict(self.mode.budgets, **dict(b.split("=") for b in args.budgets))

    def add(self, phase: str, **row) -> None:
        with open(self.rows, "a") as f:
            f.write(json.dumps(dict(phase=phase, **row)) + "\n")

    def limit(self, phase: str) -> float:
        return min(float(self.budgets[phase]), self.deadline - time.monotonic())

    def worker(self, phase: str, timeout: float) -> tuple[str, int | None]:
        """``device_bench.py phase`` with this run's settings, killed after ``timeout`` s."""
        m = self.mode
        cmd = [sys.executable, str(HERE / "device_bench.py"), phase, "--rows", str(self.rows), "--work",
               str(self.work), "--cache", str(self.cache), "--budget", f"{max(timeout - 10, 1):.0f}"]
        cmd += ["--tiny"] * self.args.tiny
        cmd += {"step-torch": ["--configs", self.args.step_configs or m.step_configs],
                "step-jax": ["--configs", self.args.step_configs or m.step_configs],
                "restore-torch": ["--size", str(m.restore[0]), "--steps", str(m.restore[1])],
                "restore-jax": ["--size", str(m.restore[0]), "--steps", str(m.restore[1])],
                "supir-memory": ["--size", str(m.supir[0])],
                "supir-run": ["--size", str(m.supir[0]), "--steps", str(m.supir[1])],
                "sweep": ["--t-starts", m.sweep[0], "--seeds", str(m.sweep[1])]
                + ([] if m.sweep[2] is None else ["--crop", str(m.sweep[2])])}.get(phase, [])
        return self.command(cmd, timeout)

    def command(self, cmd: list[str], timeout: float) -> tuple[str, int | None]:
        """Runs ``cmd`` with its output appended to the log; ("ok" | "failed" | "time limit", exit code)."""
        with open(self.log, "a") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=max(timeout, 1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
                return "time limit", None
        return ("ok" if code == 0 else "failed"), code

    def phase(self, name: str) -> bool:
        """Runs one phase within its limit and records its status; False when the run cannot go on."""
        timeout = self.limit(name)
        if timeout < 5:
            self.add("status", name=name, status="not run: total budget spent", seconds=0, limit=0)
            return True
        t0 = time.monotonic()
        if name == "install":
            status, code = install(self, timeout)
        elif name == "prepare" and (self.cache / "manifest.json").exists():
            status, code = "ok (weights already prepared)", 0
        elif name == "prepare":
            status, code = self.command([sys.executable, str(HERE / "bench_ldm.py"), "--side", "prepare",
                                         "--cache-dir", str(self.cache)] + (["--tiny"] * self.args.tiny), timeout)
        else:
            status, code = self.worker(name, timeout)
        seconds = time.monotonic() - t0
        self.add("status", name=name, status=status, code=code, seconds=seconds, limit=timeout)
        print(f"{name}: {status} in {seconds:.0f} s (limit {timeout:.0f} s)", flush=True)
        return not (name == "check" and status != "ok")


def importable(run: Run) -> list[str]:
    """The modules of REQUIRED that the workers' Python cannot find."""
    probe = ("import importlib.util, json, sys; m = json.loads(sys.argv[1]); "
             "print(json.dumps([n for n in m if importlib.util.find_spec(n) is None]))")
    out = subprocess.run([sys.executable, "-c", probe, json.dumps(list(REQUIRED))], env=run.env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def install(run: Run, timeout: float) -> tuple[str, int | None]:
    """The carried wheels into SITE, then the registry for whatever is still missing; one row of what it did."""
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--no-cache-dir", "--upgrade", "--target",
           str(SITE)]
    wheels = sorted(str(w) for w in WHEELS_DIR.glob("*.whl"))
    row, t0 = dict(wheels=[Path(w).name for w in wheels]), time.monotonic()
    status, code = "ok", 0
    if wheels:
        status, code = run.command(pip + ["--no-index", "--no-deps"] + wheels, timeout)
    row["wheels_s"] = time.monotonic() - t0
    missing = importable(run)
    row["missing_after_wheels"] = missing
    if missing:
        t1 = time.monotonic()
        status, code = run.command(pip + ["--retries", "0", "--timeout", "10"] + [REQUIRED[m] for m in missing],
                                   timeout - (t1 - t0))
        row.update(registry=[REQUIRED[m] for m in missing], registry_status=status, registry_s=time.monotonic() - t1,
                   still_missing=importable(run))
    run.add("install", **row)
    return status, code


def fetch_wheels() -> None:
    """Downloads WHEELS (pure Python) into WHEELS_DIR, here, for the GPU run to carry."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "-d", str(WHEELS_DIR), *WHEELS], check=True)
    size = sum(w.stat().st_size for w in WHEELS_DIR.glob("*.whl"))
    print(f"{len(list(WHEELS_DIR.glob('*.whl')))} wheels, {size / 1e6:.1f} MB in {WHEELS_DIR} "
          f"({time.monotonic() - t0:.0f} s); carry them with carry=[\"benchmarks/.wheels\"]")


# ---- the report ----------------------------------------------------------------------------------------------------

def read_rows(path: Path) -> list[dict]:
    """The rows of a rows file; a line cut by a kill is left out."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def num(value, fmt: str = ".3g", scale: float = 1.0) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value * scale:{fmt}}"


def amount(value, unit: str, fmt: str = ".3g", scale: float = 1.0) -> str:
    """:func:`num` with a unit; a bare dash when there is no value."""
    text = num(value, fmt, scale)
    return text if text == "–" else f"{text} {unit}"


def last(rows: list[dict], phase: str, config: str | None = None) -> dict | None:
    """The latest row of ``phase`` (and ``config``), skipped ones included."""
    found = [r for r in rows if r["phase"] == phase and (config is None or r.get("config") == config)]
    return found[-1] if found else None


def tflops(flops, seconds, ceiling) -> str:
    if flops is None or seconds is None:
        return "–"
    rate = flops / seconds / 1e12
    return f"{rate:.3g}" + (f" ({100 * rate / ceiling:.0f} %)" if ceiling else "")


def step_lines(rows: list[dict], configs: list[str], ceilings: dict) -> list[str]:
    """One table row per jaxir step configuration, joined with PyTorch's at the same shape and dtype."""
    lines = []
    for config in configs:
        j = last(rows, "step-jax", config)
        shape, _, dtype = config.partition(":")
        t = last(rows, "step-torch", f"{shape}:{'fp32' if dtype == 'fp32' else 'bf16'}")
        j_s, t_s = (r.get("median_s") if r else None for r in (j, t))
        flops = (t or {}).get("flops") or (j or {}).get("xla_flops")
        ceiling = ceilings.get("fp32" if dtype == "fp32" else "bf16")
        notes = [f"{side} {r['skipped']}" for side, r in (("jaxir", j), ("PyTorch", t)) if r and "skipped" in r]
        if j is None or t is None:
            notes.append("not reached: " + ", ".join(n for n, r in (("jaxir", j), ("PyTorch", t)) if r is None))
        if j_s is not None:
            notes.append(f"max rel. err {num(j.get('rel_err'), '.1e')}; timed calls {j['reps']} / "
                         f"{t['reps'] if t_s else 0}")
        lines.append(row_line(
            "step", f"latent {shape.replace('x', '², batch ')}, {dtype}", amount(j_s, "ms", ".4g", 1e3),
            amount(t_s, "ms", ".4g", 1e3), ratio(t_s, j_s), num((j or {}).get("compile_s"), ".1f"),
            f"{num((j or {}).get('peak_gib'))} / {num((t or {}).get('peak_gib'))}",
            f"{tflops(flops, j_s, ceiling)} / {tflops(flops, t_s, ceiling)}", "; ".join(notes)))
    return lines


def ratio(torch_s, jax_s) -> str:
    return "–" if torch_s is None or jax_s is None else f"{torch_s / jax_s:.2f}"


def row_line(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def restore_line(rows: list[dict]) -> str | None:
    j, t = last(rows, "restore-jax"), last(rows, "restore-torch")
    if j is None and t is None:
        return None
    j_s, t_s = (r.get("median_s") if r else None for r in (j, t))
    done = j or t
    jax_row = j or {}
    notes = (f"{done['steps']} DDIM steps; jaxir first call {num(jax_row.get('first_call_s'), '.2f')} s; "
             f"max rel. err {num(jax_row.get('rel_err'), '.1e')}")
    return row_line("restore", f"{done['config'].split('x')[0]}² image, fp32", amount(j_s, "s"),
                    amount(t_s, "s"), ratio(t_s, j_s), num(jax_row.get("compile_s"), ".1f"),
                    f"{num(jax_row.get('peak_gib'))} / {num((t or {}).get('peak_gib'))}", "–", notes)


FITS = {True: "yes", False: "NO", None: "–"}


def jaxir_line(phase: str, config: str, value: str, compile_s, peak: str, notes: str) -> str:
    """A table row of a measurement that has no PyTorch counterpart."""
    return row_line(phase, config, value, "–", "–", num(compile_s, ".1f"), f"{peak} / –", "–", notes)


def supir_lines(rows: list[dict]) -> list[str]:
    lines = []
    m = last(rows, "supir-memory")
    if m:
        lines.append(jaxir_line("supir-memory", m["config"], f"est. peak {num(m['est_peak_gib'])} GiB",
                                m["compile_s"], f"{num(m['est_peak_gib'])} (estimate)",
                                f"fits 80 GB: {FITS[m['fits_80gb']]}; params {num(m['params_gib'])} GiB, XLA temp "
                                f"{num(m['temp_gib'])} GiB; {m['detail']}"))
    r = last(rows, "supir-run")
    if r:
        lines.append(jaxir_line("supir-run", r["config"], f"{num(r['per_step_s'])} s/step", r["compile_s"],
                                num(r["peak_gib"]),
                                f"fits 80 GB: {FITS[r['fits_80gb']]}; 50 steps ≈ "
                                f"{num(50 * r['per_step_s'], '.0f')} s + setup; total {num(r['total_s'], '.0f')} s; "
                                f"output finite: {r['finite']}"))
    return lines


def sweep_line(rows: list[dict]) -> str | None:
    s = last(rows, "sweep")
    if s is None:
        return None
    return jaxir_line("sweep", f"jaxir_cldm, {s['config']}", f"{num(s['cells_per_s_after_first'])} cells/s",
                      s["calls"][0]["compile_s"], "–",
                      f"{s['cells']} cells in {num(s['wall_s'], '.1f')} s ({num(s['cells_per_s'])} cells/s with the "
                      f"first call); compilations {s['compilations']}, after the first call "
                      f"{s['compilations_after_first']}; output finite: {s['finite']}")


HEADER = ("| phase | configuration | jaxir | PyTorch | PyTorch ÷ jaxir time | jaxir compile s | peak device memory "
          "GiB jaxir / PyTorch | TFLOP/s jaxir / PyTorch (% of the matmul ceiling) | notes |")


def render(rows: list[dict], configs: list[str], command: str) -> str:
    """The markdown report of a rows file."""
    check = last(rows, "check") or {}
    ceilings = check.get("ceilings_tflops", {})
    versions = ", ".join(f"{k} {v}" for k, v in check.get("versions", {}).items())
    install_row = last(rows, "install")
    statuses = [r for r in rows if r["phase"] == "status"]
    table = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    table += step_lines(rows, configs, ceilings)
    table += list(filter(None, [restore_line(rows), *supir_lines(rows), sweep_line(rows)]))
    lines = [
        "# device_check: jaxir against PyTorch on one device",
        "",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  ",
        f"Command: `{command}`  ",
        f"Device: {check.get('torch_device_name', '–')} ({num(check.get('device_memory_gib'), '.0f')} GiB); JAX "
        f"backend {check.get('jax_backend', '–')} ({check.get('device_kind', '–')}); "
        f"Python {check.get('python', '–')}; "
        f"{versions}  ",
        f"Matmul ceilings (PyTorch, {check.get('ceiling_n', '–')}³ random): bf16 {num(ceilings.get('bf16'))} TFLOP/s, "
        f"fp32 with TF32 {num(ceilings.get('fp32'))} TFLOP/s  ",
        "Install: " + ("–" if install_row is None else json.dumps({k: v for k, v in install_row.items()
                                                                   if k != "phase"}))
        + "  ",
        "Phases: " + "; ".join(f"{s['name']} {s['status']} {s['seconds']:.0f}/{s['limit']:.0f} s" for s in statuses),
        "",
        *table,
        "",
        "Times: median per call after a warm-up call (restore: a whole restoration). PyTorch ÷ jaxir > 1: jaxir "
        "faster. Peak memory: PyTorch `max_memory_allocated`, jaxir XLA's buffer assignment (arguments + outputs + "
        "temp − aliases); both include the weights. FLOPs: PyTorch's flop counter of the same step. fp32: TF32 "
        "matrix products on both sides; bf16: PyTorch modules in bf16, jaxir bf16 weights with float32 activations "
        "(jaxir as it is); bf16-cast: jaxir with every module's output cast to bf16. Details: `rows.jsonl`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "runs" / "device_check"),
                   help="output folder (default: $OUT when set, else runs/device_check)")
    p.add_argument("--tiny", "--dry-run", action="store_true", help="the CPU dry run: tiny widths, no install")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--budget", type=float, help="seconds for the whole run (GPU 490, tiny 1800)")
    p.add_argument("--budgets", nargs="*", default=[], metavar="PHASE=S", help="per-phase limits replacing the plan's")
    p.add_argument("--step-configs", help="SIDExBATCH:fp32|bf16|bf16-cast,... in priority order (latent side)")
    p.add_argument("--work", default="/tmp/jaxir_device_check", help="scratch folder (weights, reference outputs)")
    p.add_argument("--fetch-wheels", action="store_true", help="download the wheels to carry, then stop")
    args = p.parse_args(argv)
    if args.fetch_wheels:
        fetch_wheels()
        return 0
    phases = [name for name in args.phases.split(",") if name]
    unknown = set(phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phases {sorted(unknown)}")
    if args.tiny and "install" in phases:
        phases.remove("install")
    run = Run(args)
    command = "python3 benchmarks/device_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    configs = (args.step_configs or run.mode.step_configs).split(",")
    report = run.out / "results_gpu.md"
    for name in phases:
        go_on = run.phase(name)
        report.write_text(render(read_rows(run.rows), configs, command))
        if not go_on:
            print("the device check failed: no GPU for JAX or PyTorch; see device_check.log", flush=True)
            break
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
