"""Hostile and damaged inputs through the library's entry points (issue 15): images, arrays, PyTorch checkpoints,
converted checkpoint directories. The corpus is generated here, in ``tmp_path``; each case asserts the exact kind
of outcome: the documented conversion, or jaxir's own error type with a message naming the file.

The study and the ``jaxir`` command on the same corpus (and killed runs) are in ``test_hostile_study.py``.
"""

from __future__ import annotations

import pathlib
import pickle
import shutil

import jax
import numpy as np
import pytest
import torch
from PIL import Image

import jaxir
from checkpoints_conversion.__main__ import main as convert_main
from checkpoints_conversion.errors import ConversionError
from checkpoints_conversion.sources import read_state_dict
from helpers import DIFFBIR_FIXTURES, needs_fixtures
from hostile_corpus import bomb_png, broken_files, converted_files, rgb_noise
from jaxir import atomic, checkpoints
from jaxir.data import load_image, read_folder, save_image
from jaxir.data.images import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV
from jaxir.errors import ImageLoadError, JaxirInputError
from jaxir.metrics import niqe, psnr, ssim
from jaxir.models.restorer_cnn import ResidualCNNConfig


@pytest.mark.parametrize("name", ["truncated.png", "zero.png", "fake.png", "bomb.png", "transparent.png"])
def test_broken_image_is_one_error_naming_the_file(tmp_path, name):
    reasons = broken_files(tmp_path)
    with pytest.raises(ImageLoadError) as err:
        load_image(tmp_path / name)
    message = str(err.value)
    assert message.startswith(str(tmp_path / name)) and reasons[name] in message and "\n" not in message


def test_bomb_header_says_how_to_raise_the_limit_and_the_limit_can_be_raised(tmp_path, monkeypatch):
    path = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageLoadError, match=rf"limit of {DEFAULT_MAX_PIXELS}.*max_pixels=, \${MAX_PIXELS_ENV} or "
                                             r"--max-pixels"):
        load_image(path)
    small = bomb_png(tmp_path / "small.png", side=300)   # a cut file under a raised-enough limit: decoding fails
    with pytest.raises(ImageLoadError, match="limit of 1000"):
        load_image(small, max_pixels=1000)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(ImageLoadError, match="limit of 1000"):
        load_image(small)
    with pytest.raises(ImageLoadError, match="not a readable image"):
        load_image(small, max_pixels=10**6)   # past the limit check, the missing pixel data is what fails
    assert Image.MAX_IMAGE_PIXELS is not None   # Pillow's own check is back for everyone else


