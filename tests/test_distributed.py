"""Multi-host start-up: two local processes with two CPU devices each (``jax.distributed`` through
:func:`jaxir.parallel.initialize_distributed`) run the DiffBIR pipeline on one 4-device mesh, and both get the
single-device result."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


from helpers import needs_fixtures

_WORKER = """
import json, sys
import jax, numpy as np
from jaxir import parallel
parallel.initialize_distributed(f"localhost:{sys.argv[2]}", 2, int(sys.argv[1]))
import jaxir
from jaxir.degradations.pipeline import Degradation
from jaxir.pipelines.diffbir import DiffBIR, DiffBIRSettings
model, params = jaxir.load(sys.argv[3])
settings = DiffBIRSettings.preset("v2", steps=2, min_short_edge=0, cfg_scale=1.0)
lq = np.random.default_rng(3).random((3, 40, 48, 3)).astype(np.float32)
mesh = parallel.data_mesh()
sharded = np.asarray(DiffBIR(model, params, settings, stage1=lambda x, *_: x, mesh=mesh)(
    lq, Degradation(blur_sigma=1.0), jax.random.key(5)))
local = np.asarray(DiffBIR(model, params, settings, stage1=lambda x, *_: x)(
    lq, Degradation(blur_sigma=1.0), jax.random.key(5)))
print(json.dumps({"devices": jax.device_count(), "mesh": int(mesh.devices.size), "shape": list(sharded.shape),
                  "max_abs": float(np.abs(sharded - local).max())}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@needs_fixtures("diffbir")
def test_two_processes_share_one_mesh(tiny_diffbir_dir):
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    env = dict(os.environ, XLA_FLAGS=flags)
    port = str(_free_port())
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, str(i), port, str(tiny_diffbir_dir)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=Path(__file__).parent) for i in range(2)]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=900)
        assert worker.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    for report in reports:
        assert report["devices"] == 4 and report["mesh"] == 4 and report["shape"] == [3, 40, 48, 3]
        assert report["max_abs"] < 1e-5
