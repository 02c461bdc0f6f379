"""Training latent diffusion and its restoration connector with the ε-loss of eq. (9), from scratch, on a CPU.

eq. (9) (Ho et al. 2020, eq. 14; Rombach et al. 2022, eq. 2; DiffBIR's stage-2 loss):

    L = E_{z0, c, t, ε} ‖ε − ε_θ(√ᾱ_t·z0 + √(1−ᾱ_t)·ε, t, c_t, c_f)‖²,   t ~ U{0, …, 999}, ε ~ N(0, I),

with Stable Diffusion's linear β schedule (:func:`jaxir.diffusion.schedule.sd_linear_betas`), so jaxir's samplers
and the DiffBIR pipeline run the trained models unchanged. Three objectives share it:

* :func:`train_ldm` — the denoising UNet of a whole small latent diffusion model, from scratch: ``z0 = s·z`` with
  ``z ~ q(z|x)`` of a frozen autoencoder (LDM's ``get_first_stage_encoding``) and ``c_t`` the (frozen, constant)
  text feature of the empty prompt; the ControlNet is absent.
* :func:`train_connector` — the IRControlNet of a CLDM on a frozen VAE and UNet (DiffBIR ``train_stage2.py``):
  ``c_f = s·mode(E(2·I_reg − 1))`` with ``I_reg`` the stage-1 restoration of a degraded crop (eq. 3, 7); the
  ControlNet starts as a copy of the UNet's encoder (DiffBIR ``load_controlnet_from_unet``: the extra input
  channels of the concatenated condition and every zero convolution start at 0), so training starts from the
  unconditional model.
* ``space="pixel"`` — the same losses with the identity for the autoencoder (``z0 = 2x − 1``, ``c_f = 2·I_reg − 1``),
  the pixel-space ablation of the study's future work.

Data: a pool of dead-leaves crops made once from the seed (the bundled photos never take part), encoded once by the
frozen networks; step s draws its samples, timesteps and noise from ``fold_in(key(seed), s)``. Validation: minus the
ε-loss on a fixed held-out batch with fixed timesteps and noise (higher is better).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxir import checkpoints
from jaxir.data.dead_leaves import dead_leaves_batch
from jaxir.diffusion import schedule as S
from jaxir.errors import JaxirInputError
from jaxir.models.cldm import ControlLDMConfig, ControlLDMNet
from jaxir.models.controlnet import ControlNetConfig
from jaxir.models.controlnet import param_shapes as controlnet_param_shapes
from jaxir.models.text import TextEncoderConfig, TextTransformer
from jaxir.models.tokenizer import CLIPTokenizer
from jaxir.models.unet import UNetConfig, UNetModel
from jaxir.models.vae import AutoencoderKL, VAEConfig
from jaxir.train.loop import TrainConfig, train
from jaxir.train.restorer import TASKS, VALIDATION_KEY, best_score, replace_dir, run_notes, validation_curve
from jaxir.pipelines.autoencoder import load_autoencoder

SPACES = ("latent", "pixel")
DIAGNOSTIC_KEY = 10_000_151   # held-out crops of timestep_errors, disjoint from training and validation


@dataclasses.dataclass(frozen=True)
class DiffusionData:
    """``pool``: dead-leaves crops made (and encoded) once; ``batch`` samples per step are drawn from it;
    ``min_snr_gamma``: the training loss's min-SNR-γ weighting (0: none, eq. (9) as is; see :func:`eps_loss`);
    ``noise_aug_timestep``: the connector's condition noise augmentation (0: none; see :func:`augment_condition`)."""

    pool: int = 2048
    batch: int = 32
    crop: int = 64
    validation: int = 64
    space: str = "latent"
    min_snr_gamma: float = 0.0
    noise_aug_timestep: int = 0

    def __post_init__(self):
        if self.space not in SPACES:
            raise JaxirInputError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.min_snr_gamma < 0:
            raise JaxirInputError(f"min_snr_gamma must be ≥ 0 (0: no weighting), got {self.min_snr_gamma}")
        if not 0 <= self.noise_aug_timestep <= 1000:
            raise JaxirInputError(f"noise_aug_timestep must be in [0, 1000] (0: none), got {self.noise_aug_timestep}")


