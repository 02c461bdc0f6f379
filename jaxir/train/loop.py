"""A resumable, deterministic optax training loop with orbax checkpoints, data-parallel over a device mesh.

* Determinism: the batch of step s is ``batch_fn(s)``, a pure function of the step (its randomness comes from
  ``fold_in(data_key, s)``), and the parameters start from ``init_params``; so a run is a function of its seed,
  and a run resumed from a checkpoint continues exactly as an uninterrupted one (tested bit for bit).
* Checkpoints (``orbax.checkpoint.CheckpointManager``): ``<out>/last`` holds the latest ``{step, params,
  opt_state}`` (every ``checkpoint_every`` steps and at the end), ``<out>/best`` the parameters with the best
  validation score. Starting again in the same folder resumes from ``last``.
* Data parallelism: with a ``mesh`` (:func:`jaxir.parallel.data_mesh`), parameters and optimizer state are
  replicated and each batch is sharded on its first axis; the gradient is the mean over the global batch, so
  the result does not depend on the number of devices (up to float32 reduction order).
* EMA (``ema_decay`` > 0): an exponential moving average of the parameters, LDM's ``LitEma``
  (CompVis/latent-diffusion ``ldm/modules/ema.py``): after update n, ``ema ← d·ema + (1 − d)·θ`` with
  ``d = min(ema_decay, (1 + n)/(10 + n))``. Validation, the best checkpoint and the returned parameters are the
  averaged ones; the log also records the raw parameters' score (``score_raw``), so one run measures what the
  average is worth.
* Logging: one JSON line per logged step in ``<out>/log.jsonl`` (step, loss, validation score, seconds).
* Damage: orbax writes each checkpoint under a temporary name and commits it whole; a checkpoint damaged later
  (a cut or lost file) is refused in one line naming it and what to delete. A log line cut by a kill is removed
  when the run starts again, so every line of the log parses.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from tqdm import tqdm

from jaxir import parallel
from jaxir.errors import JaxirInputError


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    ema_decay: float = 0.0


def make_optimizer(config: TrainConfig, b1: float = 0.9, b2: float = 0.999) -> optax.GradientTransformation:
    """AdamW (moment decays ``b1``, ``b2``) with linear warm-up (at most half the run) then cosine decay to 0, after
    global-norm gradient clipping."""
    warmup = min(config.warmup_steps, config.steps // 2)
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, max(config.steps, warmup + 1))
    return optax.chain(optax.clip_by_global_norm(config.grad_clip),
                       optax.adamw(schedule, b1=b1, b2=b2, weight_decay=config.weight_decay))


def per_part_optimizer(parts: dict[str, optax.GradientTransformation]) -> optax.GradientTransformation:
    """One optimizer per top-level part of the parameters (``{"autoencoder": …, "discriminator": …}``), each with its
    own clipping and moments, as separate optimizers would be."""
    return optax.multi_transform(parts, lambda params: {name: jax.tree.map(lambda _: name, part)
                                                        for name, part in params.items()})


def _managers(out: Path):
    import orbax.checkpoint as ocp

    last = ocp.CheckpointManager(out / "last", options=ocp.CheckpointManagerOptions(max_to_keep=1))
    best = ocp.CheckpointManager(out / "best", options=ocp.CheckpointManagerOptions(
        max_to_keep=1, best_fn=lambda metrics: metrics["score"], best_mode="max"))
    return last, best


def _open_log(path: Path):
    """The log opened for appending, after cutting off a last line that a killed run left unfinished."""
    if path.exists():
        data = path.read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole != len(data):
            with open(path, "r+b") as f:
                f.truncate(whole)
    return path.open("a")


def train(loss_fn: Callable, init_params, batch_fn: Callable[[int], object], config: TrainConfig, out,
          validate: Callable | None = None, mesh=None, progress: bool = True,
          optimizer: optax.GradientTransformation | None = None):
    """Minimise ``loss_fn(params, batch)`` for ``config.steps`` steps; returns ``(params, best_params, history)``
    (with ``config.ema_decay`` both are averaged parameters).

    ``validate(params) -> float`` (higher is better) runs every ``eval_every`` steps and at the end. ``optimizer``:
    :func:`make_optimizer` of ``config`` unless given."""
    import orbax.checkpoint as ocp

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    optimizer = optimizer or make_optimizer(config)
    state = {"step": jnp.int32(0), "params": init_params, "opt_state": optimizer.init(init_params)}
    if config.ema_decay:
        state["ema"] = init_params
    last, best = _managers(out)
    if last.latest_step() is not None:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        try:
            state = last.restore(last.latest_step(), args=ocp.args.StandardRestore(abstract))
        except (ValueError, OSError) as err:   # orbax metadata or tensorstore data missing, cut or garbled
            step_dir = out / "last" / str(last.latest_step())
            raise JaxirInputError(f"{step_dir}: the checkpoint to resume from is damaged "
                                  f"({str(err).splitlines()[0][:120] if str(err) else type(err).__name__}); delete "
                                  f"{step_dir} to resume from an earlier one, or {out} to start over") from None
    if mesh is not None:
        state = parallel.replicate(state, mesh)

    @jax.jit
    def update(state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new = {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
               "opt_state": opt_state}
        if config.ema_decay:
            n = new["step"].astype(jnp.float32)
            decay = jnp.minimum(config.ema_decay, (1.0 + n) / (10.0 + n))
            new["ema"] = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema"], new["params"])
        return new, loss

    history = []
    log = _open_log(out / "log.jsonl")
    start = int(state["step"])
    t0 = time.perf_counter()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not progress, desc="train")
    try:
        for step in bar:
            batch = batch_fn(step)
            if mesh is not None:
                batch = jax.tree.map(lambda a: parallel.shard_batch(a, mesh), batch)
            state, loss = update(state, batch)
            done = step + 1
            record = None
            if done % config.log_every == 0 or done == config.steps:
                record = {"step": done, "loss": float(loss), "seconds": round(time.perf_counter() - t0, 2)}
                bar.set_postfix(loss=f"{float(loss):.4g}")
            if validate is not None and (done % config.eval_every == 0 or done == config.steps):
                score = float(validate(state.get("ema", state["params"])))
                record = {**(record or {"step": done}), "score": score}
                if config.ema_decay:
                    record["score_raw"] = float(validate(state["params"]))
                best.save(done, args=ocp.args.StandardSave(state.get("ema", state["params"])),
                          metrics={"score": score})
            if done % config.checkpoint_every == 0 or done == config.steps:
                last.save(done, args=ocp.args.StandardSave(state))
            if record:
                history.append(record)
                log.write(json.dumps(record) + "\n")
                log.flush()
    finally:   # an interrupted run keeps every checkpoint it started writing
        last.wait_until_finished()
        best.wait_until_finished()
        log.close()
    params = state.get("ema", state["params"])
    best_params = params
    if validate is not None and best.best_step() is not None:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, params)
        best_params = best.restore(best.best_step(), args=ocp.args.StandardRestore(abstract))
    return params, best_params, history
