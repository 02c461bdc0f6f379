"""BasicSR's metric and resize functions as independent references, loaded file by file.

``import basicsr`` would import its whole training framework (torchvision, lmdb, ...); the files used here
need only NumPy, OpenCV, SciPy and torch, so each is executed on its own under a stub package whose
``utils`` exposes the colour helpers and whose ``registry`` decorators are no-ops. BasicSR is installed
``--no-deps`` in the test environment (see the Makefile).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest


class _Registry:
    def register(self, *args, **kwargs):
        return (lambda obj: obj) if not args or not callable(args[0]) else args[0]


def _exec(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _rgb_to_grayscale(img, num_output_channels: int = 1):
    """torchvision's ``rgb_to_grayscale`` (ITU-R 601-2 weights), the one thing degradations.py takes from it."""
    r, g, b = img.unbind(dim=-3)
    gray = (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype).unsqueeze(dim=-3)
    return gray.expand(img.shape) if num_output_channels == 3 else gray


def _exec_with_torchvision_stub(name: str, path: Path):
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional_tensor")
    saved = {n: sys.modules.get(n) for n in names}
    try:
        for n in names:
            stub = types.ModuleType(n)
            stub.__path__ = []
            sys.modules[n] = stub
        sys.modules[names[-1]].rgb_to_grayscale = _rgb_to_grayscale
        return _exec(name, path)
    finally:
        for n, module in saved.items():
            if module is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = module


def load() -> types.SimpleNamespace:
    """A namespace with BasicSR's ``matlab_functions``, ``color_util``, ``psnr_ssim``, ``niqe`` and ``degradations``."""
    spec = importlib.util.find_spec("basicsr")
    if spec is None:
        pytest.skip("BasicSR is not installed (make test installs it)")
    root = Path(spec.submodule_search_locations[0])
    saved = {k: v for k, v in sys.modules.items() if k == "basicsr" or k.startswith("basicsr.")}
    try:
        for pkg in ("basicsr", "basicsr.utils", "basicsr.metrics", "basicsr.data"):
            stub = types.ModuleType(pkg)
            stub.__path__ = []
            sys.modules[pkg] = stub
        registry = types.ModuleType("basicsr.utils.registry")
        registry.METRIC_REGISTRY = _Registry()
        sys.modules["basicsr.utils.registry"] = registry
        color = _exec("basicsr.utils.color_util", root / "utils" / "color_util.py")
        matlab = _exec("basicsr.utils.matlab_functions", root / "utils" / "matlab_functions.py")
        utils = sys.modules["basicsr.utils"]
        utils.bgr2ycbcr, utils.rgb2ycbcr, utils.ycbcr2rgb = color.bgr2ycbcr, color.rgb2ycbcr, color.ycbcr2rgb
        utils.color_util, utils.matlab_functions = color, matlab
        metric_util = _exec("basicsr.metrics.metric_util", root / "metrics" / "metric_util.py")
        psnr_ssim = _exec("basicsr.metrics.psnr_ssim", root / "metrics" / "psnr_ssim.py")
        niqe = _exec("basicsr.metrics.niqe", root / "metrics" / "niqe.py")
        degradations = _exec_with_torchvision_stub("basicsr.data.degradations", root / "data" / "degradations.py")
        return types.SimpleNamespace(root=root, matlab_functions=matlab, color_util=color, metric_util=metric_util,
                                     psnr_ssim=psnr_ssim, niqe=niqe, degradations=degradations)
    finally:
        for k in [k for k in sys.modules if k == "basicsr" or k.startswith("basicsr.")]:
            del sys.modules[k]
        sys.modules.update(saved)
