"""Throughput of jaxir's RRDBNet ×4 (Real-ESRGAN x4plus), SwinIR-M ×4 (real-SR) and LPIPS (AlexNet, VGG) against
the PyTorch originals on the same CPU, in one process.

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python benchmarks/bench_restorers.py --repeats 5

References: spandrel's ESRGAN and SwinIR architectures (the original networks) with random weights, and
``lpips.LPIPS(pnet_rand=True)`` (its own linear heads, a random backbone); jaxir converts the same state dicts with
its converters, so both sides compute the same function (the max abs difference of the outputs is printed).
Inputs: ``--lq`` × ``--lq`` RGB noise for the SR models (batch 1), ``--lpips-batch`` pairs of ``--lpips-size``²
images for LPIPS. Each repeat times each side once, alternating which goes first; the table shows the minimum
over repeats, the jaxir compile time (first call − best call) separately, and the ratio PyTorch / jaxir (> 1:
jaxir faster). torch uses all cores (``torch.get_num_threads()``), as XLA does. Measure on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from checkpoints_conversion.lpips_keys import convert_lpips, default_linear_weights
from checkpoints_conversion.rrdbnet_keys import convert_rrdbnet
from checkpoints_conversion.sources import read_state_dict
from checkpoints_conversion.swinir_keys import convert_swinir
from jaxir.metrics import lpips as jaxir_lpips
from jaxir.models.lpips_backbones import LPIPSConfig
from jaxir.models.rrdbnet import RRDBNet, RRDBNetConfig
from jaxir.models.swinir import SwinIR, SwinIRConfig


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def rrdbnet_pair():
    """Real-ESRGAN x4plus sizes (64 features, 23 RRDBs) with He-scaled random weights in BasicSR's layout."""
    from spandrel.architectures.ESRGAN import ESRGANArch

    config = RRDBNetConfig.realesrgan_x4plus()
    rng = np.random.default_rng(0)
    state = {}

    def conv(name, cin, cout):
        state[f"{name}.weight"] = rng.normal(0, (9 * cin) ** -0.5, (cout, cin, 3, 3)).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(0, 0.01, cout).astype(np.float32)

    nf, gc = config.num_feat, config.num_grow_ch
    conv("conv_first", 3, nf)
    for i in range(config.num_block):
        for k in (1, 2, 3):
            for j in range(1, 6):
                conv(f"body.{i}.rdb{k}.conv{j}", nf + (j - 1) * gc, gc if j < 5 else nf)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, nf, nf)
    conv("conv_last", nf, 3)
    model = ESRGANArch().load({k: torch.from_numpy(v) for k, v in state.items()}).model.eval()
    params = convert_rrdbnet(state, config)
    return model, jax.jit(lambda x: RRDBNet(config).apply({"params": params}, x))


def swinir_pair():
    from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR

    config = SwinIRConfig.realsr_m_x4()
    torch.manual_seed(0)
    model = TorchSwinIR(upscale=4, in_chans=3, img_size=64, window_size=8, img_range=1.0, depths=[6] * 6,
                        embed_dim=180, num_heads=[6] * 6, mlp_ratio=2, upsampler="nearest+conv",
                        resi_connection="1conv").eval()
    params = convert_swinir(_state(model), config)
    return model, jax.jit(lambda x: SwinIR(config).apply({"params": params}, x))


def lpips_pair(net: str):
    import lpips

    torch.manual_seed(0)
    ref = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
    backbone = {"features." + k.split(".", 1)[1]: v.numpy() for k, v in ref.net.state_dict().items()}
    config = LPIPSConfig(net)
    params = convert_lpips(backbone, read_state_dict(default_linear_weights(net)), config)
    from jaxir.models.lpips_backbones import LPIPSNetwork

    weights = (LPIPSNetwork(config), params)
    return (lambda x, y: ref(x, y, normalize=True)), (lambda x, y: jaxir_lpips.lpips(x, y, net, weights=weights))


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(name, torch_fn, jax_fn, torch_args, jax_args, repeats):
    first = _time(lambda: jax.block_until_ready(jax_fn(*jax_args)))
    with torch.no_grad():
        ref = torch_fn(*torch_args)
    ours = np.asarray(jax_fn(*jax_args))
    ref = ref.numpy() if ref.ndim != 4 else ref.permute(0, 2, 3, 1).numpy()
    diff = float(np.abs(ours.reshape(ref.shape) - ref).max())
    t_torch, t_jax = [], []
    for r in range(repeats):
        order = ("torch", "jax") if r % 2 == 0 else ("jax", "torch")
        for side in order:
            if side == "torch":
                with torch.no_grad():
                    t_torch.append(_time(lambda: torch_fn(*torch_args)))
            else:
                t_jax.append(_time(lambda: jax.block_until_ready(jax_fn(*jax_args))))
    best_t, best_j = min(t_torch), min(t_jax)
    print(f"| {name} | {best_t * 1e3:.0f} | {best_j * 1e3:.0f} | {best_t / best_j:.2f}× | {first - best_j:.1f} s | "
          f"{diff:.1e} | {os.getloadavg()[0]:.2f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lq", type=int, default=64, help="LQ side for the ×4 SR models")
    parser.add_argument("--lpips-size", type=int, default=256)
    parser.add_argument("--lpips-batch", type=int, default=4)
    parser.add_argument("--only", help="comma-separated subset: rrdbnet,swinir,lpips_alex,lpips_vgg")
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else {"rrdbnet", "swinir", "lpips_alex", "lpips_vgg"}
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print("| benchmark | PyTorch ms | jaxir ms | PyTorch/jaxir | jaxir compile | max abs diff | load |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    lq = rng.random((1, args.lq, args.lq, 3)).astype(np.float32)
    lq_t = torch.from_numpy(lq).permute(0, 3, 1, 2).contiguous()
    for name, make in (("rrdbnet", rrdbnet_pair), ("swinir", swinir_pair)):
        if name in wanted:
            torch_fn, jax_fn = make()
            compare(f"{name} ×4, LQ {args.lq}²", torch_fn, jax_fn, (lq_t,), (jnp.asarray(lq),), args.repeats)
    n, s = args.lpips_batch, args.lpips_size
    x, y = (rng.random((n, s, s, 3)).astype(np.float32) for _ in range(2))
    xt, yt = (torch.from_numpy(a).permute(0, 3, 1, 2).contiguous() for a in (x, y))
    for net in ("alex", "vgg"):
        if f"lpips_{net}" in wanted:
            torch_fn, jax_fn = lpips_pair(net)
            compare(f"LPIPS {net}, {n}×{s}²", torch_fn, jax_fn, (xt, yt), (jnp.asarray(x), jnp.asarray(y)),
                    args.repeats)


if __name__ == "__main__":
    main()
