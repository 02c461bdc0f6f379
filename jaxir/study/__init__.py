"""The main job: a sweep of degradation levels × restorers × images with metrics, a report and plots."""

from jaxir.study.runner import StudyConfig, run_study

__all__ = ["StudyConfig", "run_study"]