def small_text_config() -> TextEncoderConfig:
    """A one-layer, 32-wide CLIP text transformer: the small CLDM's text encoder. It stays at its seeded random
    initialisation (training uses the empty prompt only), so ``c_t`` is one constant feature, as for DiffBIR
    run without prompts."""
    return TextEncoderConfig(width=32, heads=1, layers=1, output_layer="last")


def small_unet_config(channels: int, context_dim: int) -> UNetConfig:
    """The small CLDM's UNet: widths 64/128/128 over three levels, one resnet block per level, a transformer block
    (heads of 32 channels) only at the coarsest level."""
    return UNetConfig(in_channels=channels, out_channels=channels, model_channels=64, channel_mult=(1, 2, 2),
                      num_res_blocks=1, attention_resolutions=(4,), num_heads=-1, num_head_channels=32,
                      transformer_depth=1, context_dim=context_dim, use_linear_in_transformer=True)


def eps_loss(network: Callable, alphas_cumprod: np.ndarray, min_snr_gamma: float = 0.0):
    """eq. (9): ``(params, (z0, c_f, c_t, key)) → mean ‖ε − network(params, z_t, t, c_t, c_f)‖²``; with ``key`` a
    tuple ``(t, ε)`` the timesteps and noise are given (validation). ``min_snr_gamma`` > 0 weights each sample's
    error by ``min(SNR_t, γ)/SNR_t``, ``SNR_t = ᾱ_t/(1−ᾱ_t)`` (Hang et al. 2023, "Efficient Diffusion Training via
    Min-SNR Weighting Strategy", the ε-prediction form), which lowers the weight of the low-noise timesteps."""
    table = jnp.asarray(alphas_cumprod, jnp.float32)
    snr = table / (1.0 - table)
    weights = jnp.minimum(snr, min_snr_gamma) / snr if min_snr_gamma > 0 else None

    def loss(params, batch):
        z0, c_f, c_t, draw = batch
        if isinstance(draw, tuple):
            t, noise = draw
        else:
            k_t, k_noise = jax.random.split(draw)
            t = jax.random.randint(k_t, (z0.shape[0],), 0, table.shape[0])
            noise = jax.random.normal(k_noise, z0.shape)
        prediction = network(params, _diffuse(z0, noise, table, t), t.astype(jnp.float32), c_t, c_f)
        if weights is not None:
            return jnp.mean(weights[t] * jnp.mean((noise - prediction) ** 2, axis=(1, 2, 3)))
        return jnp.mean((noise - prediction) ** 2)

    return loss


def augment_condition(c_f: jax.Array, key, alphas_cumprod: np.ndarray, max_timestep: int) -> jax.Array:
    """DiffBIR v2.1's condition noise augmentation (``train_stage2.py``, ``noise_aug_timestep``: 200): each
    sample's condition diffused by the forward process to its own ``t' ~ U{0, …, max_timestep − 1}``,
    ``c' = √ᾱ_t'·c_f + √(1−ᾱ_t')·ε'``, so the connector learns not to copy its condition's fine detail; validation
    and sampling keep the clean condition. ``t'`` and ``ε'`` come from ``jax.random.split(key)`` in that order."""
    k_t, k_noise = jax.random.split(key)
    t = jax.random.randint(k_t, (c_f.shape[0],), 0, max_timestep)
    return _diffuse(c_f, jax.random.normal(k_noise, c_f.shape), jnp.asarray(alphas_cumprod, jnp.float32), t)


def _diffuse(x0, noise, table, t):
    """eq. (8) per sample, ``√ᾱ_t·x0 + √(1−ᾱ_t)·ε`` with ``t`` of shape (batch,) and ``table`` the ᾱ table."""
    a = jnp.sqrt(table[t])[:, None, None, None]
    s = jnp.sqrt(1.0 - table[t])[:, None, None, None]
    return S.q_sample(x0, noise, a, s)


