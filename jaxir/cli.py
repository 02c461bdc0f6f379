"""The ``jaxir`` command.

  jaxir study      sweep degradation levels × restorers × images; CSV, markdown report and plots (resumable)
  jaxir restorers  list the registered restorers and whether they can run
  jaxir restore    restore an image or a folder of degraded images with any restorer (every CLDM sampler knob)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jaxir.errors import JaxirInputError
from jaxir.runtime import configure_runtime

DEFAULT_LEVELS = "sr2,sr4,blur1,blur2,blur4,blur8,blur20"


def parse_level(spec: str):
    """``sr4``, ``blur2``, ``noise0.05``, ``jpeg30``, ``torch`` (PyTorch resize) joined by ``+``, e.g.
    ``blur2+sr4+noise0.02`` → a :class:`Degradation`."""
    from jaxir.degradations.pipeline import Degradation

    fields: dict = {}
    for part in spec.strip().lower().split("+"):
        for prefix, field, cast in (("sr", "scale", float), ("blur", "blur_sigma", float),
                                    ("noise", "noise", float), ("jpeg", "jpeg_quality", int)):
            if part.startswith(prefix):
                try:
                    fields[field] = cast(part[len(prefix):])
                except ValueError:
                    raise JaxirInputError(f"bad degradation level {spec!r}: cannot read {part!r}") from None
                break
        else:
            if part == "torch":
                fields["resize"] = "torch"
            else:
                raise JaxirInputError(f"bad degradation level {spec!r}: unknown part {part!r} "
                                      "(use srN, blurS, noiseB, jpegQ, torch joined by '+')")
    if "scale" in fields and fields["scale"] == int(fields["scale"]):
        fields["scale"] = int(fields["scale"])
    return Degradation(**fields)


def _images(args):
    from jaxir.data import bundled_photos, image_folder

    if args.images:
        return list(image_folder(args.images, alpha=args.alpha))
    return bundled_photos(args.photos.split(",") if args.photos else None)


def cmd_study(args) -> int:
    from jaxir.restorers import registered
    from jaxir.study.plots import plot_metrics_vs_level, plot_perception_distortion
    from jaxir.study.report import write_report
    from jaxir.study.runner import StudyConfig, run_study

    levels = tuple(parse_level(s) for s in args.levels.split(","))
    images = _images(args)
    all_restorers = registered()
    wanted = args.restorers.split(",") if args.restorers else list(all_restorers)
    unknown = [n for n in wanted if n not in all_restorers]
    if unknown:
        raise JaxirInputError(f"unknown restorers {unknown}; registered: {', '.join(all_restorers)}")
    reasons = {n: all_restorers[n].unavailable_reason() for n in wanted}
    unavailable = {n: reason for n, reason in reasons.items() if reason}
    for name, reason in unavailable.items():
        print(f"restorer {name} unavailable: {reason}", file=sys.stderr)
    restorers = [all_restorers[n] for n in wanted if n not in unavailable]
    config = StudyConfig(images=tuple(r.name for r in images), levels=levels,
                         restorers=tuple(r.name for r in restorers), seed=args.seed)
    out = Path(args.out)
    rows = run_study(config, images, restorers, out, save_images=args.save_images, progress=not args.quiet)
    labels = [d.label for d in levels]
    plots = [plot_metrics_vs_level(out, rows, labels), plot_perception_distortion(out, rows, labels)]
    report = write_report(out, rows, config.to_json(), labels, unavailable, plots)
    print(f"{len(rows)} cells in {out / 'results.csv'}; report {report}")
    return 0


def cmd_restorers(args) -> int:
    from jaxir.restorers import registered

    for name, r in registered().items():
        reason = r.unavailable_reason()
        status = "ready" if reason is None else f"unavailable: {reason}"
        print(f"{name:12s} {r.family:10s} tasks={','.join(r.tasks):28s} {status}\n{'':12s} {r.description}")
    return 0


# jaxir restore options that set DiffBIRSettings fields (CLDM restorers only): (flag, field, type, help)
CLDM_OPTIONS = (
    ("--sampler", "sampler", str, "spaced, ddim, edm_euler, edm_dpm++_2m, edm_dpm++_3m_sde"),
    ("--steps", "steps", int, "sampling steps"),
    ("--cfg-scale", "cfg_scale", float, "classifier-free guidance scale (1: no guidance)"),
    ("--strength", "strength", float, "control strength (scale of every ControlNet output)"),
    ("--pos-prompt", "pos_prompt", str, "prompt"),
    ("--neg-prompt", "neg_prompt", str, "negative prompt"),
    ("--t-start", "t_start", int, "start from the condition latent noised to this timestep (starting noise level)"),
    ("--s-churn", "s_churn", float, "EDM Euler churn"),
    ("--s-tmin", "s_tmin", float, "EDM Euler churn from this sigma"),
    ("--s-tmax", "s_tmax", float, "EDM Euler churn up to this sigma"),
    ("--s-noise", "s_noise", float, "EDM noise multiplier"),
    ("--eta", "eta", float, "DDIM / DPM++ SDE eta"),
    ("--guidance-space", "guidance_space", str, "restoration guidance (spaced sampler): latent or rgb"),
    ("--guidance-loss", "guidance_loss", str, "restoration guidance loss: mse or w_mse"),
    ("--guidance-scale", "guidance_scale", float, "restoration guidance scale"),
    ("--guidance-t-start", "guidance_t_start", float, "guidance active while t + 1 < this"),
    ("--guidance-t-stop", "guidance_t_stop", float, "guidance active while t + 1 > this"),
    ("--guidance-repeat", "guidance_repeat", int, "guidance gradient steps per sampling step"),
    ("--min-short-edge", "min_short_edge", int, "resize the condition's short side up to this (0: never)"),
    ("--color-fix", "color_fix", str, "wavelet, adain or none"),
    ("--latent-tile", "latent_tile", int, "tiled sampling: tile size in pixels (multiple of 64)"),
    ("--latent-tile-stride", "latent_tile_stride", int, "tiled sampling: stride in pixels"),
    ("--vae-tile", "vae_tile", int, "tiled VAE: tile size in pixels (multiple of 64)"),
)


def _restorer_function(args):
    """The restore function of ``args.restorer``: a DiffBIR pipeline with the CLDM options, or a registered
    restorer (which takes no CLDM options)."""
    import jax

    from jaxir.restorers import get

    overrides = {field: getattr(args, field) for _, field, _, _ in CLDM_OPTIONS if getattr(args, field) is not None}
    overrides.update({k: True for k in ("rescale_cfg", "start_from_condition") if getattr(args, k)})
    if args.stage1:
        get(args.stage1)   # an unknown name fails here, with the registered ones listed
        overrides["stage1"] = tuple((task, args.stage1) for task in ("sr", "deblur", "denoise", "dejpeg", "identity"))
    restorer = get(args.restorer)
    if restorer.family != "cldm":
        if overrides:
            raise JaxirInputError(f"{', '.join(sorted(overrides))}: sampler options apply to CLDM restorers only")
        reason = restorer.unavailable_reason()
        if reason:
            raise JaxirInputError(f"restorer {restorer.name} unavailable: {reason}")
        return lambda lq, degradation, index: restorer.restore(lq, degradation)
    from jaxir.restorers.cldm import diffbir_pipeline

    version = args.restorer.removeprefix("diffbir_")
    if args.checkpoint is None and restorer.unavailable_reason():
        raise JaxirInputError(f"restorer {restorer.name} unavailable: {restorer.unavailable_reason()}")
    pipeline = diffbir_pipeline(version, args.checkpoint, seed=args.seed, **overrides)
    key = jax.random.key(args.seed)
    return lambda lq, degradation, index: pipeline(lq, degradation, key, sample_ids=[index])


def cmd_restore(args) -> int:
    import jax.numpy as jnp
    from tqdm import tqdm

    from jaxir.data import image_folder, load_image, save_image

    degradation = parse_level(args.level)
    source = Path(args.input)
    if source.is_dir():
        images = [(r.name, r.image) for r in image_folder(source, alpha=args.alpha)]
    else:
        images = [(source.stem, load_image(source, alpha=args.alpha))]
    restore = _restorer_function(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = 0
    for index, (name, image) in enumerate(tqdm(images, desc=args.restorer, disable=args.quiet)):
        target = out / f"{name}.png"
        if target.exists() and not args.overwrite:
            continue   # resumable: finished images are kept
        restored = restore(jnp.asarray(image)[None], degradation, index)[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.stem}.partial.png")
        save_image(partial, restored)
        os.replace(partial, target)   # an interrupted write never looks finished
        done += 1
    print(f"restored {done} of {len(images)} images into {out}")
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
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--save-images", action="store_true", help="also write every restored image as PNG")
    study.add_argument("--quiet", action="store_true", help="no progress bar")
    study.set_defaults(func=cmd_study)
    restore = sub.add_parser("restore", help="restore an image or a folder of degraded images")
    restore.add_argument("input", help="a degraded image or a folder of them")
    restore.add_argument("--out", required=True, help="output folder (PNG per image; existing ones are kept)")
    restore.add_argument("--restorer", required=True, help="registered restorer (see `jaxir restorers`)")
    restore.add_argument("--level", default="sr4", help="the degradation the inputs went through (as in study "
                         "levels: srN, blurS, noiseB, jpegQ joined by '+'); sets the output scale and the task")
    restore.add_argument("--checkpoint", help="CLDM checkpoint directory (default: the restorer's named one)")
    restore.add_argument("--stage1", help="CLDM stage-1 restorer for every task (default: the version's own)")
    restore.add_argument("--seed", type=int, default=0, help="CLDM noise: image i uses fold_in(key(seed), i)")
    restore.add_argument("--alpha", default="error", choices=("error", "drop", "white", "black"))
    restore.add_argument("--rescale-cfg", action="store_true", help="DiffBIR's rescaled CFG schedule")
    restore.add_argument("--start-from-condition", action="store_true",
                         help="start from the noised condition latent instead of pure noise")
    for flag, field, kind, text in CLDM_OPTIONS:
        restore.add_argument(flag, dest=field, type=kind, help=text + " (CLDM restorers)")
    restore.add_argument("--overwrite", action="store_true", help="redo images already in --out")
    restore.add_argument("--quiet", action="store_true", help="no progress bar")
    restore.set_defaults(func=cmd_restore)
    listing = sub.add_parser("restorers", help="list restorers and whether they can run")
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
    except KeyboardInterrupt:
        print("jaxir: interrupted; finished cells are saved, run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
