"""One SUPIR denoising step, jaxir (JAX/Flax) against SUPIR's own PyTorch modules on this CPU, in one process.

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python benchmarks/bench_supir.py --supir-repo /tmp/supir_src \\
        --repeats 3 --out benchmarks/results_supir.md
    # smoke test (half a minute): --channels 64 --latent 8 --repeats 1

A checkout of Fanghua-Yu/SUPIR (commit bda91af; e.g. ``git clone https://github.com/Fanghua-Yu/SUPIR`` or
``git archive HEAD SUPIR sgm | tar -x -C DIR``) is imported at run time from ``--supir-repo``; nothing of it is
copied here.

What is compared: sgm's ``ControlWrapper`` holding SUPIR's ``GLVControl`` (``control_model``) and ``LightGLVUNet``
(``diffusion_model``, mode XL-base, ZeroSFT, project_channel_scale 2), called as ``DiscreteDenoiserWithControl``
calls it for one sampler step: ``network(x, t, {crossattn, vector, control}, control_scale)`` on a batch of 2 =
[uncond; cond] (classifier-free guidance: the same noisy latent and low-quality latent ``control`` twice, two
different text conditions), timestep 500, control scale 1. jaxir: :class:`jaxir.models.supir.SUPIRNetwork` (the
same function) in one ``jax.jit``. Both from one SUPIR option dict (``options/SUPIR_v0.yaml``'s network and
control configs): SDXL widths (model_channels 320, channel_mult [1, 2, 4], 2 res blocks, attention at [4, 2],
64-channel heads, context 2048, adm 2816) with the transformer depth per level given by ``--depth`` (SDXL/SUPIR:
1,2,10; the middle block uses the last entry), latent ``--latent``² (32: a 256² image), float32. Default size:
980,381,124 parameters (3.9 GB per float32 copy; torch's, jaxir's, and transiently the converted NumPy one), at
depth 1,2,10: 3,865,640,004.

Weights: the torch modules are built on the meta device, then every state-dict tensor is filled in place from
one seeded ``torch.Generator`` (the fixtures' recipe: matrices/kernels N(0, 1/fan_in), 1-D weights 1 + 0.1·N,
biases 0.1·N; SUPIR's zero-initialised layers are random too, so the control path matters), and converted with
the repository's converter (:func:`checkpoints_conversion.supir_keys.convert_network`, the ``ControlWrapper``
state-dict names).

``--channels`` other than 320 (smoke runs): LightGLVUNet's XL-base mode hard-codes its connector lists for 320,
so its ``project_modules`` are rebuilt from SUPIR's own ``ZeroSFT``/``ZeroCrossAttn`` classes with the lists
derived from ``--channels`` by the rule of ``shared/fixtures/README.md`` (supir; equal to the hard-coded lists at
320, where nothing is rebuilt).

Imports: sgm's and its subpackages' ``__init__`` files import the whole training/conditioning stack
(pytorch_lightning, open_clip, kornia, ...); the packages ``sgm``, ``sgm.modules`` and
``sgm.modules.diffusionmodules`` are therefore registered as empty packages pointing at the checkout, so only the
real modules this network needs are executed (``sgm.util``, ``sgm.modules.attention``,
``sgm.modules.diffusionmodules.{util,openaimodel,wrappers}``, ``SUPIR.modules.SUPIR_v0``). One stub, only if the
package is missing: ``omegaconf`` (``GLVControl``/``UNetModel.__init__`` import ``omegaconf.listconfig.ListConfig``
for ``isinstance`` checks only; the stub's ``ListConfig`` is an empty class). xformers is optional (without it
sgm and SUPIR use ``F.scaled_dot_product_attention``).

Timing: the jaxir program is compiled first (``lower().compile()``, reported separately); each side is called once
(warm-up; these outputs are compared: max |jaxir − torch| / max |torch|), then ``--repeats`` rounds call each side
once, alternating which goes first. Min and median wall time per call; ratio PyTorch / jaxir of the minima (> 1:
jaxir faster). PyTorch: ``torch.inference_mode()``, its default thread count (``--torch-threads`` to change it:
on a machine whose cores are busy with other work, torch's OpenMP threads can wait on each other for seconds per
call, e.g. 6.5 s with 2 threads against 0.3 s with 1 for the smoke setting on 2 busy cores); JAX at its default matmul
precision (on a CPU that is full float32; on an accelerator the compared outputs come from a separate
``"highest"``-precision compilation, the timed one stays at the default). Measure on an idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

from checkpoints_conversion.supir_keys import convert_network
from jaxir.models import supir

SEED = 0
TIMESTEP = 500.0
CONTROL_SCALE = 1.0
TEXT_TOKENS = 77


# ---- SUPIR's code, imported from the user's checkout ---------------------------------------------------------------

def import_supir(repo: Path):
    """``(SUPIR_v0 module, ControlWrapper)`` from a SUPIR checkout (see the module docstring for the two
    workarounds: sgm's package ``__init__`` files bypassed, ``omegaconf`` stubbed if missing)."""
    repo = Path(repo).resolve()
    if not (repo / "SUPIR" / "modules" / "SUPIR_v0.py").is_file() or not (repo / "sgm").is_dir():
        raise SystemExit(f"--supir-repo {repo}: not a SUPIR checkout (needs SUPIR/modules/SUPIR_v0.py and sgm/)")
    sys.path.insert(0, str(repo))
    for name in ("sgm", "sgm.modules", "sgm.modules.diffusionmodules"):
        package = types.ModuleType(name)
        package.__path__ = [str(repo / name.replace(".", "/"))]
        sys.modules[name] = package
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        stub, listconfig = types.ModuleType("omegaconf"), types.ModuleType("omegaconf.listconfig")
        listconfig.ListConfig = stub.ListConfig = type("ListConfig", (), {})
        stub.listconfig = listconfig
        sys.modules.update({"omegaconf": stub, "omegaconf.listconfig": listconfig})
        print("stub: omegaconf (ListConfig only; not installed)")
    with contextlib.redirect_stdout(io.StringIO()):   # "no module 'xformers'. Processing without..."
        from SUPIR.modules import SUPIR_v0
        from sgm.modules.diffusionmodules.wrappers import ControlWrapper
    return SUPIR_v0, ControlWrapper


def options(channels: int, depth: tuple[int, ...]) -> dict:
    """``model.params`` of a SUPIR option file (the network and control configs of ``options/SUPIR_v0.yaml``)
    at ``channels`` and transformer ``depth``."""
    common = dict(adm_in_channels=2816, num_classes="sequential", use_checkpoint=False, in_channels=4,
                  out_channels=4, model_channels=channels, attention_resolutions=[4, 2], num_res_blocks=2,
                  channel_mult=[1, 2, 4], num_head_channels=64, use_spatial_transformer=True,
                  use_linear_in_transformer=True, transformer_depth=list(depth), context_dim=2048,
                  spatial_transformer_attn_type="softmax-xformers", legacy=False)
    return {"control_stage_config": {"params": {**common, "input_upscale": 1}},
            "network_config": {"params": {"mode": "XL-base", "project_type": "ZeroSFT", "project_channel_scale": 2,
                                          **common}}}


def _project_modules(v0, mc: int, scale: float = 2):
    """LightGLVUNet(mode="XL-base")'s ``project_modules`` with the lists derived from model_channels ``mc``
    (shared/fixtures/README.md, supir), built from SUPIR's classes."""
    cond_output = [mc] * 4 + [2 * mc] * 3 + [4 * mc] * 3
    project = [int(c * scale) for c in [mc // 2] * 4 + [mc] * 3 + [2 * mc] * 3]
    concat = [mc] * 2 + [2 * mc] * 3 + [4 * mc] * 4 + [0]
    modules = torch.nn.ModuleList(v0.ZeroSFT(project[i], cond_output[i], concat_channels=concat[i])
                                  for i in range(len(cond_output)))
    for i in (6, 3):
        modules.insert(i, v0.ZeroCrossAttn(cond_output[i], concat[i]))
    return modules


def seeded_fill_(module: torch.nn.Module, seed: int) -> None:
    """Every state-dict tensor, in order, from one generator: ndim > 1 N(0, 1/fan_in), 1-D ``*weight``
    1 + 0.1·N, others 0.1·N."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in module.state_dict(keep_vars=True).items():
            t.normal_(generator=gen)
            if t.ndim > 1:
                t.mul_(float(np.prod(t.shape[1:])) ** -0.5)
            elif key.endswith("weight"):
                t.mul_(0.1).add_(1.0)
            else:
                t.mul_(0.1)


def build_torch(v0, ControlWrapper, opts: dict, seed: int):
    net_params = dict(opts["network_config"]["params"])
    mc = net_params["model_channels"]
    with contextlib.redirect_stdout(io.StringIO()), torch.device("meta"):
        unet = v0.LightGLVUNet(**net_params)
        if mc != 320:
            unet.project_modules = _project_modules(v0, mc, net_params["project_channel_scale"])
        control = v0.GLVControl(**opts["control_stage_config"]["params"])
        wrapper = ControlWrapper(unet, compile_model=False)
        wrapper.load_control_model(control)
    wrapper = wrapper.to_empty(device="cpu").eval()
    if any(True for _ in wrapper.buffers()):
        raise SystemExit("unexpected buffers in the SUPIR network (not filled by the seeded state dict)")
    seeded_fill_(wrapper, seed)
    return wrapper


def build_jax(state: dict, config: supir.SUPIRDiffusionConfig):
    """Converted with the repository's converter, then moved to the device leaf by leaf (at most one leaf's
    NumPy copy alive besides the torch weights)."""
    params = convert_network(state, config)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    treedef = jax.tree.structure(params)
    del params
    leaves = []
    for i in range(len(flat)):
        leaves.append(jax.device_put(flat[i][1]))
        flat[i] = None
    return jax.tree.unflatten(treedef, leaves)


# ---- measurement ---------------------------------------------------------------------------------------------------

def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def inputs(latent: int, seed: int) -> dict:
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((1, latent, latent, 4)).astype(np.float32)
    lq = rng.standard_normal((1, latent, latent, 4)).astype(np.float32)
    return {"x": np.concatenate([x, x]), "t": np.full(2, TIMESTEP, np.float32),
            "crossattn": rng.standard_normal((2, TEXT_TOKENS, 2048)).astype(np.float32),
            "vector": rng.standard_normal((2, 2816)).astype(np.float32), "control": np.concatenate([lq, lq])}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supir-repo", required=True, type=Path, help="a checkout of Fanghua-Yu/SUPIR")
    parser.add_argument("--depth", default="1,1,1", help="transformer depth per level (SUPIR/SDXL: 1,2,10)")
    parser.add_argument("--latent", type=int, default=32, help="latent side (image side / 8)")
    parser.add_argument("--channels", type=int, default=320, help="model_channels (320 = SDXL; smaller for smoke "
                                                                   "runs, a multiple of 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args()
    depth = tuple(int(d) for d in args.depth.split(","))
    if len(depth) != 3 or args.channels % 64 or args.latent % 4:
        parser.error("--depth needs 3 entries, --channels a multiple of 64, --latent a multiple of 4")
    warnings.filterwarnings("ignore", category=FutureWarning)     # torch.backends.cuda.sdp_kernel
    warnings.filterwarnings("ignore", message=".*CUDA is not available.*")   # ControlWrapper's cuda autocast
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    start = time.perf_counter()

    v0, ControlWrapper = import_supir(args.supir_repo)
    opts = options(args.channels, depth)
    config = supir.SUPIRDiffusionConfig.from_options(opts)
    t0 = time.perf_counter()
    wrapper = build_torch(v0, ControlWrapper, opts, SEED)
    n_params = sum(p.numel() for p in wrapper.parameters())
    n_unet = sum(p.numel() for p in wrapper.diffusion_model.parameters())
    params = build_jax({k: v.detach().numpy() for k, v in wrapper.state_dict().items()}, config)
    assert sum(x.size for x in jax.tree.leaves(params)) == n_params
    print(f"weights: {n_params:,} parameters (LightGLVUNet {n_unet:,}, GLVControl {n_params - n_unet:,}), "
          f"built and converted in {time.perf_counter() - t0:.1f} s", flush=True)

    a = inputs(args.latent, SEED)
    nchw = lambda v: torch.from_numpy(v).permute(0, 3, 1, 2).contiguous()   # noqa: E731
    t_in = (nchw(a["x"]), torch.from_numpy(a["t"]),
            {"crossattn": torch.from_numpy(a["crossattn"]), "vector": torch.from_numpy(a["vector"]),
             "control": nchw(a["control"])})
    j_in = (jnp.asarray(a["x"]), jnp.asarray(a["t"]),
            {k: jnp.asarray(a[k]) for k in ("crossattn", "vector", "control")}, jnp.float32(CONTROL_SCALE))
    net = supir.SUPIRNetwork(config)

    def step(params, x, t, cond, control_scale):
        return net.apply({"params": params}, x, t, cond, control_scale)

    t0 = time.perf_counter()
    compiled = jax.jit(step).lower(params, *j_in).compile()
    compile_s = time.perf_counter() - t0
    print(f"jaxir compile {compile_s:.1f} s", flush=True)

    def run_torch():
        with torch.inference_mode():
            return wrapper(*t_in, control_scale=CONTROL_SCALE)

    def run_jax():
        return jax.block_until_ready(compiled(params, *j_in))

    ref = run_torch().permute(0, 2, 3, 1).numpy()
    ours = np.asarray(run_jax())
    if jax.default_backend() != "cpu":
        with jax.default_matmul_precision("highest"):
            ours = np.asarray(jax.jit(step)(params, *j_in))
    max_ref = float(np.abs(ref).max())
    rel = float(np.abs(ours - ref).max()) / max_ref
    print(f"warm-up done; max |jaxir − torch| / max |torch| = {rel:.1e} (max |torch| {max_ref:.3g})", flush=True)

    t_torch, t_jax = [], []
    for r in range(args.repeats):
        for side in (("torch", "jax") if r % 2 == 0 else ("jax", "torch")):
            (t_torch if side == "torch" else t_jax).append(_time(run_torch if side == "torch" else run_jax))
        print(f"round {r + 1}: torch {t_torch[-1]:.3f} s, jaxir {t_jax[-1]:.3f} s", flush=True)

    load = "/".join(f"{v:.2f}" for v in os.getloadavg())
    side = args.latent * 8
    header = ("| what | latent | depth | PyTorch s (min / median) | jaxir s (min / median) | PyTorch/jaxir (min) | "
              "jaxir compile s | max abs diff / max abs ref | parameters | load (1/5/15 min) |")
    row = (f"| GLVControl + LightGLVUNet step, batch 2 (CFG), mc {args.channels} | {args.latent}² ({side}² image) | "
           f"{','.join(map(str, depth))} | {min(t_torch):.3f} / {statistics.median(t_torch):.3f} | "
           f"{min(t_jax):.3f} / {statistics.median(t_jax):.3f} | {min(t_torch) / min(t_jax):.2f} | {compile_s:.1f} | "
           f"{rel:.1e} | {n_params:,} | {load} |")
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__} "
               f"({torch.get_num_threads()} threads), jax {jax.__version__} ({jax.default_backend()}), float32, "
               f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; {args.repeats} rounds")
    table = "\n".join([header, "|" + "---|" * header.count(" | ") + "---|", row])
    print(f"\n{machine}\n\n{table}")
    if args.out:
        command = "python benchmarks/bench_supir.py " + " ".join(sys.argv[1:])
        args.out.write_text(f"# bench_supir: one SUPIR denoising step, jaxir vs SUPIR's PyTorch code\n\n"
                            f"Command: `{command}`  \nMachine: {machine}; total "
                            f"{(time.perf_counter() - start) / 60:.1f} min\n\n{table}\n")
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