def empty_prompt_text_params(text_config: TextEncoderConfig, seed: int) -> dict:
    """The small CLDM's text encoder: seeded random initialisation, with the token-embedding rows that the empty
    prompt never uses set to 0. Training only ever encodes ``""`` (start, end and padding tokens), so this leaves
    ``τ("")`` unchanged and the CLDM prompt-free by construction, and the zero rows cost nothing to store."""
    tokens = _empty_prompt_tokens(text_config)
    params = TextTransformer(text_config).init(jax.random.fold_in(jax.random.key(seed), 1), tokens)["params"]
    table = params["token_embedding"]["embedding"]
    used = jnp.zeros((table.shape[0],), bool).at[tokens[0]].set(True)
    return {**params, "token_embedding": {"embedding": jnp.where(used[:, None], table, 0.0)}}


def empty_prompt_feature(text_config: TextEncoderConfig, text_params) -> jax.Array:
    """``c_t = τ("")`` (eq. 6), (1, 77, width)."""
    return TextTransformer(text_config).apply({"params": text_params}, _empty_prompt_tokens(text_config))[0]


def _empty_prompt_tokens(text_config: TextEncoderConfig) -> jax.Array:
    return jnp.asarray(CLIPTokenizer(context_length=text_config.context_length)([""]))


def _encoder(space: str, vae: AutoencoderKL | None, vae_params, sample: bool):
    """images in [0, 1] (+ key) → training target or condition, in latent or pixel space, in chunks of 64."""
    if space == "pixel":
        return lambda x, key=None: 2.0 * x - 1.0

    encode = jax.jit(lambda p, x, key: vae.apply({"params": p}, x, key, sample, method="encode_latent"))

    def run(x, key=None):
        key = jax.random.key(0) if key is None else key
        return jnp.concatenate([encode(vae_params, x[i:i + 64], jax.random.fold_in(key, i))
                                for i in range(0, len(x), 64)])

    return run


def make_pool(data: DiffusionData, seed: int, offset: int = 0, size: int | None = None) -> jax.Array:
    """``size`` (default ``data.pool``) dead-leaves crops; crop i from ``fold_in(key(seed), offset + i)``."""
    key = jax.random.key(seed)
    size = data.pool if size is None else size
    make = jax.jit(lambda ids: dead_leaves_batch(key, len(ids), data.crop, sample_ids=ids))
    return jnp.concatenate([make(jnp.arange(i, min(i + 64, size)) + offset) for i in range(0, size, 64)])


def stage1_restore(stage1: dict[str, Callable], task: str, hq: jax.Array, key) -> jax.Array:
    """``I_reg = M_φ(D(x))``: degrade ``hq`` as ``task`` and restore it with that task's stage-1 model."""
    degradation = TASKS[task]
    return jnp.clip(stage1[task](degradation(hq, key), degradation), 0.0, 1.0)


def _draw(key, pool: int, batch: int, step):
    k = jax.random.fold_in(key, step)
    k_index, k_draw = jax.random.split(k)
    return jax.random.randint(k_index, (batch,), 0, pool), k_draw


def _latent_channels(space: str, vae_config: VAEConfig | None) -> int:
    return 3 if space == "pixel" else vae_config.embed_dim


