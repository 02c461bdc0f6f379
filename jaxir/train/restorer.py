"""Training a restorer with the pixel loss of eq. (4), ``L = ‖M_φ(I_y) − I_x‖²`` (or L1), on procedural images.

Data: dead-leaves crops (:mod:`jaxir.data.dead_leaves`), or random crops of a user folder or a tensorflow-datasets
dataset (:mod:`jaxir.data.crops`), degraded on the fly with the task's
:class:`~jaxir.degradations.pipeline.Degradation` (eq. 1); step s uses ``fold_in(key(seed), s)`` for both (the
image crops ``default_rng((seed, s))``), so the data stream is a function of the seed. Validation: PSNR (Y channel,
BasicSR's convention) on a fixed set of dead-leaves images from another key — never on the evaluation photos, which
play no part in training (training images are refused if they hold one of them,
:func:`check_not_evaluation_photos`).

The result is a jaxir checkpoint directory (kind ``residual_cnn``) whose ``provenance.json`` records the command,
the configurations and the validation score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxir import checkpoints
from jaxir.data.crops import RandomCrops, TrainingImages
from jaxir.data.dead_leaves import DeadLeavesConfig, dead_leaves_batch
from jaxir.degradations.pipeline import Degradation
from jaxir.errors import JaxirInputError
from jaxir.metrics import psnr
from jaxir.models.restorer_cnn import ResidualCNN, ResidualCNNConfig
from jaxir.train.loop import TrainConfig, train

TASKS = {"sr2": Degradation(scale=2), "sr4": Degradation(scale=4), "blur2": Degradation(blur_sigma=2.0)}
VALIDATION_KEY = 10_000_019   # a key stream disjoint from the training steps' fold_in(key, s)


@dataclasses.dataclass(frozen=True)
class RestorerData:
    batch: int = 16
    crop: int = 64
    validation_images: int = 8
    validation_size: int = 96
    loss: str = "l2"


def _pixel_hash(image) -> str:
    return hashlib.sha256(np.round(np.asarray(image) * 255).astype(np.uint8).tobytes()).hexdigest()


def check_not_evaluation_photos(images) -> None:
    """Refuse training images equal (as 8-bit pixels) to any bundled evaluation photo."""
    from jaxir.data import bundled_photos

    evaluation = {_pixel_hash(p.image): p.name for p in bundled_photos()}
    for image in images:
        name = evaluation.get(_pixel_hash(image))
        if name:
            raise JaxirInputError(f"training data holds the evaluation photo {name!r}; the bundled photos are "
                                  "reserved for evaluation")


def make_batch_fn(degradation: Degradation, data: RestorerData, seed: int, dead_leaves=DeadLeavesConfig(),
                  images: TrainingImages | None = None):
    """step → (lq, hq): dead-leaves crops (or random crops of ``images``) and their degradation, from
    ``fold_in(key(seed), step)``."""
    key = jax.random.key(seed)
    if data.crop % int(degradation.scale):
        raise JaxirInputError(f"crop {data.crop} must be a multiple of the scale {degradation.scale}")
    step_keys = lambda step: jax.random.split(jax.random.fold_in(key, step))  # noqa: E731  (images, degradation)

    if images is not None:
        crops = RandomCrops(images, data.batch, data.crop, seed)
        degrade = jax.jit(lambda hq, step: degradation(hq, step_keys(step)[1]))

        def image_batch(step):
            hq = jnp.asarray(crops(step))
            return degrade(hq, step), hq

        return image_batch

    @jax.jit
    def batch(step):
        k_images, k_degrade = step_keys(step)
        hq = dead_leaves_batch(k_images, data.batch, data.crop, dead_leaves)
        return degradation(hq, k_degrade), hq

    return batch


DEAD_LEAVES_DATA = "dead leaves (jaxir.data.dead_leaves), procedural; no evaluation photo"


def run_notes(command: str | None, train_config: TrainConfig, data, seed: int,
              training_data: str = DEAD_LEAVES_DATA, **fields) -> dict:
    """The provenance of a trained checkpoint: the command that reproduces it, its settings, ``fields``, and what
    it was trained on."""
    return {"command": command or " ".join(sys.argv), "train_config": dataclasses.asdict(train_config),
            "data": dataclasses.asdict(data), "seed": seed, **fields, "training_data": training_data}


def validation_curve(history: list[dict]) -> list[list[float]]:
    """``[step, seconds, score]`` of every validated step of a run (score: the trainer's validation, higher is
    better), the record of quality against training compute a checkpoint's provenance keeps."""
    return [[r["step"], r.get("seconds"), r["score"]] for r in history if "score" in r]