def test_bad_pixel_limit_setting_is_a_jaxir_error(tmp_path, monkeypatch):
    Image.fromarray(rgb_noise(4, 4)).save(tmp_path / "a.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(JaxirInputError, match=f"{MAX_PIXELS_ENV}='lots' is not a number"):
        load_image(tmp_path / "a.png")
    with pytest.raises(JaxirInputError, match="at least 1"):
        load_image(tmp_path / "a.png", max_pixels=0)


def test_documented_conversions_of_odd_formats(tmp_path):
    for name, expected in converted_files(tmp_path).items():
        np.testing.assert_allclose(load_image(tmp_path / name), expected, atol=1e-7, err_msg=name)


def test_read_folder_reads_past_every_bad_file(tmp_path):
    reasons = broken_files(tmp_path)
    good = converted_files(tmp_path)
    records, failures = read_folder(tmp_path)
    assert sorted(r.name + pathlib.Path(r.source).suffix for r in records) == sorted(good)
    assert sorted(path.name for path, _ in failures) == sorted(reasons)
    for path, err in failures:
        assert isinstance(err, ImageLoadError) and str(err).startswith(f"{path}: ") and reasons[path.name] in str(err)


# ------------------------------------------------------------------------------------------------ arrays, metrics

@pytest.mark.parametrize("array, message", [
    (np.full((100, 100, 3), np.nan, np.float32), "NaN or infinite"),
    (np.full((100, 100, 3), 3.0, np.float32), "values must lie in"),
    (np.zeros((100, 100, 3), np.uint8), "expected float values"),
    (np.zeros((100, 100, 4), np.float32), "RGBA"),
    (np.zeros((0, 0, 3), np.float32), "has no pixels"),
])
def test_metrics_refuse_bad_arrays(array, message):
    for metric in (psnr, ssim):
        with pytest.raises(JaxirInputError, match=message):
            metric(array, array)
    with pytest.raises(JaxirInputError, match=message):
        niqe(array)


@pytest.mark.parametrize("array, message", [
    (np.full((1, 16, 16, 3), np.nan, np.float32), "bicubic: input: contains 768 NaN or infinite values"),
    (np.full((1, 16, 16, 3), 7.0, np.float32), r"bicubic: input: values must lie in \[0, 1\].*divide by 255"),
    (np.zeros((1, 16, 16, 3), np.uint8), "bicubic: input: expected float values"),
    (np.zeros((16, 16, 3), np.float32), "bicubic: expected an NHWC RGB batch"),
])
def test_restorer_refuses_bad_arrays(array, message):
    from jaxir.degradations import Degradation
    from jaxir.restorers import get

    with pytest.raises(JaxirInputError, match=message):
        get("bicubic").restore(array, Degradation(scale=2), jax.random.key(0))


@pytest.mark.parametrize("side", [1, 10, 95])
def test_metrics_refuse_images_below_their_window(side):
    image = np.zeros((side, 200, 3), np.float32)
    with pytest.raises(JaxirInputError, match="NIQE .* at least 96x96"):
        niqe(image)
    if side < 11:
        with pytest.raises(JaxirInputError, match="at least 11x11"):
            ssim(image, image)


def test_save_image_refuses_nan_and_leaves_no_file(tmp_path):
    with pytest.raises(JaxirInputError, match=r"nan\.png: .*NaN"):
        save_image(tmp_path / "nan.png", np.full((4, 4, 3), np.nan, np.float32))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_interrupted_leaves_old_file_and_no_partial(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic.replacing(target) as temp:
            temp.write_text("new, half writ")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n" and list(tmp_path.iterdir()) == [target]
    atomic.write_json(tmp_path / "s.json", {"level": "blur σ=2"})
    assert (tmp_path / "s.json").read_text(encoding="utf-8") == '{\n  "level": "blur σ=2"\n}\n'


# ---------------------------------------------------------------------------------- PyTorch checkpoints, converters

class _Payload:
    """Unpickling this runs code: it creates ``marker`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_code_executing_pickle_is_refused_and_never_run(tmp_path, capsys, container):
    marker = tmp_path / "pwned"
    payload = {"state_dict": {"conv_first.weight": torch.zeros(1)}, "evil": _Payload(marker)}
    path = tmp_path / "evil.pth"
    if container == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ConversionError) as err:
        read_state_dict(path)
    assert str(err.value).startswith(f"{path}: not a readable PyTorch checkpoint")
    assert convert_main(["rrdbnet", str(path), "--preset", "bsrnet", "--out", str(tmp_path / "o")]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"checkpoints_conversion: error: {path}: ") and "\n" not in message
    assert not marker.exists() and not (tmp_path / "o").exists()
    pickle.loads(pickle.dumps(_Payload(tmp_path / "live")))   # the payload is live: plain unpickling runs it
    assert (tmp_path / "live").exists()


def _save_state(path: pathlib.Path, state: dict) -> pathlib.Path:
    torch.save({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in state.items()}, path)
    return path


SCUNET_LIKE = {"m_head.0.weight": np.zeros((4, 3, 3, 3)), "m_tail.0.weight": np.zeros((3, 4, 3, 3))}
RRDBNET_LIKE = {"conv_first.weight": np.zeros((8, 3, 3, 3)), "body.0.rdb1.conv1.weight": np.zeros((32, 8, 3, 3))}


@pytest.mark.parametrize("argv, state, message", [
    (["rrdbnet", "--preset", "bsrnet"], SCUNET_LIKE, "not an RRDBNet checkpoint"),
    (["scunet"], RRDBNET_LIKE, "not an SCUNet checkpoint"),
    (["swinir", "--preset", "classical_x2"], RRDBNET_LIKE, "not a SwinIR checkpoint"),
    (["stripformer"], RRDBNET_LIKE, "not a Stripformer state dict"),
    (["vae"], RRDBNET_LIKE, "unused source tensors"),
])
def test_checkpoint_of_another_model_names_the_file(tmp_path, capsys, argv, state, message):
    path = _save_state(tmp_path / "other_model.pth", state)
    assert convert_main([argv[0], str(path), *argv[1:], "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"checkpoints_conversion: error: {path}: ") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("keep", [0, 0.5])
def test_truncated_checkpoint_file_names_the_file(tmp_path, capsys, suffix, keep):
    path = tmp_path / f"cut{suffix}"
    if suffix == ".pth":
        _save_state(path, RRDBNET_LIKE)
    else:
        from safetensors.numpy import save_file

        save_file({k: v.astype(np.float32) for k, v in RRDBNET_LIKE.items()}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    assert convert_main(["rrdbnet", str(path), "--preset", "bsrnet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"checkpoints_conversion: error: {path}: not a readable") and "\n" not in err


@needs_fixtures("diffbir")
def test_diffbir_pair_names_which_file_is_wrong(tmp_path, capsys):
    """A ControlNet slot given another model's file: the error names that file and its option, not the SD file."""
    sd, other = DIFFBIR_FIXTURES / "sd_tiny.ckpt", _save_state(tmp_path / "rrdbnet.pth", RRDBNET_LIKE)
    config = DIFFBIR_FIXTURES / "cldm_tiny.yaml"
    argv = ["diffbir", "--sd", str(sd), "--controlnet", str(other), "--config", str(config),
            "--out", str(tmp_path / "o")]
    assert convert_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"checkpoints_conversion: error: {other} (--controlnet): LDM ControlNet: unused source "
                          "tensors") and str(sd) not in err and "\n" not in err
    argv = ["diffbir", "--sd", str(other), "--controlnet", str(DIFFBIR_FIXTURES / "controlnet_tiny.pth"),
            "--config", str(config), "--out", str(tmp_path / "o")]
    assert convert_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"checkpoints_conversion: error: {other} (--sd): not a Stable Diffusion checkpoint")