def train_ldm(out, vae_dir: str | None, *, unet_config: UNetConfig | None = None,
              train_config: TrainConfig = TrainConfig(), data: DiffusionData = DiffusionData(), seed: int = 0,
              mesh=None, progress: bool = True, command: str | None = None) -> Path:
    """Train the small UNet (and fix the small text encoder) from scratch on the frozen autoencoder in ``vae_dir``
    (``space="latent"``) or on pixels; writes ``out/model`` and returns it: kind ``diffbir_cldm`` with an untrained
    IRControlNet whose zero convolutions make it a no-op, or on pixels the UNet alone (kind ``unet``)."""
    if data.noise_aug_timestep:
        raise JaxirInputError("condition noise augmentation trains the connector (--task cldm); the UNet has none")
    vae_config, vae_params = _load_vae(vae_dir, data.space)
    text_config = small_text_config()
    channels = _latent_channels(data.space, vae_config)
    unet_config = unet_config or small_unet_config(channels, text_config.width)
    if (unet_config.in_channels, unet_config.context_dim) != (channels, text_config.width):
        raise JaxirInputError(f"the UNet must take {channels} channels and a {text_config.width}-wide context")
    unet = UNetModel(unet_config)
    text_params = empty_prompt_text_params(text_config, seed)
    c_t = empty_prompt_feature(text_config, text_params)
    encode = _encoder(data.space, AutoencoderKL(vae_config) if vae_config else None, vae_params, sample=True)
    key = jax.random.key(seed)
    z0 = encode(make_pool(data, seed), jax.random.fold_in(key, 2))
    z_val = encode(make_pool(data, seed, offset=VALIDATION_KEY, size=data.validation), jax.random.fold_in(key, 3))
    table = S.alphas_cumprod(S.sd_linear_betas())

    def network(params, z_t, t, ctx, c_f):
        return unet.apply({"params": params}, z_t, t, jnp.broadcast_to(ctx, (z_t.shape[0], *ctx.shape[1:])))

    loss = eps_loss(network, table, data.min_snr_gamma)

    @jax.jit
    def batch_fn(step):
        index, draw = _draw(key, z0.shape[0], data.batch, step)
        return z0[index], None, c_t, draw

    validate = _validation(eps_loss(network, table), z_val, None, c_t, seed, len(table))
    init = unet.init(jax.random.fold_in(key, 4), z0[:1], jnp.zeros((1,)), c_t)["params"]
    _, best, history = train(loss, init, batch_fn, train_config, Path(out) / "run", validate=validate, mesh=mesh,
                             progress=progress)
    if data.space == "pixel":   # no autoencoder: the UNet alone (its text feature is τ("") of seed's text encoder)
        return _save(out, "unet", unet_config, best, data, train_config, seed, history, command,
                     "jaxir.train.diffusion.train_ldm")
    config = ControlLDMConfig(unet_config, ControlNetConfig(unet_config, hint_channels=channels, hint_mode="concat"),
                              vae_config, text_config)
    params = {"unet": best, "text": text_params, "vae": vae_params,
              "controlnet": controlnet_from_unet(config.controlnet, best)}
    return _save(out, "diffbir_cldm", config, params, data, train_config, seed, history, command,
                 "jaxir.train.diffusion.train_ldm")


def _load_vae(vae_dir, space: str):
    """``(VAEConfig, params)`` of the frozen autoencoder for latent-space training; ``(None, None)`` on pixels."""
    if space == "pixel":
        return None, None
    if vae_dir is None:
        raise JaxirInputError("latent-space training needs the trained autoencoder (--vae DIR)")
    vae, params = load_autoencoder(vae_dir)
    return vae.config, params


def controlnet_from_unet(config: ControlNetConfig, unet_params) -> dict:
    """DiffBIR's ``load_controlnet_from_unet``: the ControlNet's parameters that the UNet's encoder also has are
    copied; the first convolution's extra input channels (the concatenated condition) and every zero convolution
    start at 0."""
    shapes = controlnet_param_shapes(config)

    def fill(path, shape):
        name = tuple(getattr(p, "key", p) for p in path)
        if name[0].startswith(("zero_convs", "middle_block_out")):
            return jnp.zeros(shape.shape, shape.dtype)
        source = unet_params
        for part in name:
            source = source[part]
        if source.shape == shape.shape:
            return jnp.asarray(source)
        extra = shape.shape[2] - source.shape[2]   # conv (kh, kw, in, out): the condition's input channels
        return jnp.concatenate([source, jnp.zeros((*source.shape[:2], extra, source.shape[3]), source.dtype)], axis=2)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _validation(loss, z0, c_f, c_t, seed: int, num_timesteps: int):
    """params → minus the ε-loss on the held-out ``z0`` with fixed timesteps and noise (higher is better)."""
    key = jax.random.fold_in(jax.random.key(seed), VALIDATION_KEY)
    k_t, k_noise = jax.random.split(key)
    fixed = (jax.random.randint(k_t, (z0.shape[0],), 0, num_timesteps), jax.random.normal(k_noise, z0.shape))
    evaluate = jax.jit(lambda p: loss(p, (z0, c_f, c_t, fixed)))
    return lambda params: -float(evaluate(params))