def best_score(history: list[dict]) -> float | None:
    """The best validation score of a run's history (``None`` without validation)."""
    scores = [r["score"] for r in history if "score" in r]
    return max(scores) if scores else None


def replace_dir(path: Path) -> Path:
    """``path`` emptied for a new checkpoint (a finished run writes its model again when called again)."""
    if path.exists():
        import shutil

        shutil.rmtree(path)
    return path


def restorer_loss(model: ResidualCNN, kind: str):
    if kind not in ("l1", "l2"):
        raise JaxirInputError(f"loss must be 'l1' or 'l2', got {kind!r}")

    def loss(params, batch):
        lq, hq = batch
        diff = model.apply({"params": params}, lq) - hq
        return jnp.mean(diff ** 2) if kind == "l2" else jnp.mean(jnp.abs(diff))

    return loss


def validation_fn(model: ResidualCNN, degradation: Degradation, data: RestorerData, seed: int,
                  dead_leaves=DeadLeavesConfig()):
    """params → mean Y-PSNR on fixed dead-leaves images (crop_border = scale, as the study scores SR)."""
    key = jax.random.fold_in(jax.random.key(seed), VALIDATION_KEY)
    hq = dead_leaves_batch(key, data.validation_images, data.validation_size, dead_leaves)
    lq = degradation(hq, jax.random.fold_in(key, 1))
    border = int(degradation.scale) if degradation.scale > 1 else 0
    apply = jax.jit(lambda p: jnp.clip(model.apply({"params": p}, lq), 0.0, 1.0))

    def validate(params):
        restored = jnp.round(apply(params) * 255) / 255
        return float(np.mean(np.asarray(psnr(restored, hq, crop_border=border, y_channel=True))))

    return validate


def train_restorer(task: str, out, *, model_config: ResidualCNNConfig | None = None,
                   train_config: TrainConfig = TrainConfig(), data: RestorerData = RestorerData(), seed: int = 0,
                   dead_leaves: DeadLeavesConfig = DeadLeavesConfig(), images: TrainingImages | None = None,
                   mesh=None, progress: bool = True, command: str | None = None) -> Path:
    """Train the residual CNN for ``task`` (``sr2``, ``sr4``, ``blur2``) on ``dead_leaves`` images, or on crops of
    ``images`` (:func:`jaxir.data.crops.training_images`; validation stays on dead leaves), into ``out/run``
    (resumable) and write the best parameters as the jaxir checkpoint ``out/model``.
    ``model_config`` defaults to 32 features, 4 blocks and the flat-preserving tail. Returns that directory."""
    if task not in TASKS:
        raise JaxirInputError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    degradation = TASKS[task]
    config = model_config or ResidualCNNConfig(scale=int(degradation.scale), flat_preserving=True)
    if config.scale != int(degradation.scale):
        raise JaxirInputError(f"model scale {config.scale} does not match task {task}")
    if images is not None:
        check_not_evaluation_photos(image / 255.0 for image in images.images)
    model = ResidualCNN(config)
    out = Path(out)
    init = model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 3)))["params"]
    validate = validation_fn(model, degradation, data, seed, dead_leaves)
    _, best, history = train(restorer_loss(model, data.loss), init,
                             make_batch_fn(degradation, data, seed, dead_leaves, images), train_config, out / "run",
                             validate=validate, mesh=mesh, progress=progress)
    source = {} if images is None else {"training_data": images.describe() + " (random crops, flips, transposes; "
                                                                             "no evaluation photo)"}
    notes = run_notes(command, train_config, data, seed, task=task, degradation=degradation.label,
                      dead_leaves=dataclasses.asdict(dead_leaves), validation_psnr_y=best_score(history), **source)
    return checkpoints.save(replace_dir(out / "model"), "residual_cnn", config, best, converter="jaxir.train.restorer",
                            notes=notes)