def test_unknown_preset_is_a_usage_error_not_a_trace(tmp_path, capsys):
    path = _save_state(tmp_path / "vae.pth", RRDBNET_LIKE)
    with pytest.raises(SystemExit) as exit_:
        convert_main(["vae", str(path), "--preset", "from_ldm", "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2 and "invalid choice: 'from_ldm'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ converted checkpoint directories

TINY_CNN = ResidualCNNConfig(scale=2, features=4, blocks=1)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from jaxir.models.restorer_cnn import param_shapes

    shapes = param_shapes(TINY_CNN)
    params = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), shapes)
    return checkpoints.save(tmp_path_factory.mktemp("ckpt") / "tiny", "residual_cnn", TINY_CNN, params)


def _cut(file: pathlib.Path, keep: float = 0.5) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])


def _data_files(path: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in (path / "params").rglob("*") if p.is_file() and p.parent.name == "d")


DAMAGES = {
    "config cut": (lambda d: _cut(d / "config.json"), r"config\.json: the model config is damaged"),
    "config emptied": (lambda d: _cut(d / "config.json", 0), r"config\.json: the model config is damaged"),
    "config not UTF-8": (lambda d: (d / "config.json").write_bytes(b'{"kind": "\xcf'), r"config\.json: the model "
                         "config is damaged"),
    "config of wrong type": (lambda d: (d / "config.json").write_text(
        '{"kind": "residual_cnn", "config": {"scale": "two"}}'), r"ResidualCNNConfig\.scale: expected int"),
    "unknown kind": (lambda d: (d / "config.json").write_text('{"kind": "nope", "config": {}}'),
                     "unknown model kind 'nope'"),
    "params/ missing": (lambda d: shutil.rmtree(d / "params"), "has no params/ folder"),
    "orbax metadata missing": (lambda d: (d / "params" / "_METADATA").unlink(), "parameter file params/_METADATA is "
                               "missing"),
    "orbax metadata cut": (lambda d: _cut(d / "params" / "_METADATA"), r"params/_METADATA has \d+ bytes, not \d+"),
    "data file missing": (lambda d: _data_files(d)[0].unlink(), r"parameter file params/(.*/)?d/\w+ is missing"),
    "data file cut": (lambda d: _cut(_data_files(d)[0]), r"params/(.*/)?d/\w+ has \d+ bytes"),
    "files.json cut": (lambda d: _cut(d / "files.json"), r"files\.json: the list of parameter files is damaged"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_checkpoint_directory_is_one_line_naming_it(tmp_path, tiny_checkpoint, damage):
    damaged = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, damaged)
    action, message = DAMAGES[damage]
    action(damaged)
    with pytest.raises(JaxirInputError, match=message) as err:
        jaxir.load(damaged)
    assert str(damaged) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(JaxirInputError, match=message):   # found without reading a parameter
        checkpoints.verify(damaged)
    assert "convert or copy the checkpoint again" in str(err.value) or "unknown model kind" in str(err.value)


def test_intact_tiny_checkpoint_loads(tiny_checkpoint):
    model, params = jaxir.load(tiny_checkpoint)
    assert model.config == TINY_CNN and all(np.all(np.asarray(p) == 0.5) for p in jax.tree.leaves(params))


def test_interrupted_save_leaves_no_directory(tmp_path, monkeypatch):
    from jaxir.models.restorer_cnn import param_shapes

    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), param_shapes(TINY_CNN))
    def killed(path):   # the kill comes after orbax has written the parameters
        assert (path / "params" / "_METADATA").is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "_param_files", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(tmp_path / "model", "residual_cnn", TINY_CNN, params)
    assert list(tmp_path.iterdir()) == []