def train_connector(out, ldm_dir: str, stage1: dict[str, Callable], tasks: Sequence[str] = tuple(TASKS), *,
                    train_config: TrainConfig = TrainConfig(), data: DiffusionData = DiffusionData(), seed: int = 0,
                    mesh=None, progress: bool = True, command: str | None = None) -> Path:
    """Train the IRControlNet of the small CLDM in ``ldm_dir`` (from :func:`train_ldm`, latent space) with the VAE,
    UNet and text encoder frozen, starting from the ControlNet ``ldm_dir`` holds (from :func:`train_ldm`: the UNet's
    encoder; from a trained CLDM: its connector, so a second run continues the first); samples are spread evenly
    over ``tasks``, each conditioned on ``stage1[task]``'s restoration of its degraded crop (noise-augmented by
    :func:`augment_condition` when ``data.noise_aug_timestep`` > 0). Writes ``out/model`` (kind ``diffbir_cldm``)
    and returns it."""
    if data.space != "latent":
        raise JaxirInputError("the connector is trained in latent space (the CLDM checkpoint holds its autoencoder)")
    kind, config = checkpoints.read_config(ldm_dir)
    if kind != "diffbir_cldm":
        raise JaxirInputError(f"{ldm_dir} holds a {kind!r} checkpoint, not the small latent diffusion model")
    _, params = checkpoints.load(ldm_dir)
    missing = [t for t in tasks if t not in stage1]
    if missing:
        raise JaxirInputError(f"no stage-1 model for {missing}")
    key = jax.random.key(seed)
    pool = functools.partial(connector_pool, config.vae, params["vae"], stage1, tasks, data, seed)
    z0, c_f = pool(0, data.pool, jax.random.fold_in(key, 5))
    z_val, c_val = pool(VALIDATION_KEY, data.validation, jax.random.fold_in(key, 6))
    c_t = empty_prompt_feature(config.text, params["text"])
    net = ControlLDMNet(config)
    frozen = {k: v for k, v in params.items() if k != "controlnet"}
    scales = jnp.ones((config.num_controls,), jnp.float32)

    def network(controlnet, z_t, t, ctx, cond):
        ctx = jnp.broadcast_to(ctx, (z_t.shape[0], *ctx.shape[1:]))
        return net.apply({"params": {**frozen, "controlnet": controlnet}}, z_t, t, ctx, cond, scales,
                         method="denoise")

    table = S.alphas_cumprod(S.sd_linear_betas())
    loss = eps_loss(network, table, data.min_snr_gamma)

    batch_fn = connector_batches(z0, c_f, c_t, data, key, table)
    _, best, history = train(loss, params["controlnet"], batch_fn, train_config, Path(out) / "run",
                             validate=_validation(eps_loss(network, table), z_val, c_val, c_t, seed, len(table)),
                             mesh=mesh, progress=progress)
    return _save(out, "diffbir_cldm", config, {**params, "controlnet": best}, data, train_config, seed, history, command,
                 "jaxir.train.diffusion.train_connector", tasks=list(tasks))


def connector_batches(z0, c_f, c_t, data: DiffusionData, key, alphas_cumprod: np.ndarray) -> Callable:
    """The connector's training batches: ``step → (z0, c_f, c_t, draw)`` of ``data.batch`` pool samples drawn from
    ``fold_in(key, step)``, the conditions noise-augmented (:func:`augment_condition`, its key split from the
    step's draw) when ``data.noise_aug_timestep`` > 0."""

    @jax.jit
    def batch_fn(step):
        index, draw = _draw(key, z0.shape[0], data.batch, step)
        if not data.noise_aug_timestep:
            return z0[index], c_f[index], c_t, draw
        draw, k_aug = jax.random.split(draw)
        return z0[index], augment_condition(c_f[index], k_aug, alphas_cumprod, data.noise_aug_timestep), c_t, draw

    return batch_fn


