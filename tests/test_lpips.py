"""LPIPS v0.1 against the ``lpips`` package (0.1.4): AlexNet, VGG16 and SqueezeNet 1.1.

The reference is ``lpips.LPIPS(net=…, pretrained=True, pnet_rand=True)``: the package's own linear weights and a
randomly initialised torchvision backbone (nothing is downloaded), whose biases are then randomised too
(torchvision initialises VGG's and SqueezeNet's to 0, which would leave the bias mapping untested). That backbone
is saved as a torchvision-layout ``.pth`` and converted with the command line; jaxir loads the result with
:func:`jaxir.metrics.lpips.load_lpips` (``$JAXIR_CHECKPOINTS`` pointed at the test folder) and with ``jaxir.load``.
"""

from __future__ import annotations

import functools
import shutil

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import photo

import jaxir
from checkpoints_conversion.__main__ import main as convert_main
from checkpoints_conversion.lpips_keys import default_linear_weights
from jaxir.errors import JaxirInputError
from jaxir.metrics import lpips as jl
from jaxir.models.lpips_backbones import ARCHITECTURES, max_pool, min_input_size

lpips_ref = pytest.importorskip("lpips")

NETS = ("alex", "vgg", "squeeze")
# torchvision's ImageNet classifier keys (not part of LPIPS; the converter must skip them on purpose). Small
# stand-in tensors under the real names keep the saved files small.
CLASSIFIER_LAYERS = {"alex": (1, 4, 6), "vgg": (0, 3, 6), "squeeze": (1,)}
TOLERANCE = 1e-5   # max |Δ| of the distances, relative to the largest distance


@functools.cache
def reference(net: str):
    """The reference LPIPS (eval mode) and its backbone as a torchvision ``features.*`` state dict."""
    torch.manual_seed(NETS.index(net))
    ref = lpips_ref.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
    with torch.no_grad():
        for name, p in ref.net.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    # lpips' slices keep torchvision's layer indices as module names: "slice2.3.weight" is "features.3.weight"
    state = {"features." + k.split(".", 1)[1]: v.clone() for k, v in ref.net.state_dict().items()}
    for i in CLASSIFIER_LAYERS[net]:
        state[f"classifier.{i}.weight"] = torch.randn(4, 3)
        state[f"classifier.{i}.bias"] = torch.randn(4)
    return ref, state