def test_damaged_restorer_checkpoint_makes_it_unavailable_before_any_run(tmp_path, tiny_checkpoint, capsys):
    from jaxir.cli import main
    from jaxir.restorers import get

    damaged = tmp_path / "realesrgan"
    shutil.copytree(tiny_checkpoint, damaged)
    _cut(damaged / "params" / "_METADATA")
    reason = get("realesrgan_x4").configure(checkpoint=str(damaged)).unavailable_reason()
    assert reason.startswith(f"damaged checkpoint: {damaged}: parameter file params/_METADATA has ")
    assert "delete it and create it again with: " in reason
    (tmp_path / "lq").mkdir()
    Image.fromarray(rgb_noise(8, 8)).save(tmp_path / "lq" / "a.png")
    assert main(["restore", str(tmp_path / "lq"), "--out", str(tmp_path / "out"), "--restorer", "realesrgan_x4",
                 "--checkpoint", str(damaged), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"jaxir: error: restorer realesrgan_x4 unavailable: damaged checkpoint: {damaged}")
    assert "\n" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind, flags", [("diffbir", ["--sd", "a.ckpt", "--controlnet", "b.pth"]),
                                         ("supir", ["--sdxl", "a.safetensors", "--supir", "b.ckpt"])])
@pytest.mark.parametrize("content", ["a: 1\n", "params: {unet_cfg: 3, controlnet_cfg: 3, vae_cfg: 3, clip_cfg: 3, "
                                     "latent_scale_factor: 1}\n", "model: 3\n", "- [unclosed\n"])
def test_config_yaml_of_something_else_names_the_file(tmp_path, capsys, kind, flags, content):
    config = tmp_path / "config.yaml"
    config.write_text(content)
    assert convert_main([kind, *flags, "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"checkpoints_conversion: error: {config}: ") and "\n" not in err