def connector_pool(vae_config: VAEConfig, vae_params, stage1: dict[str, Callable], tasks: Sequence[str],
                   data: DiffusionData, seed: int, offset: int, size: int, key) -> tuple[jax.Array, jax.Array]:
    """``(z0, c_f)`` of ``size`` dead-leaves crops (from ``offset``): the posterior samples ``s·z`` of the clean
    crops and the conditions ``s·mode(E(I_reg))``, the crops spread evenly over ``tasks``."""
    vae = AutoencoderKL(vae_config)
    hq = make_pool(data, seed, offset, size)
    groups = np.array_split(np.arange(size), len(tasks))
    conditions = [stage1_restore(stage1, task, hq[g], jax.random.fold_in(key, i))
                  for i, (task, g) in enumerate(zip(tasks, groups))]
    return (_encoder(data.space, vae, vae_params, sample=True)(hq, key),
            _encoder(data.space, vae, vae_params, sample=False)(jnp.concatenate(conditions)))


def timestep_errors(cldm_dir, stage1: dict[str, Callable], timesteps: Sequence[int],
                    tasks: Sequence[str] = tuple(TASKS), samples: int = 96, seed: int = 0) -> list[dict]:
    """Where a trained CLDM's denoiser stands, per timestep, on held-out crops (disjoint from training and
    validation): the ε-loss of eq. (9) at t, and the RMS error in the scaled latent of its one-step prediction
    ``x̂0 = (z_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t`` (Ho et al. 2020, eq. 15) next to that of the condition itself,
    ``rms(c_f − z0)``. A connector that uses its condition has ``x̂0`` closer to z0 than ``c_f`` at the start
    timestep it restores from; one shared noise draw for all t."""
    _, config = checkpoints.read_config(cldm_dir)
    _, params = checkpoints.load(cldm_dir)
    key = jax.random.fold_in(jax.random.key(seed), DIAGNOSTIC_KEY)
    z0, c_f = connector_pool(config.vae, params["vae"], stage1, tasks, DiffusionData(), seed, DIAGNOSTIC_KEY,
                             samples, key)
    c_t = empty_prompt_feature(config.text, params["text"])
    c_t = jnp.broadcast_to(c_t, (samples, *c_t.shape[1:]))
    net = ControlLDMNet(config)
    scales = jnp.ones((config.num_controls,), jnp.float32)
    table = jnp.asarray(S.alphas_cumprod(S.sd_linear_betas()), jnp.float32)
    noise = jax.random.normal(jax.random.fold_in(key, 1), z0.shape)

    @jax.jit
    def errors(t):
        a, s = jnp.sqrt(table[t]), jnp.sqrt(1.0 - table[t])
        z_t = S.q_sample(z0, noise, a, s)
        eps = net.apply({"params": params}, z_t, jnp.full((samples,), t, jnp.float32), c_t, c_f, scales,
                        method="denoise")
        return jnp.mean((eps - noise) ** 2), jnp.sqrt(jnp.mean(((z_t - s * eps) / a - z0) ** 2))

    condition = float(jnp.sqrt(jnp.mean((c_f - z0) ** 2)))
    rows = []
    for t in timesteps:
        eps_loss_t, x0_rms = errors(jnp.int32(t))
        rows.append({"t": int(t), "eps_loss": float(eps_loss_t), "x0_rms": float(x0_rms), "condition_rms": condition})
    return rows


def _save(out, kind, config, params, data, train_config, seed, history, command, converter, **extra) -> Path:
    score = best_score(history)
    notes = run_notes(command, train_config, data, seed, validation_eps_loss=None if score is None else -score,
                      validation_curve=validation_curve(history), **extra)
    return checkpoints.save(replace_dir(Path(out) / "model"), kind, config, params, converter=converter,
                            notes=notes)