def reference_distance(net: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ref, _ = reference(net)
    to_torch = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    with torch.no_grad():
        return ref(to_torch(x), to_torch(y), normalize=True).numpy().reshape(-1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``$JAXIR_CHECKPOINTS`` folder holding ``lpips_<net>`` for every net, converted with the command line."""
    home = tmp_path_factory.mktemp("lpips_home")
    for net in NETS:
        backbone = home / f"{net}_backbone.pth"
        torch.save(reference(net)[1], backbone)
        assert convert_main(["lpips", "--net", net, "--backbone", str(backbone), "--out", str(home / f"lpips_{net}")]) == 0
    return home


@pytest.fixture
def home(checkpoints, monkeypatch):
    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(checkpoints))
    return checkpoints


def image_pairs(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Two image pairs: independent uniform noise, or real photo crops 67×45 (odd, non-square: SqueezeNet's
    ceil-mode pools add a partial window) against a noisy, darkened copy."""
    rng = np.random.default_rng(0)
    if kind == "random":
        x = rng.random((2, 48, 48, 3), dtype=np.float32)
        return x, rng.random(x.shape, dtype=np.float32)
    x = np.stack([photo("astronaut")[100:167, 200:245], photo("coffee")[150:217, 300:345]])
    y = np.clip(0.9 * x + 0.05 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    return x, y


@pytest.mark.parametrize("kind", ["random", "real"])
@pytest.mark.parametrize("net", NETS)
def test_matches_lpips_package(home, net, kind):
    x, y = image_pairs(kind)
    want = reference_distance(net, x, y)
    got = np.asarray(jl.lpips(x, y, net=net))
    err = np.max(np.abs(got - want))
    print(f"LPIPS {net} {kind} {x.shape[1]}x{x.shape[2]}: reference {want}, max abs error {err:.2e}")
    assert got.shape == (2,) and np.all(want > 1e-3)
    assert err <= TOLERANCE * float(np.max(want))


def test_single_image_and_identity(home):
    x, y = image_pairs("real")
    batch = np.asarray(jl.lpips(x, y, net="squeeze"))
    assert np.asarray(jl.lpips(x[1], y[1], net="squeeze")).shape == ()
    np.testing.assert_allclose(jl.lpips(x[1], y[1], net="squeeze"), batch[1], rtol=1e-6)
    assert np.all(np.abs(np.asarray(jl.lpips(x, x, net="squeeze"))) < 1e-12)


def test_jaxir_load_gives_the_same_network(home):
    x, y = image_pairs("random")
    network, params = jaxir.load(home / "lpips_alex")
    np.testing.assert_array_equal(jl.lpips(x, y, weights=(network, params)), jl.lpips(x, y, net="alex"))
    assert jl.check("alex") is None


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_matches_torch(ceil_mode):
    rng = np.random.default_rng(1)
    for h, w in [(7, 8), (9, 12), (16, 13), (2, 5)]:
        if not ceil_mode and min(h, w) < 3:
            continue
        x = rng.standard_normal((1, h, w, 2)).astype(np.float32)
        want = F.max_pool2d(torch.from_numpy(x.transpose(0, 3, 1, 2)), 3, 2, ceil_mode=ceil_mode).numpy()
        got = np.asarray(max_pool(jax.numpy.asarray(x), 3, 2, ceil_mode)).transpose(0, 3, 1, 2)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("net", NETS)
def test_min_input_size_matches_torch(net):
    ref, _ = reference(net)
    side = min_input_size(net)
    with torch.no_grad():
        ref.net(torch.zeros(1, 3, side, side))
        with pytest.raises(RuntimeError):
            ref.net(torch.zeros(1, 3, side - 1, side - 1))


def test_missing_checkpoint_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path))
    reason = jl.check("vgg")
    assert reason is not None and str(tmp_path / "lpips_vgg") in reason
    assert ("python -m checkpoints_conversion lpips --net vgg --backbone vgg16-397923af.pth "
            f"--out {tmp_path / 'lpips_vgg'}") in reason
    assert ARCHITECTURES["vgg"].weights_url in reason
    with pytest.raises(JaxirInputError) as err:
        jl.load_lpips("vgg")
    assert str(err.value) == reason
    x = np.zeros((32, 32, 3), np.float32)
    with pytest.raises(JaxirInputError, match="python -m checkpoints_conversion lpips --net vgg"):
        jl.lpips(x, x, net="vgg")


def test_checkpoint_of_another_net_is_refused(checkpoints, tmp_path, monkeypatch):
    shutil.copytree(checkpoints / "lpips_squeeze", tmp_path / "lpips_alex")
    monkeypatch.setenv("JAXIR_CHECKPOINTS", str(tmp_path))
    with pytest.raises(JaxirInputError, match=r"holds LPIPS \(squeeze\), not LPIPS \(alex\)"):
        jl.load_lpips("alex")


def test_bad_inputs(home):
    x = np.zeros((2, 40, 40, 3), np.float32)
    with pytest.raises(JaxirInputError, match="differ in shape"):
        jl.lpips(x, x[:, :39], net="alex")
    with pytest.raises(JaxirInputError, match="at least 31x31"):
        jl.lpips(x[:, :30], x[:, :30], net="alex")
    with pytest.raises(JaxirInputError, match="unknown LPIPS network 'resnet'"):
        jl.lpips(x, x, net="resnet")


def _convert_error(capsys, *argv) -> str:
    assert convert_main(["lpips", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_foreign_files_give_one_line_errors(checkpoints, tmp_path, capsys):
    lin_alex = str(default_linear_weights("alex"))
    out = ["--out", str(tmp_path / "out")]
    msg = _convert_error(capsys, "--net", "alex", "--backbone", lin_alex, *out)
    assert "not a torchvision alex checkpoint (no features.* tensors" in msg
    msg = _convert_error(capsys, "--net", "alex", "--backbone", str(checkpoints / "vgg_backbone.pth"), *out)
    assert "as the torchvision alex backbone: shape mismatch: features.0.weight (64, 3, 3, 3)" in msg
    msg = _convert_error(capsys, "--net", "squeeze", "--backbone", str(checkpoints / "squeeze_backbone.pth"),
                         "--linear", lin_alex, *out)
    assert "as LPIPS squeeze heads" in msg and "parameters not filled: " in msg
    assert "lin_5/kernel (1, 1, 512, 1)" in msg
    msg = _convert_error(capsys, "--net", "alex", "--backbone", str(checkpoints / "alex_backbone.pth"),
                         "--linear", str(checkpoints / "alex_backbone.pth"), *out)
    assert "not an LPIPS linear-weights file" in msg
    negative = {k: -v for k, v in torch.load(lin_alex, weights_only=True, map_location="cpu").items()}
    torch.save(negative, tmp_path / "negative.pth")
    msg = _convert_error(capsys, "--net", "alex", "--backbone", str(checkpoints / "alex_backbone.pth"),
                         "--linear", str(tmp_path / "negative.pth"), *out)
    assert "LPIPS linear weights must be non-negative" in msg
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    msg = _convert_error(capsys, "--net", "alex", "--backbone", str(tmp_path / "notes.pth"), *out)
    assert "not a readable PyTorch checkpoint" in msg
    assert not (tmp_path / "out").exists()
