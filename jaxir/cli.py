"""The ``jaxir`` command.

  jaxir study      sweep degradation levels × restorers × images; CSV, markdown report and plots (resumable)
  jaxir restorers  list the registered restorers and whether they can run
"""

from __future__ import annotations

import argparse
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
