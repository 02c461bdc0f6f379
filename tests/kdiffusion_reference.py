"""k-diffusion's samplers (crowsonkb/k-diffusion ``k_diffusion/sampling.py``, the file DiffBIR v2.1 copies) as an
independent reference, loaded on its own: ``import k_diffusion`` pulls its training stack (clean-fid, CLIP, wandb).
The file needs torch, torchsde, SciPy, tqdm, ``torchdiffeq.odeint`` (only for log-likelihoods: stubbed) and
``utils.append_dims``. k-diffusion is installed ``--no-deps`` in the test environment (see the Makefile)."""

from __future__ import annotations

import functools
import importlib.util
import sys
import types

import pytest


def _append_dims(x, target_dims):
    return x[(...,) + (None,) * (target_dims - x.ndim)]


@functools.cache
def load():
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (make test installs it)")
    package = types.ModuleType("kdiffusion_ref")
    package.__path__ = []
    utils = types.ModuleType("kdiffusion_ref.utils")
    utils.append_dims = _append_dims
    package.utils = utils
    sys.modules.update({"kdiffusion_ref": package, "kdiffusion_ref.utils": utils})
    if importlib.util.find_spec("torchdiffeq") is None:
        sys.modules["torchdiffeq"] = types.SimpleNamespace(odeint=None)
    path = f"{spec.submodule_search_locations[0]}/sampling.py"
    module_spec = importlib.util.spec_from_file_location("kdiffusion_ref.sampling", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["kdiffusion_ref.sampling"] = module
    module_spec.loader.exec_module(module)
    return module
