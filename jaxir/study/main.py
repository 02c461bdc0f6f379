"""The main job as one call: pick the restorers, apply their settings, run the sweep, plot and report.

:func:`run_main_study` is what ``jaxir study`` runs: unavailable restorers are listed with the reason (which file to
convert, and how) and left out, never a crash and never silently; every restorer's effective settings are
recorded in ``study.json`` and the report. Every image is checked before the first cell
(:mod:`jaxir.study.inputs`): the bad ones stop the study, all listed, or are skipped and listed in the report.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from jaxir.data.images import ImageRecord
from jaxir.degradations.pipeline import Degradation
from jaxir.errors import ImageLoadError, JaxirInputError
from jaxir.restorers import registered
from jaxir.restorers.base import configure_all
from jaxir.study.inputs import screen_images
from jaxir.study.plots import plot_metrics_vs_level, plot_perception_distortion
from jaxir.study.report import write_report
from jaxir.study.runner import StudyConfig, StudyRun, restorer_settings, run_study


def select_restorers(names: Sequence[str] | None, assignments: dict[str, object]):
    """(the usable restorers among ``names`` — default all registered — with ``assignments`` applied, and
    {name: reason} of the unavailable ones)."""
    all_restorers = registered()
    wanted = list(names) if names else list(all_restorers)
    unknown = [n for n in wanted if n not in all_restorers]
    if unknown:
        raise JaxirInputError(f"unknown restorers {unknown}; registered: {', '.join(all_restorers)}")
    chosen = configure_all([all_restorers[n] for n in wanted], assignments)
    unavailable = {r.name: r.unavailable_reason() for r in chosen if r.unavailable_reason()}
    return [r for r in chosen if r.name not in unavailable], unavailable


def run_main_study(out: Path, images: Sequence[ImageRecord], levels: Sequence[Degradation],
                   restorer_names: Sequence[str] | None = None, seed: int = 0,
                   assignments: dict[str, object] | None = None, save_images: bool = False,
                   progress: bool = True, failures: Sequence[tuple[Path, ImageLoadError]] = (),
                   skip_bad_images: bool = False) -> tuple[StudyRun, Path]:
    """Run the study into ``out``; returns the run and the report's path. ``failures``: the files of the image set
    that did not load, as :func:`jaxir.data.read_folder` returns them; with ``skip_bad_images`` they and the
    images too small for ``levels`` are left out (and reported), otherwise they stop the study before it starts."""
    restorers, unavailable = select_restorers(restorer_names, assignments or {})
    for name, reason in unavailable.items():
        print(f"restorer {name} unavailable: {reason}", file=sys.stderr)
    crop_multiple = StudyConfig(images=(), levels=tuple(levels)).crop_multiple
    images, skipped = screen_images(images, failures, levels, crop_multiple, skip=skip_bad_images)
    for bad in skipped:
        print(f"skipped {bad}", file=sys.stderr)
    config = StudyConfig(images=tuple(r.name for r in images), levels=tuple(levels),
                         restorers=tuple(r.name for r in restorers), seed=seed, settings=restorer_settings(restorers))
    run = run_study(config, images, restorers, out, save_images=save_images, progress=progress)
    labels = [d.label for d in levels]
    plots = [plot_metrics_vs_level(out, run.rows, labels), plot_perception_distortion(out, run.rows, labels)]
    report = write_report(out, run, config.to_json(), labels, unavailable, plots, skipped)
    return run, report
