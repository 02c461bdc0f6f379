"""The ``jaxir`` command.

  jaxir study      sweep degradation levels × restorers × images; CSV, markdown report and plots (resumable)
  jaxir experiment run the study's analyses (fig6, fig7, fig8, …, or all) on the shared cell store (resumable)
  jaxir restorers  list the registered restorers and whether they can run
  jaxir restore    restore an image or a folder of degraded images with any restorer (every DiffBIR / SUPIR
                   sampler knob)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxir.data.images import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV
from jaxir.degradations.levels import DEFAULT_LEVELS
from jaxir.errors import JaxirInputError
from jaxir.runtime import configure_runtime

def _images(args):
    """(the images that loaded, (file, error) of those that did not): every file is tried, so all bad ones are
    reported together (see :mod:`jaxir.study.inputs`)."""
    from jaxir.data import bundled_photos, read_folder

    if args.images:
        return read_folder(args.images, alpha=args.alpha, max_pixels=args.max_pixels)
    return bundled_photos(args.photos.split(",") if args.photos else None), []


def cmd_study(args) -> int:
    from jaxir.degradations.levels import parse_levels
    from jaxir.settings import parse_assignments
    from jaxir.study.main import run_main_study

    records, failures = _images(args)
    run, report = run_main_study(Path(args.out), records, parse_levels(args.levels),
                                 args.restorers.split(",") if args.restorers else None, seed=args.seed,
                                 assignments=parse_assignments(args.set), save_images=args.save_images,
                                 progress=not args.quiet, failures=failures, skip_bad_images=args.skip_bad_images)
    print(f"{len(run.rows)} cells in {Path(args.out) / 'results.csv'}; report {report}")
    return 0


def cmd_experiment(args) -> int:
    import experiments
    from jaxir.data import bundled_photos, div2k, paired_folders, read_folder
    from jaxir.degradations.captured import GOPRO, Captured
    from jaxir.degradations.levels import parse_levels
    from jaxir.study.experiment import CapturedPair, Options
    from jaxir.study.inputs import screen_images

    div2k_split = args.div2k or ("validation" if args.full and not (args.images or args.photos) else None)
    if args.images:
        records, failures = read_folder(args.images, alpha=args.alpha, max_pixels=args.max_pixels)
    elif div2k_split:
        records, failures = [hr for hr, _ in div2k(div2k_split, data_dir=args.data_dir, manual_dir=args.manual_dir)], []
    else:
        default = None if args.full else list(experiments.DEFAULT_PHOTOS)
        chosen = None if args.photos == "all" else args.photos.split(",") if args.photos else default
        records, failures = bundled_photos(chosen), []
    pairs = []
    if args.gopro:
        level = Captured(dataset=GOPRO, kind="deblur")
        pairs = [CapturedPair(level, gt, lq) for gt, lq in paired_folders(args.gopro, alpha=args.alpha,
                                                                         max_pixels=args.max_pixels)]
    crop = (0 if args.full else experiments.DEFAULT_CROP) if args.crop is None else args.crop
    if crop:
        records = [experiments.centre_crop(r, crop) for r in records]
        pairs = [CapturedPair(p.level, experiments.centre_crop(p.gt, crop), experiments.centre_crop(p.lq, crop))
                 for p in pairs]
    levels = parse_levels(args.levels) if args.levels else None
    records, _ = screen_images(records, failures, levels or parse_levels(DEFAULT_LEVELS), 4)
    if pairs:
        screen_images([p.gt for p in pairs], [], [pairs[0].level], 4)
    options = Options(tuple(records), tuple(args.models.split(",")) if args.models else None, levels, args.seed,
                      args.full, args.batch, tuple(pairs))
    runs, failed = experiments.run(args.names, options, Path(args.out), progress=not args.quiet)
    for run in runs:
        print(f"{run.experiment.name}: {run.summary.verdict} — {len(run.rows)} cells ({run.computed} computed, "
              f"{run.compilations} compilations, {run.wall_seconds:.0f} s); {run.report}")
    for name, error in failed.items():
        print(f"jaxir: error: experiment {name}: {error}", file=sys.stderr)
    print(f"overview: {Path(args.out) / 'report.md'}")
    return 2 if failed else 0


def cmd_restorers(args) -> int:
    from jaxir.restorers import registered

    for name, r in registered().items():
        reason = r.unavailable_reason()
        status = "ready" if reason is None else f"unavailable: {reason}"
        print(f"{name:12s} {r.family:10s} tasks={','.join(r.tasks):28s} {status}\n{'':12s} {r.description}")
        if args.settings:
            values = ", ".join(f"{k}={v!r}" for k, v in r.settings_json().items()) or "none"
            print(f"{'':12s} settings: {values}")
    return 0


# jaxir restore's named settings (flag, setting, type, help): each sets the restorer setting of that name (or the
# name the restorer aliases it to); `--set NAME=VALUE` reaches any other. A restorer without the setting refuses it.
NAMED_SETTINGS = (
    (("--checkpoint",), "checkpoint", str, "checkpoint directory or name (default: the restorer's own)"),
    (("--stage1",), "stage1", str, "stage-1 restorer for every task (DiffBIR family)"),
    (("--sampler",), "sampler", str, "spaced, ddim, edm_euler, edm_dpm++_2m, edm_dpm++_3m_sde"),
    (("--steps",), "steps", int, "sampling steps"),
    (("--cfg-scale",), "cfg_scale", float, "classifier-free guidance scale (1: no guidance; SUPIR: the scale at "
     "sigma 0, --s_cfg)"),
    (("--strength",), "strength", float, "control strength (scale of every ControlNet output)"),
    (("--pos-prompt",), "pos_prompt", str, "prompt (SUPIR: the additive prompt, --a_prompt)"),
    (("--neg-prompt",), "neg_prompt", str, "negative prompt"),
    (("--t-start",), "t_start", int, "start from the condition latent noised to this timestep (starting noise level)"),
    (("--s-churn",), "s_churn", float, "EDM Euler churn"),
    (("--s-tmin",), "s_tmin", float, "EDM Euler churn from this sigma"),
    (("--s-tmax",), "s_tmax", float, "EDM Euler churn up to this sigma"),
    (("--s-noise",), "s_noise", float, "EDM noise multiplier"),
    (("--eta",), "eta", float, "DDIM / DPM++ SDE eta"),
    (("--guidance-space",), "guidance_space", str, "restoration guidance (spaced sampler): latent or rgb"),
    (("--guidance-loss",), "guidance_loss", str, "restoration guidance loss: mse or w_mse"),
    (("--guidance-scale",), "guidance_scale", float, "restoration guidance scale"),
    (("--guidance-t-start",), "guidance_t_start", float, "guidance active while t + 1 < this"),
    (("--guidance-t-stop",), "guidance_t_stop", float, "guidance active while t + 1 > this"),
    (("--guidance-repeat",), "guidance_repeat", int, "guidance gradient steps per sampling step"),
    (("--min-short-edge",), "min_short_edge", int, "resize the condition's short side up to this (0: never; SUPIR: "
     "--min_size)"),
    (("--color-fix",), "color_fix", str, "wavelet, adain or none"),
    (("--latent-tile",), "latent_tile", int, "tiled sampling: tile size in pixels (multiple of 64; SUPIR: of 8, "
     "1024 = SUPIR's 128 latent pixels)"),
    (("--latent-tile-stride",), "latent_tile_stride", int, "tiled sampling: stride in pixels (SUPIR default: half "
     "the tile)"),
    (("--vae-tile",), "vae_tile", int, "tiled VAE: tile size in pixels (multiple of 64)"),
    (("--rescale-cfg",), "rescale_cfg", None, "DiffBIR's rescaled CFG schedule"),
    (("--start-from-condition",), "start_from_condition", None,
     "start from the noised condition latent instead of pure noise"),
    (("--restoration-scale",), "restoration_scale", float,
     "SUPIR: restoration-guided sampling towards the stage-1 latent (--s_stage1; <= 0: off)"),
    (("--control-scale", "--s-stage2"), "control_scale", float, "SUPIR: control scale (--s_stage2)"),
    (("--linear-cfg",), "use_linear_cfg", None, "SUPIR: CFG linear in sigma from --cfg-scale-start (--linear_CFG)"),
    (("--cfg-scale-start",), "cfg_scale_start", float, "SUPIR linear CFG: the scale at sigma_max (--spt_linear_CFG)"),
    (("--linear-control-scale",), "use_linear_control_scale", None,
     "SUPIR: control scale linear in sigma from --control-scale-start (--linear_s_stage2)"),
    (("--control-scale-start",), "control_scale_start", float,
     "SUPIR linear control scale: the scale at sigma_max (--spt_linear_s_stage2)"),
    (("--prompt",), "prompt", str, "SUPIR: caption put before --pos-prompt (SUPIR gets it from LLaVA)"),
)


def _configured_restorer(args):
    """``args.restorer`` with the named settings and ``--set`` applied, checked usable."""
    from jaxir.restorers import get
    from jaxir.settings import parse_assignments

    overrides = {name: getattr(args, name) for _, name, _, _ in NAMED_SETTINGS if getattr(args, name) is not None}
    overrides.update(parse_assignments(args.set))
    restorer = get(args.restorer).configure(**overrides)
    reason = restorer.unavailable_reason()
    if reason:
        raise JaxirInputError(f"restorer {restorer.name} unavailable: {reason}")
    return restorer


def cmd_restore(args) -> int:
    import jax.numpy as jnp
    from tqdm import tqdm

    from jaxir.data import load_image, read_folder, save_image

    import jax

    from jaxir.degradations.levels import parse_level

    degradation = parse_level(args.level)
    source = Path(args.input)
    if source.is_dir():
        records, failures = read_folder(source, alpha=args.alpha, max_pixels=args.max_pixels)
        if failures and not args.skip_bad_images:
            raise JaxirInputError(f"{len(failures)} images cannot be read, nothing was restored: "
                                  f"{'; '.join(str(err) for _, err in failures)}. Fix or remove them, or pass "
                                  "--skip-bad-images")
        for _, err in failures:
            print(f"skipped {err}", file=sys.stderr)
        images = [(r.name, r.image) for r in records]
    else:
        images = [(source.stem, load_image(source, alpha=args.alpha, max_pixels=args.max_pixels))]
    restorer = _configured_restorer(args)
    key = jax.random.key(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = 0
    for index, (name, image) in enumerate(tqdm(images, desc=args.restorer, disable=args.quiet)):
        target = out / f"{name}.png"
        if target.exists() and not args.overwrite:
            continue   # resumable: finished images are kept
        restored = restorer.restore(jnp.asarray(image)[None], degradation, key, [index])[0]
        save_image(target, restored)   # atomic: an interrupted write never looks finished
        done += 1
    print(f"restored {done} of {len(images)} images into {out}")
    return 0


def _train_command() -> str | None:
    return "jaxir " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("jaxir") else None


def _train_restorer(args, config) -> str:
    from jaxir.data.dead_leaves import DeadLeavesConfig
    from jaxir.models.restorer_cnn import ResidualCNNConfig
    from jaxir.train.restorer import TASKS, RestorerData, train_restorer

    model = ResidualCNNConfig(scale=int(TASKS[args.task].scale), features=args.features, blocks=args.blocks,
                              flat_preserving=args.flat_preserving)
    data = RestorerData(batch=args.batch, crop=args.crop, loss=args.loss or "l2")
    given = {"max_chroma": args.max_chroma, "grain_max": args.grain, "soft_edge_max": args.soft_edges,
             "dark_fraction": args.dark_fraction}
    dead_leaves = DeadLeavesConfig(**{name: value for name, value in given.items() if value is not None})
    images = None
    if args.data != "dead-leaves":
        from jaxir.data.crops import training_images

        images = training_images(args.data, min_size=args.crop, data_dir=args.data_dir, alpha=args.alpha,
                                 max_pixels=args.max_pixels)
    path = train_restorer(args.task, args.out, model_config=model, train_config=config, data=data, seed=args.seed,
                          dead_leaves=dead_leaves, images=images, progress=not args.quiet, command=_train_command())
    return f"trained restorer written to {path}"


def _train_vae(args, config) -> str:
    from jaxir.train.vae import VAEData, small_vae_config, train_vae

    data = VAEData(batch=args.batch, crop=args.crop, loss=args.loss or "l2", lpips_weight=args.lpips_weight,
                   disc_weight=args.disc_weight, disc_start=args.disc_start, disc_layers=args.disc_layers)
    path = train_vae(args.out, model_config=small_vae_config(args.z_channels), train_config=config, data=data,
                     seed=args.seed, progress=not args.quiet, command=_train_command())
    return f"trained autoencoder written to {path}"


def _diffusion_data(args):
    from jaxir.train.diffusion import DiffusionData

    return DiffusionData(pool=args.pool, batch=args.batch, crop=args.crop, space=args.space,
                         min_snr_gamma=args.min_snr, noise_aug_timestep=args.noise_aug)


def _train_ldm(args, config) -> str:
    from jaxir.train.diffusion import train_ldm

    path = train_ldm(args.out, args.vae, train_config=config, data=_diffusion_data(args), seed=args.seed,
                     progress=not args.quiet, command=_train_command())
    return f"trained latent diffusion model written to {path}"


def _train_cldm(args, config) -> str:
    from jaxir.restorers.trained import training_stage1
    from jaxir.train.diffusion import train_connector
    from jaxir.train.restorer import TASKS

    if args.ldm is None:
        raise JaxirInputError("--task cldm needs --ldm DIR (the model of --task ldm)")
    path = train_connector(args.out, args.ldm, training_stage1(TASKS), train_config=config,
                           data=_diffusion_data(args), seed=args.seed, progress=not args.quiet,
                           command=_train_command())
    return f"trained CLDM written to {path}"


def cmd_train(args) -> int:
    from jaxir.train.loop import TrainConfig
    from jaxir.train.restorer import TASKS

    trainers = {**{task: _train_restorer for task in TASKS}, "vae": _train_vae, "ldm": _train_ldm,
                "cldm": _train_cldm}
    if args.task not in trainers:
        raise JaxirInputError(f"unknown task {args.task!r}; choose from {', '.join(trainers)}")
    if args.data != "dead-leaves" and args.task not in TASKS:
        raise JaxirInputError(f"--data applies to the restorer tasks ({', '.join(TASKS)}); {args.task} trains on "
                              "dead leaves only")
    config = TrainConfig(steps=args.steps, learning_rate=args.lr, eval_every=args.eval_every,
                         checkpoint_every=args.eval_every, log_every=min(50, args.eval_every), ema_decay=args.ema)
    print(trainers[args.task](args, config))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxir", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    study = sub.add_parser("study", help="run the degradation × restorer × image sweep")
    study.add_argument("--out", default="runs/study", help="output folder (resumes if it holds a study)")
    study.add_argument("--images", help="folder of clean images (default: the photos bundled with scikit-image)")
    study.add_argument("--photos", help="comma-separated subset of the bundled photos")
    study.add_argument("--alpha", default="error", choices=("error", "drop", "white", "black"),
                       help="what to do with transparent pixels in --images")
    study.add_argument("--levels", default=DEFAULT_LEVELS, help=f"comma-separated levels (default {DEFAULT_LEVELS}); "
                       "each is srN, blurS, noiseB, jpegQ or a '+' combination")
    study.add_argument("--restorers", help="comma-separated restorers (default: all registered)")
    study.add_argument("--seed", type=int, default=0, help="cell keys: fold_in(fold_in(key(seed), crc32(level)), "
                       "crc32(image))")
    study.add_argument("--set", action="append", metavar="[RESTORER:]NAME=VALUE",
                       help="a restorer setting (e.g. t_start=400, diffbir_v2:steps=20); NAME alone applies to every "
                            "restorer that has it; repeatable (see `jaxir restorers --settings`)")
    study.add_argument("--save-images", action="store_true", help="also write every restored image as PNG")
    study.add_argument("--skip-bad-images", action="store_true",
                       help="leave out images that cannot be read or are too small for a metric at some level, and "
                            "list them in the report (default: stop before computing anything, listing them all)")
    study.add_argument("--quiet", action="store_true", help="no progress bar")
    study.set_defaults(func=cmd_study)
    restore = sub.add_parser("restore", help="restore an image or a folder of degraded images")
    restore.add_argument("input", help="a degraded image or a folder of them")
    restore.add_argument("--out", required=True, help="output folder (PNG per image; existing ones are kept)")
    restore.add_argument("--restorer", default="jaxir_cnn",
                         help="registered restorer (see `jaxir restorers`; default: jaxir's shipped jaxir_cnn)")
    restore.add_argument("--level", default="sr4", help="the degradation the inputs went through (as in study "
                         "levels: srN, blurS, noiseB, jpegQ joined by '+'); sets the output scale and the task")
    restore.add_argument("--seed", type=int, default=0, help="image i is sample i of key(seed): it draws from "
                         "fold_in(key(seed), i)")
    restore.add_argument("--alpha", default="error", choices=("error", "drop", "white", "black"))
    for names, name, kind, text in NAMED_SETTINGS:
        if kind is None:
            restore.add_argument(*names, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            restore.add_argument(*names, dest=name, type=kind, help=text)
    restore.add_argument("--set", action="append", metavar="NAME=VALUE",
                         help="any setting of the restorer (see `jaxir restorers --settings`); repeatable")
    restore.add_argument("--overwrite", action="store_true", help="redo images already in --out")
    restore.add_argument("--skip-bad-images", action="store_true",
                         help="restore the readable images of a folder and list the others (default: stop before "
                              "restoring anything, listing them all)")
    restore.add_argument("--quiet", action="store_true", help="no progress bar")
    restore.set_defaults(func=cmd_restore)
    trainer = sub.add_parser("train", help="train jaxir's small models (resumable in --out)")
    trainer.add_argument("--task", required=True,
                         help="sr2, sr4 or blur2 (the residual CNN restorer), vae (the latent autoencoder), ldm "
                              "(the UNet of a small latent diffusion model, from scratch on --vae), cldm (its "
                              "IRControlNet on --ldm, conditioned on the shipped jaxir_cnn restorations)")
    trainer.add_argument("--out", required=True, help="run folder: checkpoints, log.jsonl, and model/ at the end")
    trainer.add_argument("--steps", type=int, default=3000)
    trainer.add_argument("--batch", type=int, default=16)
    trainer.add_argument("--crop", type=int, default=64)
    trainer.add_argument("--features", type=int, default=32)
    trainer.add_argument("--blocks", type=int, default=4)
    trainer.add_argument("--data", default="dead-leaves",
                         help="sr*/blur2: training images: dead-leaves (default, procedural), a folder of clean images "
                              "(or folder:PATH), or tfds:NAME[:SPLIT] (e.g. tfds:div2k/bicubic_x2:train, its 'hr' "
                              "images); random crops with flips; validation stays on dead leaves")
    trainer.add_argument("--data-dir", help="tensorflow-datasets data_dir for --data tfds:…")
    trainer.add_argument("--alpha", default="error", choices=("error", "drop", "white", "black"),
                         help="what to do with transparent pixels in a --data folder")
    trainer.add_argument("--flat-preserving", action=argparse.BooleanOptionalAction, default=True,
                         help="sr*/blur2: zero-DC, bias-free last convolution, so flat regions come back exactly as "
                              "the bicubic/identity base (default; --no-flat-preserving: a plain convolution)")
    trainer.add_argument("--lr", type=float, default=1e-3)
    trainer.add_argument("--loss", choices=("l1", "l2"),
                         help="pixel loss (default l2; LDM trains its autoencoders with l1)")
    trainer.add_argument("--z-channels", type=int, default=8, help="vae: latent channels")
    trainer.add_argument("--lpips-weight", type=float, default=0.0,
                         help="vae: weight of the LPIPS term (needs converted LPIPS alex weights)")
    trainer.add_argument("--disc-weight", type=float, default=0.0,
                         help="vae: weight of LDM's PatchGAN term, adaptively balanced (SD's autoencoders: 0.5)")
    trainer.add_argument("--disc-start", type=int, default=0, help="vae: the step the PatchGAN term starts at")
    trainer.add_argument("--disc-layers", type=int, default=3,
                         help="vae: the PatchGAN's stride-2 layers (LDM: 3, patches of 70 px; 2: 34 px)")
    trainer.add_argument("--vae", help="ldm: the autoencoder checkpoint (the model of --task vae)")
    trainer.add_argument("--ldm", help="cldm: the latent diffusion checkpoint (the model of --task ldm; a trained CLDM: "
                              "training continues from its ControlNet)")
    trainer.add_argument("--pool", type=int, default=2048, help="ldm/cldm: dead-leaves crops made and encoded once")
    trainer.add_argument("--space", default="latent", choices=("latent", "pixel"),
                         help="ldm: diffuse in the autoencoder's latent space or in pixels (the ablation)")
    trainer.add_argument("--max-chroma", type=float,
                         help="sr*/blur2: largest share of a random colour's chroma a dead-leaves shape keeps "
                              "(default 0.7)")
    trainer.add_argument("--grain", type=float,
                         help="sr*/blur2: largest grain std of a dead-leaves shape (half the shapes; default 0: none)")
    trainer.add_argument("--dark-fraction", type=float,
                         help="sr*/blur2: share of flat, very dark dead-leaves shapes (default 0.08)")
    trainer.add_argument("--soft-edges", type=float,
                         help="sr*/blur2: widest soft edge of a dead-leaves shape, a fraction of the side (half the "
                              "shapes; default 0: all hard)")
    trainer.add_argument("--min-snr", type=float, default=0.0, metavar="GAMMA",
                         help="ldm/cldm: min-SNR-γ weighting of the ε-loss (Hang et al. 2023: 5); validation stays "
                              "the plain ε-loss; 0 (default): none")
    trainer.add_argument("--noise-aug", type=int, default=0, metavar="T",
                         help="cldm: noise each training condition to its own t' < T by the forward process "
                              "(DiffBIR v2.1: 200); validation and restoration keep the clean condition; 0 (default): "
                              "none")
    trainer.add_argument("--eval-every", type=int, default=500)
    trainer.add_argument("--ema", type=float, default=0.0,
                         help="decay of an exponential moving average of the weights (LDM: 0.9999), validated and "
                              "written instead of the raw weights; 0 (default): none")
    trainer.add_argument("--seed", type=int, default=0)
    trainer.add_argument("--quiet", action="store_true")
    trainer.set_defaults(func=cmd_train)
    experiment = sub.add_parser("experiment", help="run the study's analyses as experiments (resumable)")
    experiment.add_argument("names", nargs="+", help="experiments (fig6, fig7, fig8, guidance, cfg, noise) or all")
    experiment.add_argument("--out", default="runs/experiments",
                            help="root folder: the cell store cells.sqlite, a folder per experiment, report.md")
    experiment.add_argument("--models", help="comma-separated restorers (default: each experiment's own)")
    experiment.add_argument("--images", help="folder of clean images (default: bundled photos)")
    experiment.add_argument("--photos", help="comma-separated bundled photos, or all (default: astronaut, camera, "
                            "chelsea, coffee; all with --full)")
    experiment.add_argument("--crop", type=int, help="centre crop side in pixels, 0 for whole images (default "
                            "192; 0 with --full)")
    experiment.add_argument("--alpha", default="error", choices=("error", "drop", "white", "black"))
    experiment.add_argument("--levels", help="comma-separated levels (default: each experiment's own)")
    experiment.add_argument("--seed", type=int, default=0, help="cell keys as in jaxir study")
    experiment.add_argument("--div2k", metavar="SPLIT",
                            help="clean images: DIV2K's HR images through tensorflow-datasets, e.g. validation or "
                                 "validation[:10] (the default with --full and no --images/--photos)")
    experiment.add_argument("--data-dir", help="tensorflow-datasets data_dir for --div2k (tfds' default if unset)")
    experiment.add_argument("--manual-dir", help="folder of already downloaded DIV2K zips (official names)")
    experiment.add_argument("--gopro", metavar="DIR",
                            help="GoPro test set (GOPRO_Large/test: <scene>/sharp, <scene>/blur): its real motion "
                                 "blur as one more level, 'GoPro (captured deblur)', in fig1, fig2 and visual")
    experiment.add_argument("--full", action="store_true",
                            help="the study's setting: its models (converted checkpoints), levels and values, on "
                                 "DIV2K's validation images (--div2k) and, with --gopro, the GoPro test set")
    experiment.add_argument("--batch", type=int, default=1,
                            help="restoration cells that differ only in their key (seed, image of one size) or in "
                                 "traced settings (start timestep, scales, η) run N at a time through one program, "
                                 "sharded over all devices (default 1)")
    experiment.add_argument("--quiet", action="store_true", help="no progress bar")
    experiment.set_defaults(func=cmd_experiment)
    for command in (study, restore, trainer, experiment):
        command.add_argument("--max-pixels", type=int, metavar="N",
                             help=f"refuse image files of more than N pixels (default ${MAX_PIXELS_ENV} or "
                                  f"{DEFAULT_MAX_PIXELS}; a header can claim any size)")
    listing = sub.add_parser("restorers", help="list restorers and whether they can run")
    listing.add_argument("--settings", action="store_true", help="also print every restorer's settings (defaults)")
    listing.set_defaults(func=cmd_restorers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_runtime()
    try:
        return args.func(args)
    except JaxirInputError as err:
        print(f"jaxir: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:   # the file system refused (a full disk, an --out that is a file, no permission)
        print(f"jaxir: error: {f'{err.filename}: ' if err.filename else ''}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxir: interrupted; finished cells are saved, run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
